//! Sending one batch: an HTTP POST, and what its answer means — delivered,
//! worth retrying (down, 429, 5xx; `Retry-After` honoured), or refused for
//! good (another 4xx: the batch is dropped and counted). The backoff
//! between tries doubles from 250 ms to 30 s, with jitter so that a
//! cluster's nodes do not retry in step.

use std::path::Path;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER};
use axum::http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_rustls::ConfigBuilderExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::ForwardError;
use crate::outbound::{describe, roots_from, tls_client};

/// Where and how a sink posts.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// The full URL posted to.
    pub url: Uri,
    /// Headers sent with every request (auth, tenant).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// How long one request may take.
    pub timeout: Duration,
    /// A PEM CA for the receiver's certificate (else the system's roots).
    pub ca_file: Option<std::path::PathBuf>,
}

/// What became of one try.
#[derive(Debug)]
pub enum Sent {
    /// The receiver took it; its answer's body.
    Delivered(Bytes),
    /// Not now: try again (after the receiver's `Retry-After`, if any).
    Retry {
        /// The receiver's wish.
        after: Option<Duration>,
        /// What went wrong.
        error: String,
    },
    /// Never: the receiver refused the batch itself.
    Rejected {
        /// Its status.
        status: StatusCode,
        /// Its message.
        message: String,
    },
}

/// An HTTP client for one receiver.
pub struct Http {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl Http {
    /// A client trusting `ca_file`, or the system's roots.
    pub fn new(ca_file: Option<&Path>) -> Result<Self, ForwardError> {
        let builder = tls_client().map_err(ForwardError::Tls)?;
        let config = match ca_file {
            Some(path) => {
                builder.with_root_certificates(roots_from(path).map_err(ForwardError::Tls)?)
            }
            None => builder
                .with_native_roots()
                .map_err(|e| ForwardError::Tls(format!("the system's CA certificates: {e}")))?,
        }
        .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Ok(Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// Posts `body` to `endpoint` once.
    pub async fn post(
        &self,
        endpoint: &Endpoint,
        content_type: &'static str,
        encoding: Option<&'static str>,
        body: Bytes,
    ) -> Sent {
        let mut request = Request::post(endpoint.url.clone()).header(CONTENT_TYPE, content_type);
        if let Some(encoding) = encoding {
            request = request.header(CONTENT_ENCODING, encoding);
        }
        for (name, value) in &endpoint.headers {
            request = request.header(name, value);
        }
        let request = match request.body(Full::new(body)) {
            Ok(r) => r,
            Err(e) => {
                return Sent::Rejected {
                    status: StatusCode::BAD_REQUEST,
                    message: format!("cannot build the request: {e}"),
                };
            }
        };
        let answer = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| describe(&e))?;
            let status = response.status();
            let after = retry_after(response.headers().get(RETRY_AFTER));
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| describe(&e))?
                .to_bytes();
            Ok::<_, String>((status, after, body))
        };
        match tokio::time::timeout(endpoint.timeout, answer).await {
            Err(_) => Sent::Retry {
                after: None,
                error: format!(
                    "no answer within {}",
                    humantime::format_duration(endpoint.timeout)
                ),
            },
            Ok(Err(error)) => Sent::Retry { after: None, error },
            Ok(Ok((status, after, body))) => classify(status, after, body),
        }
    }
}

/// What an answer means.
fn classify(status: StatusCode, after: Option<Duration>, body: Bytes) -> Sent {
    let message = || {
        let text = String::from_utf8_lossy(&body);
        let text = text.trim();
        format!("{status}: {}", text.chars().take(300).collect::<String>())
    };
    if status.is_success() {
        Sent::Delivered(body)
    } else if status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || status.is_server_error()
    {
        Sent::Retry {
            after,
            error: message(),
        }
    } else {
        Sent::Rejected {
            status,
            message: message(),
        }
    }
}

/// `Retry-After` in seconds or as an HTTP date, at most 5 minutes.
fn retry_after(value: Option<&HeaderValue>) -> Option<Duration> {
    let text = value?.to_str().ok()?.trim();
    let wait = match text.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => httpdate::parse_http_date(text)
            .ok()?
            .duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    };
    Some(wait.min(Duration::from_secs(300)))
}

/// The wait before try `attempt` (1-based): 250 ms doubling to 30 s, ±20 %.
pub fn backoff(attempt: u32) -> Duration {
    let base = 250u64
        .saturating_mul(1 << attempt.saturating_sub(1).min(7))
        .min(30_000);
    // Cheap jitter from the clock's low bits: no randomness crate needed.
    let noise = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0) as u64
        % 401;
    Duration::from_millis(base * (800 + noise) / 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_delivered_retried_or_rejected() {
        let body = || Bytes::from_static(b"nope");
        assert!(matches!(
            classify(StatusCode::NO_CONTENT, None, body()),
            Sent::Delivered(_)
        ));
        assert!(matches!(
            classify(StatusCode::TOO_MANY_REQUESTS, Some(Duration::from_secs(3)), body()),
            Sent::Retry { after: Some(d), .. } if d == Duration::from_secs(3)
        ));
        assert!(matches!(
            classify(StatusCode::BAD_GATEWAY, None, body()),
            Sent::Retry { .. }
        ));
        assert!(matches!(
            classify(StatusCode::BAD_REQUEST, None, body()),
            Sent::Rejected { .. }
        ));
        let v = HeaderValue::from_static("7");
        assert_eq!(retry_after(Some(&v)), Some(Duration::from_secs(7)));
        assert!(backoff(1) <= Duration::from_millis(300) && backoff(20) <= Duration::from_secs(36));
    }
}
