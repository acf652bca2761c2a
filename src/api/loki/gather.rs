//! A query's answer from every node's part: log rows merged and cut to
//! the limit; metric leaves (`logql::metric::leaves`) computed where the
//! streams are and combined here, with a second round for the leaves
//! whose series turn out to span nodes.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::Response;

use crate::api::cluster::{Fanout, PeerRows, merge_rows};
use crate::api::params::Params;
use crate::api::{ApiError, AppState, Row, run_log_query};
use crate::cluster::Missing;
use crate::log_database::TimeRange;
use crate::log_database::query::Direction;
use crate::logql::metric::leaves::{self, Part};
use crate::logql::metric::{Steps, Value, evaluate};
use crate::logql::{LogExpr, MetricExpr};

/// The parameter that asks for some leaves' samples (their indices).
const SAMPLES: &str = "samples";

/// A log query's rows from every node, merged as one store would give
/// them; `Err`: the answer to a peer's request, to send as it is.
pub(crate) async fn cluster_rows(
    state: &AppState,
    fanout: &Fanout,
    p: &Params,
    log: LogExpr,
    range: TimeRange,
    direction: Direction,
    limit: usize,
) -> Result<Result<(Vec<Row>, Vec<Missing>), Box<Response>>, ApiError> {
    let inline = fanout.from_peer && state.matches_nothing([log.selector.as_slice()]);
    let db = state.db.clone();
    let local = state.run(inline, move |budget| {
        run_log_query(&db, &log, range, direction, limit, &budget).map(PeerRows::new)
    });
    let (parts, missing) = match fanout.gather(state, p, local).await?.parts() {
        Ok(gathered) => gathered,
        Err(response) => return Ok(Err(response)),
    };
    let parts = parts.into_iter().map(PeerRows::rows).collect();
    Ok(Ok((merge_rows(parts, direction, limit), missing)))
}

/// Evaluates `metric` for the cluster: alone, over this store; with
/// peers, every node computes the leaves (`leaves::part`) and this node
/// combines them and runs the rest. `Err`: the answer to a peer's
/// request, to send as it is.
pub(crate) async fn evaluate_steps(
    state: &AppState,
    fanout: &Fanout,
    p: &Params,
    metric: MetricExpr,
    steps: Steps,
) -> Result<Result<(Value, Vec<Missing>), Box<Response>>, ApiError> {
    if !fanout.from_peer && !fanout.asks_peers(state, p)? {
        let db = state.db.clone();
        let value = state
            .blocking(move |budget| Ok(evaluate(&metric, &db, &steps, &budget)?))
            .await?;
        return Ok(Ok((value, Vec::new())));
    }
    let metric = Arc::new(metric);
    let forced: Vec<usize> = match p.get(SAMPLES) {
        Some(list) => list
            .split(',')
            .filter_map(|i| i.trim().parse().ok())
            .collect(),
        None => Vec::new(),
    };
    let (mut per_leaf, mut missing) = match parts(state, fanout, p, &metric, steps, forced).await? {
        Ok(gathered) => gathered,
        Err(response) => return Ok(Err(response)),
    };
    // A series that more than one node answered, of a function that does
    // not fold: ask every node again for those leaves' samples.
    let leaves = leaves::leaves(&metric);
    let again: Vec<usize> = (0..leaves.len())
        .filter(|&i| leaves::spans_nodes(&leaves[i], &per_leaf[i]))
        .collect();
    if !again.is_empty() {
        let mut p = p.clone();
        let list = again.iter().map(usize::to_string).collect::<Vec<_>>();
        p.push(SAMPLES, list.join(","));
        let (mut sampled, also_missing) =
            match parts(state, fanout, &p, &metric, steps, again.clone()).await? {
                Ok(gathered) => gathered,
                Err(response) => return Ok(Err(response)),
            };
        for i in again {
            per_leaf[i] = std::mem::take(&mut sampled[i]);
        }
        missing.extend(also_missing);
        missing.sort_by_key(|m| m.peer);
        missing.dedup_by_key(|m| m.peer);
    }
    let value = state
        .blocking(move |budget| Ok(leaves::evaluate_parts(&metric, per_leaf, &steps, &budget)?))
        .await?;
    Ok(Ok((value, missing)))
}

/// Every node's parts of `metric`'s leaves, one list per leaf (the
/// leaves in `samples` as samples).
async fn parts(
    state: &AppState,
    fanout: &Fanout,
    p: &Params,
    metric: &Arc<MetricExpr>,
    steps: Steps,
    samples: Vec<usize>,
) -> Result<Result<(Vec<Vec<Part>>, Vec<Missing>), Box<Response>>, ApiError> {
    let inline = fanout.from_peer
        && state.matches_nothing(leaves::leaves(metric).iter().map(|l| l.selector()));
    let (mine, db) = (metric.clone(), state.db.clone());
    let local = state.run(inline, move |budget| {
        leaves::leaves(&mine)
            .iter()
            .enumerate()
            .map(|(i, leaf)| leaves::part(leaf, &db, &steps, &budget, samples.contains(&i)))
            .collect::<Result<Vec<Part>, _>>()
            .map_err(ApiError::from)
    });
    let (nodes, missing) = match fanout.gather(state, p, local).await?.parts() {
        Ok(gathered) => gathered,
        Err(response) => return Ok(Err(response)),
    };
    let count = leaves::leaves(metric).len();
    let mut per_leaf: Vec<Vec<Part>> = (0..count).map(|_| Vec::new()).collect();
    for node in nodes {
        if node.len() != count {
            return Err(ApiError {
                status: StatusCode::BAD_GATEWAY,
                message: format!(
                    "a node answered {} parts for a query with {count} range functions; are all nodes the same version?",
                    node.len()
                ),
            });
        }
        for (i, part) in node.into_iter().enumerate() {
            per_leaf[i].push(part);
        }
    }
    Ok(Ok((per_leaf, missing)))
}
