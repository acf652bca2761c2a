//! Each user sees exactly what Kubernetes lets them read: the real binary
//! with `--auth kubernetes` against the fake API server's TokenReview and
//! SubjectAccessReview, a store holding namespaces `a` and `b`, and three
//! identities — a cluster-wide reader, a reader of `a` only, and one with
//! no permissions. Every route is called; the `a` reader never receives a
//! byte derived from `b`.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use testkit::api_server::FakeApiServer;
use testkit::daemon::{Daemon, DaemonCommand};
use testkit::kubelet::Node;
use testkit::reviews::Grant;

struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    async fn get(
        &self,
        token: Option<&str>,
        path: &str,
        params: &[(&str, &str)],
    ) -> (u16, String, Option<String>) {
        let mut request = self.http.get(format!("{}{path}", self.base)).query(params);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let challenge = response
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_owned());
        (status, response.text().await.unwrap(), challenge)
    }
}

fn start(node: &Node, kubeconfig: &std::path::Path, data: &std::path::Path) -> Daemon {
    DaemonCommand::new(env!("CARGO_BIN_EXE_monitoring-rs"))
        .kubernetes(node, kubeconfig, data)
        .args(["--auth", "kubernetes"])
        .args(["--flush-interval", "100ms", "--pod-wait", "1s"])
        // Short caches, so the test can see a revocation take effect.
        .args([
            "--auth-allowed-ttl",
            "2s",
            "--auth-denied-ttl",
            "1s",
            "--auth-token-ttl",
            "2s",
        ])
        .on(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9)))
        .quiet()
        .start()
}

/// Every data route, as a user would call it (a broad selector).
fn routes() -> Vec<(&'static str, Vec<(&'static str, String)>)> {
    let now = testkit::now_ns();
    let start = (now - 3_600_000_000_000).to_string();
    let end = (now + 60_000_000_000).to_string();
    let all = r#"{namespace=~".+"}"#.to_owned();
    let range = |q: &str| {
        vec![
            ("query", q.to_owned()),
            ("start", start.clone()),
            ("end", end.clone()),
        ]
    };
    vec![
        ("/loki/api/v1/query_range", range(&all)),
        (
            "/loki/api/v1/query_range",
            range(r#"sum by (namespace, pod) (count_over_time({namespace=~".+"}[1h]))"#),
        ),
        (
            "/loki/api/v1/query",
            vec![(
                "query",
                r#"sum by (pod) (count_over_time({namespace=~".+"}[1h]))"#.into(),
            )],
        ),
        ("/query", range(&all)),
        (
            "/loki/api/v1/labels",
            vec![("start", start.clone()), ("end", end.clone())],
        ),
        (
            "/loki/api/v1/label/pod/values",
            vec![("start", start.clone()), ("end", end.clone())],
        ),
        (
            "/loki/api/v1/label/namespace/values",
            vec![("start", start.clone()), ("end", end.clone())],
        ),
        (
            "/loki/api/v1/series",
            vec![
                ("match[]", all.clone()),
                ("start", start.clone()),
                ("end", end.clone()),
            ],
        ),
        ("/loki/api/v1/index/stats", range(&all)),
        ("/loki/api/v1/index/volume", range(&all)),
        ("/loki/api/v1/index/volume_range", range(&all)),
        ("/loki/api/v1/detected_labels", range(&all)),
        ("/loki/api/v1/detected_fields", range(&all)),
        ("/loki/api/v1/detected_field/pod/values", range(&all)),
        ("/loki/api/v1/patterns", range(&all)),
        ("/logs/container/app", vec![]),
        ("/status", vec![]),
    ]
}

fn owned<'a>(params: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    params.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[test]
fn each_user_sees_exactly_what_kubernetes_lets_them_read() {
    // The fake API server runs its own runtime: start it outside ours.
    let dir = tempfile::tempdir().unwrap();
    let node = Node::new(&dir.path().join("node")).unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let api = FakeApiServer::start();
    api.write_kubeconfig(&kubeconfig).unwrap();
    let reviews = api.reviews();
    reviews.add_user("root-token", "root", &["admins"]);
    reviews.add_user("alice-token", "alice", &["team-a"]);
    reviews.add_user("nobody-token", "nobody", &[]);
    reviews.grant("group:admins", Grant::Cluster);
    reviews.grant("user:root", Grant::Url("/metrics".into()));
    reviews.grant("group:team-a", Grant::Namespace("a".into()));
    for ns in ["a", "b"] {
        let mut c = node
            .start(ns, &format!("web-{ns}"), &format!("uid-{ns}"), "app")
            .unwrap();
        for i in 0..20 {
            c.write(
                "stdout",
                testkit::now_ns(),
                format!("level=info secret-{ns} line {i}").as_bytes(),
            )
            .unwrap();
        }
    }
    let daemon = start(&node, &kubeconfig, &dir.path().join("data"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(check(api, daemon));
}

async fn check(mut api: FakeApiServer, daemon: Daemon) {
    let reviews = api.reviews();
    let client = Client {
        base: daemon.base(),
        http: reqwest::Client::new(),
    };
    let routes = routes();
    let (path, params) = &routes[0];
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body, _) = client.get(Some("root-token"), path, &owned(params)).await;
        if status == 200 && body.contains("secret-a") && body.contains("secret-b") {
            break;
        }
        assert!(Instant::now() < deadline, "{status} {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // No token, a bad token: 401 with a Bearer challenge. /ready stays open.
    let (status, _, challenge) = client.get(None, "/loki/api/v1/labels", &[]).await;
    assert_eq!(
        (status, challenge.as_deref()),
        (401, Some("Bearer realm=\"monitoring-rs\""))
    );
    let (status, _, _) = client.get(Some("forged"), "/loki/api/v1/labels", &[]).await;
    assert_eq!(status, 401);
    assert_eq!(client.get(None, "/ready", &[]).await.0, 200);

    for (path, params) in &routes {
        let params = owned(params);
        // The cluster reader sees both namespaces.
        let (status, body, _) = client.get(Some("root-token"), path, &params).await;
        assert_eq!(status, 200, "root {path}: {body}");
        // The reader of a: everything of a, nothing derived from b.
        let (status, body, _) = client.get(Some("alice-token"), path, &params).await;
        assert_eq!(status, 200, "alice {path}: {body}");
        for leak in ["secret-b", "web-b", "uid-b", "\"b\""] {
            assert!(!body.contains(leak), "alice {path} leaks {leak}: {body}");
        }
        // No permission at all: refused.
        let (status, body, _) = client.get(Some("nobody-token"), path, &params).await;
        assert_eq!(status, 403, "nobody {path}: {body}");
    }
    // Root's answers do hold b (the routes above are not vacuous).
    let (_, body, _) = client
        .get(Some("root-token"), "/loki/api/v1/label/pod/values", &[])
        .await;
    assert!(body.contains("web-b") && body.contains("web-a"), "{body}");
    let (_, body, _) = client
        .get(Some("alice-token"), "/loki/api/v1/label/pod/values", &[])
        .await;
    assert!(body.contains("web-a"), "{body}");

    // Naming a forbidden namespace: 403 that says which.
    let (status, body, _) = client
        .get(
            Some("alice-token"),
            "/loki/api/v1/query_range",
            &[("query", r#"{namespace="b"}"#)],
        )
        .await;
    assert_eq!(status, 403);
    assert!(
        body.contains("\\\"b\\\"") || body.contains("\"b\""),
        "{body}"
    );

    // Tail: the backfill of a broad query holds only a.
    let url = format!(
        "{}/loki/api/v1/tail?query=%7Bnamespace%3D~%22.%2B%22%7D",
        client.base.replace("http", "ws")
    );
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url)
            .unwrap();
    request
        .headers_mut()
        .insert("authorization", "Bearer alice-token".parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let frame = tokio::time::timeout(Duration::from_secs(10), socket.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let text = frame.to_text().unwrap();
    assert!(
        text.contains("secret-a") && !text.contains("secret-b"),
        "{text}"
    );
    drop(socket);

    // /metrics needs get on /metrics; denials are counted by reason.
    let (status, metrics, _) = client.get(Some("root-token"), "/metrics", &[]).await;
    assert_eq!(status, 200);
    for reason in ["no_token", "invalid_token", "namespace_forbidden"] {
        assert!(
            metrics.contains(&format!(
                "monitoring_rs_http_requests_denied_total{{reason=\"{reason}\"}}"
            )),
            "{reason}: {metrics}"
        );
    }
    assert_eq!(
        client.get(Some("alice-token"), "/metrics", &[]).await.0,
        403
    );

    // Answers are cached: a second identical request asks nothing new.
    let asked = reviews.access_reviews.load(Ordering::Relaxed);
    client
        .get(Some("alice-token"), "/loki/api/v1/labels", &[])
        .await;
    assert_eq!(
        reviews.access_reviews.load(Ordering::Relaxed),
        asked,
        "cached"
    );
    // A revoked permission takes effect once the allow has expired (2 s here).
    reviews.revoke("group:team-a", &Grant::Namespace("a".into()));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (status, body, _) = client
        .get(
            Some("alice-token"),
            "/loki/api/v1/query_range",
            &[("query", r#"{namespace="a"}"#)],
        )
        .await;
    assert_eq!(status, 403, "after revocation: {body}");

    // The API server unreachable: fail closed, 503.
    // (Its runtime blocks: restart and drop it on a blocking thread.)
    tokio::task::spawn_blocking(move || {
        api.restart(Duration::from_secs(6));
        drop(api);
    });
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (status, body, _) = client
        .get(Some("root-token"), "/loki/api/v1/labels", &[])
        .await;
    assert_eq!(status, 503, "{body}");
    daemon.terminate();
}
