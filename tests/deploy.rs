//! The deployment files users run on real clusters cannot be exercised here
//! (no cluster, no Docker engine), so their properties are checked instead,
//! against the binary's own flags, so they cannot rot.

use std::process::Command;

use serde_yaml::Value;

fn documents() -> Vec<Value> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/kubernetes.yaml"
    ))
    .unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect()
}

fn kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in deploy/kubernetes.yaml"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .unwrap_or_else(|| panic!("{v:?} is not a list"))
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn rbac_grants_pods_read_and_nothing_more() {
    let docs = documents();
    for k in [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "DaemonSet",
        "Service",
    ] {
        kind(&docs, k);
    }
    let rules = kind(&docs, "ClusterRole")["rules"].as_sequence().unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(strings(&rules[0]["resources"]), ["pods"]);
    assert_eq!(strings(&rules[0]["verbs"]), ["get", "list", "watch"]);
    let bindings: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == "ClusterRoleBinding")
        .collect();
    let roles: Vec<&str> = bindings
        .iter()
        .map(|b| b["roleRef"]["name"].as_str().unwrap())
        .collect();
    // The pod watch, and delegated authentication and authorization
    // (TokenReview, SubjectAccessReview) for --auth kubernetes.
    assert_eq!(roles, ["monitoring-rs", "system:auth-delegator"]);
    for binding in bindings {
        assert_eq!(
            binding["subjects"][0]["name"],
            kind(&docs, "ServiceAccount")["metadata"]["name"]
        );
    }
}

#[test]
fn the_daemonset_is_complete() {
    let docs = documents();
    let ds = kind(&docs, "DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "monitoring-rs");
    assert!(pod["terminationGracePeriodSeconds"].as_u64().unwrap() >= 10);
    assert_eq!(
        pod["tolerations"][0]["operator"], "Exists",
        "runs on every node"
    );
    let c = &pod["containers"][0];
    let env = c["env"].as_sequence().unwrap();
    let node = env
        .iter()
        .find(|e| e["name"] == "NODE_NAME")
        .expect("NODE_NAME");
    assert_eq!(node["valueFrom"]["fieldRef"]["fieldPath"], "spec.nodeName");
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(c[probe]["httpGet"]["path"], "/ready", "{probe}");
    }
    assert!(c["resources"]["requests"]["cpu"].is_string());
    assert!(c["resources"]["requests"]["memory"].is_string());
    assert!(c["resources"]["limits"]["memory"].is_string());
    // Logs read-only from the host; the store on the host, writable.
    let mounts = c["volumeMounts"].as_sequence().unwrap();
    let volumes = pod["volumes"].as_sequence().unwrap();
    let host = |mount: &str| {
        let m = mounts
            .iter()
            .find(|m| m["mountPath"] == mount)
            .unwrap_or_else(|| panic!("{mount} not mounted"));
        let v = volumes.iter().find(|v| v["name"] == m["name"]).unwrap();
        (
            v["hostPath"]["path"].as_str().unwrap().to_owned(),
            m["readOnly"].as_bool().unwrap_or(false),
        )
    };
    assert_eq!(host("/var/log"), ("/var/log".into(), true));
    assert_eq!(
        host("/var/lib/docker/containers"),
        ("/var/lib/docker/containers".into(), true)
    );
    let data = env.iter().find(|e| e["name"] == "DATA_DIRECTORY").unwrap()["value"]
        .as_str()
        .unwrap();
    assert!(!host(data).1, "the data directory is writable");
    let service = kind(&docs, "Service");
    assert_eq!(service["spec"]["clusterIP"], "None", "headless");
    assert_eq!(service["spec"]["ports"][0]["port"], 8000);
}

#[test]
fn the_manifests_use_flags_the_binary_has() {
    let help = Command::new(env!("CARGO_BIN_EXE_monitoring-rs"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    let docs = documents();
    let c = &kind(&docs, "DaemonSet")["spec"]["template"]["spec"]["containers"][0];
    for e in c["env"].as_sequence().unwrap() {
        let name = e["name"].as_str().unwrap();
        if name == "RUST_LOG" {
            continue;
        }
        assert!(
            help.contains(&format!("[env: {name}")),
            "{name} is not a flag's variable"
        );
    }
    for arg in strings(&c["args"]).iter().filter(|a| a.starts_with("--")) {
        assert!(help.contains(arg.as_str()), "{arg} is not a flag");
    }
    let compose: Value = serde_yaml::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docker-compose.yaml"))
            .unwrap(),
    )
    .unwrap();
    for service in ["monitoring", "writer", "rotate", "inspect", "test", "lint"] {
        assert!(
            compose["services"][service].is_mapping(),
            "compose service {service}"
        );
    }
    for arg in strings(&compose["services"]["monitoring"]["command"])
        .iter()
        .filter(|a| a.starts_with("--"))
    {
        assert!(help.contains(arg.as_str()), "{arg} is not a flag");
    }
    assert_eq!(
        strings(&compose["services"]["monitoring"]["ports"]),
        ["8000:8000"]
    );
}

#[test]
fn the_dockerfile_caches_dependencies_and_runs_the_binary() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile")).unwrap();
    let manifests = text
        .find("COPY Cargo.toml Cargo.lock")
        .expect("manifests copied alone");
    let sources = text.find("COPY . .").expect("sources copied");
    assert!(manifests < sources, "the dependency layer comes first");
    assert!(text.contains("AS build"));
    assert!(
        text.matches("\nFROM ").count() + usize::from(text.starts_with("FROM ")) >= 2,
        "multi-stage"
    );
    assert!(text.contains(r#"ENTRYPOINT ["/monitoring-rs"]"#));
}

#[test]
fn the_shipped_manifest_runs_with_auth_and_tls() {
    let docs = documents();
    let pod = &kind(&docs, "DaemonSet")["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let env: Vec<(String, String)> = c["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?.to_owned(),
                e["value"].as_str()?.to_owned(),
            ))
        })
        .collect();
    let get = |name: &str| env.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    // --auth defaults to kubernetes with this collector; nothing turns it off.
    assert!(get("AUTH").is_none_or(|v| v == "kubernetes"));
    assert!(!strings(&c["args"]).contains(&"none".to_owned()));
    let cert = get("TLS_CERT_FILE").expect("TLS_CERT_FILE");
    let key = get("TLS_PRIVATE_KEY_FILE").expect("TLS_PRIVATE_KEY_FILE");
    let mount = c["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "tls")
        .expect("the tls volume is mounted");
    let dir = mount["mountPath"].as_str().unwrap();
    assert!(cert.starts_with(dir) && key.starts_with(dir));
    let secret = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "tls")
        .unwrap();
    assert_eq!(secret["secret"]["secretName"], "monitoring-rs-tls");
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(c[probe]["httpGet"]["scheme"], "HTTPS", "{probe}");
    }
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/networkpolicy.yaml"
    ))
    .unwrap();
    let policy: Value = serde_yaml::from_str(&text).unwrap();
    assert_eq!(policy["kind"], "NetworkPolicy");
    // Peers: EndpointSlices of this namespace's Service, read only.
    assert_eq!(
        get("PEER_SERVICE").as_deref(),
        Some("monitoring-rs/monitoring-rs")
    );
    let role = kind(&docs, "Role");
    assert_eq!(role["metadata"]["namespace"], "monitoring-rs");
    assert_eq!(strings(&role["rules"][0]["resources"]), ["endpointslices"]);
    assert_eq!(
        strings(&role["rules"][0]["verbs"]),
        ["get", "list", "watch"]
    );
    assert_eq!(
        kind(&docs, "RoleBinding")["roleRef"]["name"],
        "monitoring-rs-peers"
    );
    assert_eq!(policy["spec"]["ingress"][0]["ports"][0]["port"], 8000);
}
