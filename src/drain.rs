//! Log patterns: the Drain algorithm (He et al., "Drain: An Online Log
//! Parsing Approach with Fixed Depth Tree", 2017), as Loki's pattern
//! ingester uses it to answer `/loki/api/v1/patterns`. Lines of the same
//! shape fall into one cluster whose template keeps the tokens they share
//! and writes `<_>` for the ones that vary.
//!
//! Bounded: at most [`MAX_CLUSTERS`] clusters (the least recently matched
//! one makes room), tokens per line capped, lines longer than
//! [`MAX_LINE`] cut.

use std::collections::{HashMap, HashSet};

/// What a varying token becomes.
pub const PARAM: &str = "<_>";
/// Clusters kept at most.
pub const MAX_CLUSTERS: usize = 300;
/// Bytes of a line looked at.
const MAX_LINE: usize = 3000;
/// Tokens of a line looked at.
const MAX_TOKENS: usize = 128;
/// How many leading tokens route a line in the tree.
const PREFIX_DEPTH: usize = 1;
/// Children a tree node has at most before new tokens share `<_>`.
const MAX_CHILDREN: usize = 15;
/// How alike a line and a template must be to share a cluster.
const SIMILARITY: f64 = 0.3;

/// One pattern and what matched it.
#[derive(Clone, Debug)]
pub struct Cluster {
    tokens: Vec<String>,
    /// How many lines matched.
    pub count: u64,
    last_used: u64,
    /// Matches per time bucket (bucket start, count).
    pub samples: Vec<(i64, u64)>,
}

impl Cluster {
    /// The template, consecutive `<_>` folded into one.
    pub fn pattern(&self) -> String {
        let mut out: Vec<&str> = Vec::with_capacity(self.tokens.len());
        for t in &self.tokens {
            if t == PARAM && out.last() == Some(&PARAM) {
                continue;
            }
            out.push(t);
        }
        out.join(" ")
    }

    fn add_sample(&mut self, bucket: i64) {
        match self.samples.last_mut() {
            Some((b, n)) if *b == bucket => *n += 1,
            _ => match self.samples.binary_search_by_key(&bucket, |(b, _)| *b) {
                Ok(i) => self.samples[i].1 += 1,
                Err(i) => self.samples.insert(i, (bucket, 1)),
            },
        }
    }
}

/// A Drain tree and its clusters.
#[derive(Debug, Default)]
pub struct Drain {
    clusters: Vec<Cluster>,
    /// (token count, leading tokens) → clusters under that leaf.
    leaves: HashMap<(usize, Vec<String>), Vec<usize>>,
    /// The routing tokens under each (token count, parent path).
    children: HashMap<(usize, Vec<String>), HashSet<String>>,
    clock: u64,
}

fn has_digit(token: &str) -> bool {
    token.bytes().any(|b| b.is_ascii_digit())
}

fn tokens(line: &[u8]) -> Vec<String> {
    let line = &line[..line.len().min(MAX_LINE)];
    String::from_utf8_lossy(line)
        .split_whitespace()
        .take(MAX_TOKENS)
        .map(str::to_owned)
        .collect()
}

impl Drain {
    /// The clusters, most matched first.
    pub fn clusters(&self) -> Vec<&Cluster> {
        let mut out: Vec<&Cluster> = self.clusters.iter().collect();
        out.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.tokens.cmp(&b.tokens)));
        out
    }

    /// The routing path of a line: tokens with digits route as `<_>`, and
    /// a node that already has [`MAX_CHILDREN`] children sends new tokens
    /// to `<_>` too.
    fn route(&mut self, toks: &[String]) -> (usize, Vec<String>) {
        let mut path: Vec<String> = Vec::new();
        for t in toks.iter().take(PREFIX_DEPTH) {
            let token = if has_digit(t) {
                PARAM.to_owned()
            } else {
                t.clone()
            };
            let kids = self.children.entry((toks.len(), path.clone())).or_default();
            if kids.contains(&token) {
                path.push(token);
            } else if kids.len() >= MAX_CHILDREN {
                path.push(PARAM.to_owned());
            } else {
                kids.insert(token.clone());
                path.push(token);
            }
        }
        (toks.len(), path)
    }

    fn similarity(template: &[String], toks: &[String]) -> (f64, usize) {
        let mut same = 0;
        let mut params = 0;
        for (a, b) in template.iter().zip(toks) {
            if a == PARAM {
                params += 1;
            } else if a == b {
                same += 1;
            }
        }
        (same as f64 / template.len().max(1) as f64, params)
    }

    /// Adds a line seen at `bucket`.
    pub fn train(&mut self, line: &[u8], bucket: i64) {
        let toks = tokens(line);
        if toks.is_empty() {
            return;
        }
        self.clock += 1;
        let key = self.route(&toks);
        let candidates = self.leaves.get(&key).cloned().unwrap_or_default();
        let best = candidates
            .iter()
            .map(|&i| (i, Self::similarity(&self.clusters[i].tokens, &toks)))
            .filter(|(_, (sim, _))| *sim >= SIMILARITY)
            .max_by(|a, b| a.1.0.total_cmp(&b.1.0).then(a.1.1.cmp(&b.1.1)));
        let clock = self.clock;
        if let Some((i, _)) = best {
            let cluster = &mut self.clusters[i];
            for (t, new) in cluster.tokens.iter_mut().zip(&toks) {
                if t != new {
                    *t = PARAM.to_owned();
                }
            }
            cluster.count += 1;
            cluster.last_used = clock;
            cluster.add_sample(bucket);
            return;
        }
        let mut cluster = Cluster {
            tokens: toks,
            count: 1,
            last_used: clock,
            samples: Vec::new(),
        };
        cluster.add_sample(bucket);
        let index = if self.clusters.len() < MAX_CLUSTERS {
            self.clusters.push(cluster);
            self.clusters.len() - 1
        } else {
            // The least recently matched cluster makes room.
            let (oldest, _) = self
                .clusters
                .iter()
                .enumerate()
                .min_by_key(|(_, c)| c.last_used)
                .expect("clusters are full");
            for members in self.leaves.values_mut() {
                members.retain(|&m| m != oldest);
            }
            self.clusters[oldest] = cluster;
            oldest
        };
        self.leaves.entry(key).or_default().push(index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_of_one_shape_share_a_pattern() {
        let mut drain = Drain::default();
        for (i, user) in ["alice", "bob", "carol"].iter().enumerate() {
            drain.train(
                format!("login ok user={user} from 10.0.0.{i}").as_bytes(),
                0,
            );
            drain.train(format!("GET /api/items/{i} 200 {}ms", i * 7).as_bytes(), 10);
        }
        drain.train(b"disk full on /var", 20);
        let patterns: Vec<(String, u64)> = drain
            .clusters()
            .iter()
            .map(|c| (c.pattern(), c.count))
            .collect();
        assert!(
            patterns.contains(&("login ok <_> from <_>".into(), 3)),
            "{patterns:?}"
        );
        assert!(
            patterns.contains(&("GET <_> 200 <_>".into(), 3)),
            "{patterns:?}"
        );
        assert!(
            patterns.contains(&("disk full on /var".into(), 1)),
            "{patterns:?}"
        );
        let get = drain
            .clusters()
            .into_iter()
            .find(|c| c.pattern().starts_with("GET"))
            .unwrap();
        assert_eq!(get.samples, vec![(10, 3)]);
    }

    #[test]
    fn memory_is_bounded_by_clusters() {
        let mut drain = Drain::default();
        for i in 0..10_000 {
            // Every line its own shape (different lengths and words).
            let line = format!("{} {}", "word".repeat(1 + i % 50), "x ".repeat(i % 97));
            drain.train(line.as_bytes(), i as i64);
        }
        assert!(drain.clusters.len() <= MAX_CLUSTERS);
    }
}
