//! What a container log's path says about its pod.
//!
//! `/var/log/containers/<pod>_<namespace>_<container>-<64 hex id>.log` is a
//! symlink to `/var/log/pods/<namespace>_<pod>_<uid>/<container>/<n>.log`.
//! The first can be truncated to 255 characters, cutting off the id or more;
//! the second then still names namespace, pod, uid and container.

use std::path::Path;

/// Who wrote a log file, as far as its path tells.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileIdentity {
    /// Namespace.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// Container name.
    pub container: String,
    /// The runtime's container id, when the name carries it whole.
    pub container_id: Option<String>,
    /// The pod's UID, when the target path is known.
    pub pod_uid: Option<String>,
}

/// Parses `<pod>_<namespace>_<container>-<64 hex>.log`.
pub fn parse_container_link(name: &str) -> Option<FileIdentity> {
    let stem = name.strip_suffix(".log")?;
    let (rest, id) = stem.rsplit_once('-')?;
    if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    // Pod and namespace names cannot contain '_' (DNS names); containers can't either.
    let mut parts = rest.splitn(3, '_');
    let (pod, namespace, container) = (parts.next()?, parts.next()?, parts.next()?);
    if pod.is_empty() || namespace.is_empty() || container.is_empty() || container.contains('_') {
        return None;
    }
    Some(FileIdentity {
        namespace: namespace.to_owned(),
        pod: pod.to_owned(),
        container: container.to_owned(),
        container_id: Some(id.to_owned()),
        pod_uid: None,
    })
}

/// Parses `.../pods/<namespace>_<pod>_<uid>/<container>/<n>.log[.<rotation>]`.
pub fn parse_pod_path(path: &Path) -> Option<FileIdentity> {
    let mut components = path.iter().rev();
    let file = components.next()?.to_str()?;
    if !file.contains(".log") {
        return None;
    }
    let container = components.next()?.to_str()?;
    let pod_dir = components.next()?.to_str()?;
    let mut parts = pod_dir.splitn(3, '_');
    let (namespace, pod, uid) = (parts.next()?, parts.next()?, parts.next()?);
    if namespace.is_empty() || pod.is_empty() || uid.is_empty() {
        return None;
    }
    Some(FileIdentity {
        namespace: namespace.to_owned(),
        pod: pod.to_owned(),
        container: container.to_owned(),
        container_id: None,
        pod_uid: Some(uid.to_owned()),
    })
}

/// The identity of the file at `path` (under `/var/log/containers`): from its
/// name, or from where its symlink points when the name does not parse.
pub fn identify(path: &Path) -> Option<FileIdentity> {
    let from_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(parse_container_link);
    let target = std::fs::read_link(path).ok();
    let from_target = target.as_deref().and_then(parse_pod_path);
    match (from_name, from_target) {
        (Some(mut name), Some(target)) => {
            name.pod_uid = target.pod_uid;
            Some(name)
        }
        (Some(name), None) => Some(name),
        (None, target) => target.or_else(|| parse_pod_path(path)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn container_links() {
        let f = parse_container_link(&format!("web-7d9f-x2k_default_nginx-{ID}.log")).unwrap();
        assert_eq!(
            (f.pod.as_str(), f.namespace.as_str(), f.container.as_str()),
            ("web-7d9f-x2k", "default", "nginx")
        );
        assert_eq!(f.container_id.as_deref(), Some(ID));
        assert!(
            parse_container_link("web_default_nginx-abc.log").is_none(),
            "short id"
        );
        assert!(
            parse_container_link(&format!("web_default-{ID}.log")).is_none(),
            "no container"
        );
        assert!(parse_container_link("random.log").is_none());
        assert!(parse_container_link(&format!("web_default_nginx-{ID}.txt")).is_none());
    }

    #[test]
    fn pod_paths_and_truncated_names() {
        let p = Path::new(
            "/var/log/pods/kube-system_coredns-5d78_8a1c2b3d-aaaa-bbbb/coredns/0.log.20240101-120000",
        );
        let f = parse_pod_path(p).unwrap();
        assert_eq!(
            (f.namespace.as_str(), f.pod.as_str(), f.container.as_str()),
            ("kube-system", "coredns-5d78", "coredns")
        );
        assert_eq!(f.pod_uid.as_deref(), Some("8a1c2b3d-aaaa-bbbb"));

        let dir = tempfile::tempdir().unwrap();
        let pods = dir.path().join("pods/ns_a-very-long-pod_uid-1/app");
        std::fs::create_dir_all(&pods).unwrap();
        std::fs::write(pods.join("0.log"), "").unwrap();
        // A name truncated by the 255-character limit: the target still tells.
        let link = dir.path().join("a-very-long-pod_ns_ap");
        std::os::unix::fs::symlink(pods.join("0.log"), &link).unwrap();
        let f = identify(&link).unwrap();
        assert_eq!(
            (f.namespace.as_str(), f.pod.as_str(), f.container.as_str()),
            ("ns", "a-very-long-pod", "app")
        );
        let good = dir.path().join(format!("a-very-long-pod_ns_app-{ID}.log"));
        std::os::unix::fs::symlink(pods.join("0.log"), &good).unwrap();
        let f = identify(&good).unwrap();
        assert_eq!(
            (f.container_id.as_deref(), f.pod_uid.as_deref()),
            (Some(ID), Some("uid-1"))
        );
        assert!(identify(&dir.path().join("nothing.log")).is_none());
    }
}
