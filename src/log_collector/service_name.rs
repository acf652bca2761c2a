//! `service_name`, the label Grafana's Logs Drilldown starts from, found as
//! Loki's distributor finds it (`discover_service_name` in grafana/loki
//! `pkg/validation/limits.go`): the first of a list of labels that the
//! stream has, else `unknown_service`.

/// The label's name.
pub const LABEL: &str = "service_name";

/// The value when no label in [`SOURCES`] is set.
pub const UNKNOWN: &str = "unknown_service";

/// Loki's default `discover_service_name`, in order (pod labels arrive
/// sanitised: `app.kubernetes.io/name` is `app_kubernetes_io_name`).
pub const SOURCES: &[&str] = &[
    "service",
    "app",
    "application",
    "app_name",
    "name",
    "app_kubernetes_io_name",
    "container",
    "container_name",
    "k8s_container_name",
    "component",
    "workload",
    "job",
    "k8s_job_name",
];

/// Adds `service_name` to a stream's labels unless it has one.
pub fn discover(pairs: &mut Vec<(String, String)>) {
    if pairs.iter().any(|(n, v)| n == LABEL && !v.is_empty()) {
        return;
    }
    let value = SOURCES
        .iter()
        .find_map(|source| {
            pairs
                .iter()
                .find(|(n, v)| n == source && !v.is_empty())
                .map(|(_, v)| v.clone())
        })
        .unwrap_or_else(|| UNKNOWN.to_owned());
    pairs.retain(|(n, _)| n != LABEL);
    pairs.push((LABEL.to_owned(), value));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(labels: &[(&str, &str)]) -> String {
        let mut pairs: Vec<(String, String)> = labels
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        discover(&mut pairs);
        pairs.into_iter().find(|(n, _)| n == LABEL).unwrap().1
    }

    #[test]
    fn the_first_known_label_wins() {
        assert_eq!(of(&[("container_name", "nginx"), ("app", "shop")]), "shop");
        assert_eq!(
            of(&[
                ("container_name", "nginx"),
                ("app_kubernetes_io_name", "cart")
            ]),
            "cart"
        );
        assert_eq!(of(&[("container_name", "nginx")]), "nginx");
        assert_eq!(of(&[("service_name", "given"), ("app", "x")]), "given");
        assert_eq!(of(&[("path", "/var/log/a.log")]), UNKNOWN);
        assert_eq!(of(&[("app", "")]), UNKNOWN, "an empty label is no label");
    }
}
