//! HTTPS with the kubelet's flags: the real binary serves the given
//! certificate, and a rotated one (new files in place, as cert-manager
//! renews a Secret) from the next connection on, without a restart.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls_pki_types::{CertificateDer, ServerName};
use testkit::daemon::DaemonCommand;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 10);

/// A self-signed certificate for `IP`, written to `dir`; its DER.
fn certificate(dir: &Path) -> CertificateDer<'static> {
    let key = rcgen::generate_simple_self_signed(vec![IP.to_string()]).unwrap();
    // Written whole and renamed into place, as a Secret volume updates.
    let (cert_tmp, key_tmp) = (dir.join("tls.crt.new"), dir.join("tls.key.new"));
    std::fs::write(&cert_tmp, key.cert.pem()).unwrap();
    std::fs::write(&key_tmp, key.signing_key.serialize_pem()).unwrap();
    std::fs::rename(key_tmp, dir.join("tls.key")).unwrap();
    std::fs::rename(cert_tmp, dir.join("tls.crt")).unwrap();
    key.cert.der().clone()
}

/// `GET /ready` over TLS trusting only `trusted`: the status line and the
/// certificate the server presented.
async fn ready(
    port: u16,
    trusted: &CertificateDer<'static>,
) -> Option<(String, CertificateDer<'static>)> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trusted.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect((IP, port)).await.unwrap();
    // A handshake fails while the server still presents another certificate.
    let mut tls = connector
        .connect(ServerName::IpAddress(IpAddr::V4(IP).into()), tcp)
        .await
        .ok()?;
    let presented = tls.get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned();
    tls.write_all(b"GET /ready HTTP/1.1\r\nHost: monitoring-rs\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tls.read_to_string(&mut answer).await.unwrap();
    Some((answer.lines().next().unwrap_or("").to_owned(), presented))
}

#[test]
fn serves_https_and_picks_up_a_rotated_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let first = certificate(dir.path());
    let daemon = DaemonCommand::new(env!("CARGO_BIN_EXE_monitoring-rs"))
        .args(["--log-collector", "directory"])
        .flag("--root-path", &logs)
        .flag("--data-directory", dir.path().join("data"))
        .flag("--tls-cert-file", dir.path().join("tls.crt"))
        .flag("--tls-private-key-file", dir.path().join("tls.key"))
        .on(IpAddr::V4(IP))
        .quiet()
        .start();
    let port = daemon.address().port();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let (status, presented) = ready(port, &first).await.expect("a handshake");
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert_eq!(presented, first);
        // Plain HTTP gets no answer from a TLS port.
        assert!(testkit::daemon::get(daemon.address(), "/ready").is_none_or(|(s, _)| s != 200));
        // Rotation: new files in place; the next connection sees them.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let second = certificate(dir.path());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some((status, presented)) = ready(port, &second).await
                && presented == second
            {
                assert_eq!(status, "HTTP/1.1 200 OK");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the rotated certificate was never served"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    assert!(daemon.terminate().success());
}
