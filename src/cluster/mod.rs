//! The other daemons of the cluster: who they are, from a static list
//! (`--peers`) or from the EndpointSlices of the DaemonSet's headless
//! Service (`--peer-service`), kept current with a list+watch. The
//! cluster-wide answers are built on this list.

pub mod client;

pub use client::{Answers, Client, ClientConfig, ClusterError, Missing, PeerTls};

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use futures_util::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::watcher;

/// One other daemon.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Peer {
    /// Where its API listens.
    pub address: SocketAddr,
    /// Its node, when Kubernetes says.
    pub node: Option<String>,
    /// Ready to answer (a not-ready endpoint is not asked).
    pub ready: bool,
}

/// The current peers, shared by the discovery task and the API.
#[derive(Clone, Debug, Default)]
pub struct Peers(Arc<RwLock<Vec<Peer>>>);

impl Peers {
    /// A fixed list (`--peers`).
    pub fn fixed(addresses: &[SocketAddr]) -> Self {
        Self(Arc::new(RwLock::new(
            addresses
                .iter()
                .map(|&address| Peer {
                    address,
                    node: None,
                    ready: true,
                })
                .collect(),
        )))
    }

    /// The peers ready to answer.
    pub fn ready(&self) -> Vec<Peer> {
        self.list().into_iter().filter(|p| p.ready).collect()
    }

    /// The peers as last known.
    pub fn list(&self) -> Vec<Peer> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, peers: Vec<Peer>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = peers;
    }
}

/// The endpoints of `slices`, without this node's own.
fn peers_of<'a>(
    slices: impl Iterator<Item = &'a EndpointSlice>,
    own_node: Option<&str>,
) -> Vec<Peer> {
    let mut out = Vec::new();
    for slice in slices {
        let Some(port) = slice
            .ports
            .iter()
            .flatten()
            .find_map(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
        else {
            continue;
        };
        for endpoint in &slice.endpoints {
            let node = endpoint.node_name.clone();
            if own_node.is_some() && node.as_deref() == own_node {
                continue;
            }
            let ready = endpoint
                .conditions
                .as_ref()
                .and_then(|c| c.ready)
                .unwrap_or(true);
            for address in &endpoint.addresses {
                if let Ok(ip) = address.parse() {
                    out.push(Peer {
                        address: SocketAddr::new(ip, port),
                        node: node.clone(),
                        ready,
                    });
                }
            }
        }
    }
    out.sort_by_key(|p| p.address);
    out.dedup();
    out
}

/// Keeps `peers` equal to the endpoints of the Service `name` in
/// `namespace` (all but this node's), until the task is dropped.
pub async fn watch_peers(
    client: kube::Client,
    namespace: String,
    name: String,
    own_node: Option<String>,
    peers: Peers,
) {
    let api: Api<EndpointSlice> = Api::namespaced(client, &namespace);
    let config = watcher::Config::default().labels(&format!("kubernetes.io/service-name={name}"));
    let mut slices: std::collections::BTreeMap<String, EndpointSlice> =
        std::collections::BTreeMap::new();
    let mut fresh: std::collections::BTreeMap<String, EndpointSlice> =
        std::collections::BTreeMap::new();
    let mut events = std::pin::pin!(watcher(api, config));
    let mut warned = false;
    while let Some(event) = events.next().await {
        let key = |s: &EndpointSlice| s.metadata.name.clone().unwrap_or_default();
        match event {
            Ok(watcher::Event::Init) => fresh.clear(),
            Ok(watcher::Event::InitApply(s)) => {
                fresh.insert(key(&s), s);
            }
            Ok(watcher::Event::InitDone) => slices = std::mem::take(&mut fresh),
            Ok(watcher::Event::Apply(s)) => {
                slices.insert(key(&s), s);
            }
            Ok(watcher::Event::Delete(s)) => {
                slices.remove(&key(&s));
            }
            Err(error) => {
                if !warned {
                    tracing::warn!(%error, namespace, service = name, "Cannot list the peers' EndpointSlices; keeping the last known peers and retrying.");
                    warned = true;
                }
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                continue;
            }
        }
        warned = false;
        peers.set(peers_of(slices.values(), own_node.as_deref()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};

    #[test]
    fn endpoints_become_peers_but_this_node() {
        let slice = EndpointSlice {
            address_type: "IPv4".into(),
            endpoints: ["node-1", "node-2", "node-3"]
                .iter()
                .enumerate()
                .map(|(i, n)| Endpoint {
                    addresses: vec![format!("10.0.0.{}", i + 1)],
                    node_name: Some(n.to_string()),
                    conditions: Some(EndpointConditions {
                        ready: Some(i != 2),
                        ..EndpointConditions::default()
                    }),
                    ..Endpoint::default()
                })
                .collect(),
            ports: Some(vec![EndpointPort {
                port: Some(8000),
                ..EndpointPort::default()
            }]),
            ..EndpointSlice::default()
        };
        let peers = peers_of([&slice].into_iter(), Some("node-1"));
        assert_eq!(peers.len(), 2);
        assert_eq!(peers[0].address, "10.0.0.2:8000".parse().unwrap());
        assert_eq!(peers[0].node.as_deref(), Some("node-2"));
        assert!(peers[0].ready && !peers[1].ready);
    }
}
