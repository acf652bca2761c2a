//! The cluster view with access control and TLS: three daemons (Kubernetes
//! collector, `--auth kubernetes`, HTTPS with certificates a test CA signed
//! for the Service's DNS name only) on 127.0.0.16, .17 and .18. The
//! caller's token travels to the peers, each authorizes it for itself, the
//! peers are verified against `--peer-ca-file` by the Service's name, and
//! the peer marker opens nothing without a token.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use testkit::api_server::FakeApiServer;
use testkit::daemon::{Daemon, DaemonCommand};
use testkit::kubelet::Node;
use testkit::reviews::Grant;

const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];
const SERVICE_NAME: &str = "monitoring-rs.monitoring-rs.svc";

fn ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 16 + i as u8))
}

/// A CA, and a certificate it signs naming only the Service (not the
/// pods' addresses): written to `dir` as ca.crt, tls.crt, tls.key.
fn certificates(dir: &Path) -> rustls_pki_types::CertificateDer<'static> {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec![SERVICE_NAME.to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    std::fs::write(dir.join("ca.crt"), ca.pem()).unwrap();
    std::fs::write(dir.join("tls.crt"), leaf.pem()).unwrap();
    std::fs::write(dir.join("tls.key"), key.serialize_pem()).unwrap();
    ca.der().clone()
}

type Https = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// A client trusting `ca`, checking the Service's name whatever address
/// it dials (as a client inside the cluster would through the Service).
fn https(ca: &rustls_pki_types::CertificateDer<'static>) -> Https {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only()
        .with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(
            SERVICE_NAME.try_into().unwrap(),
        ))
        .enable_http1()
        .build();
    Client::builder(TokioExecutor::new()).build(connector)
}

async fn get(
    client: &Https,
    address: SocketAddr,
    token: Option<&str>,
    headers: &[(&str, &str)],
    path_and_query: &str,
) -> (u16, String) {
    let mut request = hyper::Request::get(format!("https://{address}{path_and_query}"));
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = client
        .request(request.body(Empty::new()).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn query(text: &str) -> String {
    let encoded: String = form_urlencoded::byte_serialize(text.as_bytes()).collect();
    format!("/loki/api/v1/query_range?limit=1000&query={encoded}")
}

#[test]
fn tokens_travel_and_peers_speak_verified_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = certificates(dir.path());
    let api = FakeApiServer::start();
    let kubeconfig = dir.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig).unwrap();
    let reviews = api.reviews();
    reviews.add_user("root-token", "root", &["admins"]);
    reviews.add_user("alice-token", "alice", &["team-a"]);
    reviews.grant("group:admins", Grant::Cluster);
    reviews.grant("group:team-a", Grant::Namespace("a".into()));
    let daemons_at: Vec<(IpAddr, &str)> = (0..3).map(|i| (ip(i), NODES[i])).collect();
    let port = api
        .slices()
        .daemon_set("monitoring-rs", "monitoring-rs", &daemons_at);
    let mut daemons: Vec<Daemon> = Vec::new();
    for (i, name) in NODES.iter().enumerate() {
        let node = Node::new(&dir.path().join(name)).unwrap();
        for ns in ["a", "b"] {
            let mut c = node
                .start(
                    ns,
                    &format!("web-{ns}-{name}"),
                    &format!("uid-{ns}-{i}"),
                    "app",
                )
                .unwrap();
            for n in 0..10 {
                let line = format!("level=info secret-{ns} line {n} on {name}");
                c.write("stdout", testkit::now_ns(), line.as_bytes())
                    .unwrap();
            }
        }
        let mut command = DaemonCommand::new(env!("CARGO_BIN_EXE_monitoring-rs"))
            .kubernetes_as(
                name,
                &node,
                &kubeconfig,
                &dir.path().join(name).join("data"),
            )
            .args(["--auth", "kubernetes", "--pod-wait", "1s"])
            .args(["--flush-interval", "100ms"])
            .args(["--peer-service", "monitoring-rs/monitoring-rs"])
            .flag("--tls-cert-file", dir.path().join("tls.crt"))
            .flag("--tls-private-key-file", dir.path().join("tls.key"))
            .flag("--peer-ca-file", dir.path().join("ca.crt"))
            .on(ip(i))
            .port(port)
            .quiet();
        if i == 2 {
            // This node may take only a little from its peers.
            command = command.args(["--max-peer-response-size", "2KiB"]);
        }
        daemons.push(command.start());
        // Keep the node's folders until the end.
        std::mem::forget(node);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = https(&ca);
        let address = |i: usize| SocketAddr::new(ip(i), port);
        let all = query(r#"{namespace=~".+"}"#);
        // Root sees all six pods, through any node, once all are up.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, body) = get(&client, address(0), Some("root-token"), &[], &all).await;
            if status == 200 && NODES.iter().all(|n| body.contains(&format!("web-b-{n}"))) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "never the whole cluster: {status} {body}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // Alice reads namespace a on every node, nothing of b; each peer
        // reviewed her token itself.
        let before = reviews.token_reviews.load(Ordering::Relaxed);
        let (status, body) = get(&client, address(1), Some("alice-token"), &[], &all).await;
        assert_eq!(status, 200, "{body}");
        for n in NODES {
            assert!(
                body.contains(&format!("web-a-{n}")),
                "alice misses {n}: {body}"
            );
        }
        assert!(!body.contains("secret-b"), "alice reads b: {body}");
        assert!(!body.contains("warnings"), "a peer was left out: {body}");
        let reviewed = reviews.token_reviews.load(Ordering::Relaxed) - before;
        assert!(
            reviewed >= 3,
            "only {reviewed} token reviews for three nodes"
        );
        // Naming b is refused, as on one node.
        let (status, _) = get(
            &client,
            address(0),
            Some("alice-token"),
            &[],
            &query(r#"{namespace="b"}"#),
        )
        .await;
        assert_eq!(status, 403);
        // The peer marker is no way around a token.
        let (status, _) = get(
            &client,
            address(0),
            None,
            &[("x-monitoring-peer", "1")],
            &all,
        )
        .await;
        assert_eq!(status, 401);
        // A node whose cap is smaller than its peers' answers says so.
        let (status, body) = get(&client, address(2), Some("root-token"), &[], &all).await;
        assert_eq!(status, 400, "{body}");
        assert!(body.contains("--max-peer-response-size"), "{body}");
        // scope=node still answers there.
        let local = format!("{all}&scope=node");
        let (status, body) = get(&client, address(2), Some("root-token"), &[], &local).await;
        assert_eq!(status, 200, "{body}");
        assert!(
            body.contains("web-b-node-c") && !body.contains("web-b-node-a"),
            "{body}"
        );
    });
    for daemon in daemons {
        assert!(daemon.terminate().success());
    }
}
