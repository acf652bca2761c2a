//! `GET /loki/api/v1/patterns`: the shapes of the newest lines of a
//! selector, per detected level, with how many lines matched each per
//! step — what Logs Drilldown's Patterns tab shows. Loki finds them with
//! Drain in its pattern ingester; here Drain runs over the newest lines
//! of the range when asked, so nothing is kept between queries.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::response::Response;
use serde::Serialize;

use super::{HOUR, default_step, required, selector};
use crate::api::cluster::{Fanout, or_peer_answer};
use crate::api::params::FormParams;
use crate::api::{ApiError, AppState};
use crate::drain::Drain;
use crate::log_database::level;
use crate::log_database::query::Direction;
use crate::logql::LogExpr;

/// Lines read at most per request: Drain's cost is linear in them, its
/// memory bounded by its cluster limit.
pub(crate) const MAX_LINES: usize = 50_000;

/// One pattern of the answer.
#[derive(Serialize)]
pub(crate) struct Pattern {
    pattern: String,
    level: String,
    /// `[unix seconds, lines]` per step that had any.
    samples: Vec<(i64, u64)>,
}

/// `GET|POST /loki/api/v1/patterns`
pub(crate) async fn patterns(
    State(state): State<AppState>,
    axum::Extension(access): axum::Extension<crate::api::auth::Access>,
    fanout: Fanout,
    FormParams(p): FormParams,
) -> Result<Response, ApiError> {
    let text = required(&p, "query", "{service_name=\"web\"}")?;
    let mut log = LogExpr {
        selector: selector(text)?,
        stages: Vec::new(),
        unwrap: None,
    };
    access.scope(&state).await?.narrow(&mut log.selector)?;
    let range = p.log_range(HOUR)?;
    state.check_range(range)?;
    let span = range.last() - range.start;
    let step = p
        .duration("step")?
        .filter(|s| *s > 0)
        .unwrap_or(default_step(span));
    // The cluster's newest lines, as one store would hold them.
    let (rows, missing) = or_peer_answer!(
        super::cluster_rows(
            &state,
            &fanout,
            &p,
            log,
            range,
            Direction::Backward,
            MAX_LINES,
        )
        .await?
    );
    let mut by_level: BTreeMap<String, Drain> = BTreeMap::new();
    // Oldest first, as Drain would have seen them.
    for (labels, ts, line, _) in rows.iter().rev() {
        let level = labels.get(level::LABEL).unwrap_or("unknown").to_owned();
        let bucket = ts.div_euclid(step) * step;
        by_level
            .entry(level)
            .or_default()
            .train(line, bucket / 1_000_000_000);
    }
    let mut out: Vec<(u64, Pattern)> = by_level
        .iter()
        .flat_map(|(level, drain)| {
            drain.clusters().into_iter().map(move |c| {
                (
                    c.count,
                    Pattern {
                        pattern: c.pattern(),
                        level: level.clone(),
                        samples: c.samples.clone(),
                    },
                )
            })
        })
        .collect();
    out.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.pattern.cmp(&b.1.pattern)));
    let out: Vec<Pattern> = out.into_iter().map(|(_, p)| p).collect();
    Ok(super::respond(out, &missing))
}
