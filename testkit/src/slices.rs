//! EndpointSlices (`discovery.k8s.io/v1`) for the fake API server: the
//! slices of a headless Service, listed and watched per namespace with a
//! `kubernetes.io/service-name` label selector, `resourceVersion`s and
//! bookmarks, as the real server serves them to kube-rs's watcher.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use serde_json::json;
use tokio::sync::broadcast;

/// One endpoint of a slice: an address, its node and whether it is ready.
#[derive(Clone, Debug)]
pub struct Member {
    /// The pod's IP.
    pub address: String,
    /// The node it runs on.
    pub node: String,
    /// Ready to serve.
    pub ready: bool,
}

#[derive(Clone)]
struct Change {
    version: u64,
    kind: &'static str,
    slice: EndpointSlice,
}

#[derive(Default)]
struct Inner {
    version: u64,
    slices: BTreeMap<(String, String), EndpointSlice>,
    history: Vec<Change>,
}

/// The slices and their changes.
pub struct Slices {
    inner: Mutex<Inner>,
    changes: broadcast::Sender<Change>,
}

impl Default for Slices {
    fn default() -> Self {
        Self {
            inner: Mutex::default(),
            changes: broadcast::channel(1024).0,
        }
    }
}

fn service_of(slice: &EndpointSlice) -> Option<&str> {
    slice
        .metadata
        .labels
        .as_ref()?
        .get("kubernetes.io/service-name")
        .map(String::as_str)
}

fn selected(slice: &EndpointSlice, namespace: &str, service: Option<&str>) -> bool {
    slice.metadata.namespace.as_deref() == Some(namespace)
        && service.is_none_or(|s| service_of(slice) == Some(s))
}

impl Slices {
    /// A DaemonSet all up: one ready endpoint per `(address, node)`, on a
    /// port free on every address (a slice names one port for all), which
    /// is returned for the daemons to listen on.
    pub fn daemon_set(
        &self,
        namespace: &str,
        service: &str,
        daemons: &[(std::net::IpAddr, &str)],
    ) -> u16 {
        let ips: Vec<std::net::IpAddr> = daemons.iter().map(|d| d.0).collect();
        let port = crate::daemon::free_port_on_all(&ips);
        let members: Vec<Member> = daemons
            .iter()
            .map(|(address, node)| Member {
                address: address.to_string(),
                node: (*node).to_owned(),
                ready: true,
            })
            .collect();
        self.set(namespace, service, port, &members);
        port
    }

    /// Sets the one slice of `service` in `namespace` to `members` on `port`.
    pub fn set(&self, namespace: &str, service: &str, port: u16, members: &[Member]) {
        let mut slice = EndpointSlice {
            address_type: "IPv4".into(),
            endpoints: members
                .iter()
                .map(|m| Endpoint {
                    addresses: vec![m.address.clone()],
                    conditions: Some(EndpointConditions {
                        ready: Some(m.ready),
                        serving: Some(m.ready),
                        terminating: Some(false),
                    }),
                    node_name: Some(m.node.clone()),
                    ..Endpoint::default()
                })
                .collect(),
            ports: Some(vec![EndpointPort {
                name: Some("https".into()),
                port: Some(i32::from(port)),
                protocol: Some("TCP".into()),
                app_protocol: None,
            }]),
            ..EndpointSlice::default()
        };
        slice.metadata.namespace = Some(namespace.into());
        slice.metadata.name = Some(format!("{service}-abcde"));
        slice.metadata.labels = Some(BTreeMap::from([(
            "kubernetes.io/service-name".to_owned(),
            service.to_owned(),
        )]));
        let mut inner = self.inner.lock().unwrap();
        inner.version += 1;
        slice.metadata.resource_version = Some(inner.version.to_string());
        let key = (namespace.to_owned(), format!("{service}-abcde"));
        let kind = if inner.slices.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        inner.slices.insert(key, slice.clone());
        let change = Change {
            version: inner.version,
            kind,
            slice,
        };
        inner.history.push(change.clone());
        let _ = self.changes.send(change);
    }

    /// Answers a list or a watch of `namespace`'s slices.
    pub fn serve(&self, namespace: &str, query: &BTreeMap<String, String>) -> Response {
        let service = query
            .get("labelSelector")
            .and_then(|s| s.strip_prefix("kubernetes.io/service-name="))
            .map(str::to_owned);
        let watch = matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
        let inner = self.inner.lock().unwrap();
        if !watch {
            let items: Vec<&EndpointSlice> = inner
                .slices
                .values()
                .filter(|s| selected(s, namespace, service.as_deref()))
                .collect();
            return crate::api_server::list(
                "discovery.k8s.io/v1",
                "EndpointSliceList",
                inner.version,
                json!(items),
            );
        }
        let (from, timeout) = crate::api_server::watch_params(query);
        let event =
            |c: &Change| Bytes::from(format!("{}\n", json!({"type": c.kind, "object": c.slice})));
        let (namespace, service) = (namespace.to_owned(), service);
        let first: Vec<u8> = inner
            .history
            .iter()
            .filter(|c| c.version > from && selected(&c.slice, &namespace, service.as_deref()))
            .flat_map(|c| event(c).to_vec())
            .collect();
        let live = self.changes.subscribe();
        let version = inner.version;
        drop(inner);
        let deadline = tokio::time::Instant::now() + timeout;
        let body = stream::unfold(
            (Some(first), live, version),
            move |(first, mut live, version)| {
                let (namespace, service) = (namespace.clone(), service.clone());
                async move {
                    if let Some(first) = first {
                        return Some((
                            Ok::<Bytes, std::io::Error>(Bytes::from(first)),
                            (None, live, version),
                        ));
                    }
                    loop {
                        tokio::select! {
                            change = live.recv() => match change {
                                Ok(c) if selected(&c.slice, &namespace, service.as_deref()) => {
                                    let v = c.version;
                                    return Some((Ok(event(&c)), (None, live, v)));
                                }
                                Ok(_) => continue,
                                Err(_) => return None,
                            },
                            _ = tokio::time::sleep_until(deadline) => return None,
                            _ = tokio::time::sleep(Duration::from_millis(500)) => {
                                let mark = json!({"type": "BOOKMARK", "object": {
                                    "kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1",
                                    "metadata": {"resourceVersion": version.to_string()}
                                }});
                                return Some((Ok(Bytes::from(format!("{mark}\n"))), (None, live, version)));
                            }
                        }
                    }
                }
            },
        );
        (
            [("content-type", "application/json")],
            Body::from_stream(body),
        )
            .into_response()
    }
}
