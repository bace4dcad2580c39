//! A small HTTP client of the order service, used by the `order-client` binary and the
//! tests: it posts orders and tallies the answers.

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::Order;

/// Talking to the order service failed before an HTTP answer came back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The base URL is not `http://HOST:PORT`.
    #[error("bad order-service URL {url:?}: expected http://HOST:PORT")]
    BadUrl {
        /// The URL given.
        url: String,
    },
    /// The request could not be built (a bad path or header).
    #[error("cannot build the request: {0}")]
    Request(#[from] http::Error),
    /// Connecting or sending failed.
    #[error("request failed: {0}")]
    Send(#[from] hyper_util::client::legacy::Error),
    /// Reading the response body failed.
    #[error("cannot read the response: {0}")]
    Body(#[from] hyper::Error),
}

/// An HTTP answer.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Reply {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

impl Reply {
    /// The body parsed as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> serde_json::Result<T> {
        serde_json::from_slice(&self.body)
    }
}

/// An HTTP/1.1 client bound to one order-service base URL, with `TCP_NODELAY` sockets.
#[derive(Debug, Clone)]
pub struct OrderClient {
    base: Uri,
    http: Client<HttpConnector, Full<Bytes>>,
}

impl OrderClient {
    /// A client of the order service at `base_url` (`http://HOST:PORT`).
    pub fn new(base_url: &str) -> Result<Self, ClientError> {
        let bad = || ClientError::BadUrl {
            url: base_url.to_owned(),
        };
        let base: Uri = base_url.trim_end_matches('/').parse().map_err(|_| bad())?;
        let plain_origin = base.scheme_str() == Some("http")
            && base.authority().is_some()
            && matches!(base.path(), "" | "/")
            && base.query().is_none();
        if !plain_origin {
            return Err(bad());
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let http = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Self { base, http })
    }

    /// Sends `method path` with `headers` and `body` (a JSON content type is set when
    /// there is a body) and reads the whole answer.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Bytes>,
    ) -> Result<Reply, ClientError> {
        let mut uri = Uri::builder().path_and_query(path);
        if let (Some(scheme), Some(authority)) = (self.base.scheme(), self.base.authority()) {
            uri = uri.scheme(scheme.clone()).authority(authority.clone());
        }
        let mut request = http::Request::builder().method(method).uri(uri.build()?);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = match body {
            Some(body) => request
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Full::new(body))?,
            None => request.body(Full::new(Bytes::new()))?,
        };
        let response = self.http.request(request).await?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    /// `POST /orders` for `item` at `amount_cents`, as `end_user` if given.
    pub async fn create_order(
        &self,
        item: &str,
        amount_cents: i64,
        end_user: Option<&str>,
    ) -> Result<Reply, ClientError> {
        let body = serde_json::json!({ "item": item, "amount_cents": amount_cents });
        let headers: Vec<(&str, &str)> = end_user.map(|u| ("end-user", u)).into_iter().collect();
        self.send(
            Method::POST,
            "/orders",
            &headers,
            Some(Bytes::from(body.to_string())),
        )
        .await
    }
}

/// The outcome of posting a batch of orders.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Orders created, by `payment_version` (`"none"` when the order has none).
    pub created: BTreeMap<String, usize>,
    /// Orders refused, by HTTP status and, when given, gRPC status (`"502 UNAVAILABLE"`),
    /// or `"no response"` when the request got no HTTP answer.
    pub failed: BTreeMap<String, usize>,
}

impl Summary {
    /// Counts one attempt.
    pub fn record(&mut self, outcome: &Result<Reply, ClientError>) {
        let key = match outcome {
            Ok(reply) if reply.status == StatusCode::CREATED => {
                let version = reply
                    .json::<Order>()
                    .ok()
                    .and_then(|o| o.payment_version)
                    .unwrap_or_else(|| "none".into());
                *self.created.entry(version).or_default() += 1;
                return;
            }
            Ok(reply) => {
                let grpc = reply
                    .json::<serde_json::Value>()
                    .ok()
                    .and_then(|v| v.get("grpc_status")?.as_str().map(str::to_owned));
                match grpc {
                    Some(grpc) => format!("{} {grpc}", reply.status.as_u16()),
                    None => reply.status.as_u16().to_string(),
                }
            }
            Err(_) => "no response".to_owned(),
        };
        *self.failed.entry(key).or_default() += 1;
    }

    /// Orders created.
    pub fn created_total(&self) -> usize {
        self.created.values().sum()
    }

    /// Orders refused or unanswered.
    pub fn failed_total(&self) -> usize {
        self.failed.values().sum()
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (created, failed) = (self.created_total(), self.failed_total());
        writeln!(
            f,
            "orders: {} sent, {created} created, {failed} failed",
            created + failed
        )?;
        if created > 0 {
            writeln!(f, "created by payment_version:")?;
            for (version, n) in &self.created {
                writeln!(f, "  {version}: {n}")?;
            }
        }
        if failed > 0 {
            writeln!(f, "failed:")?;
            for (why, n) in &self.failed {
                writeln!(f, "  {why}: {n}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_origins_are_accepted() {
        assert!(OrderClient::new("http://127.0.0.1:8081").is_ok());
        assert!(OrderClient::new("http://order-service:8081/").is_ok());
        for bad in [
            "127.0.0.1:8081",
            "https://x:1",
            "http://x:1/orders",
            "not a url",
        ] {
            assert!(OrderClient::new(bad).is_err(), "{bad}");
        }
    }

    fn reply(status: u16, body: &str) -> Result<Reply, ClientError> {
        Ok(Reply {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            headers: HeaderMap::new(),
            body: Bytes::from(body.to_owned()),
        })
    }

    #[test]
    fn summary_counts_by_version_and_failure() {
        let order = |v: &str| {
            format!(
                r#"{{"id":"ord-1","item":"x","amount_cents":1,"status":"paid","payment_id":"pay-1","payment_version":"{v}"}}"#
            )
        };
        let mut summary = Summary::default();
        summary.record(&reply(201, &order("v1")));
        summary.record(&reply(201, &order("v1")));
        summary.record(&reply(201, &order("v2")));
        summary.record(&reply(502, r#"{"error":"x","grpc_status":"UNAVAILABLE"}"#));
        summary.record(&reply(400, r#"{"error":"x"}"#));
        assert_eq!(summary.created.get("v1"), Some(&2));
        assert_eq!(summary.created.get("v2"), Some(&1));
        assert_eq!(summary.failed.get("502 UNAVAILABLE"), Some(&1));
        assert_eq!(summary.failed.get("400"), Some(&1));
        let text = summary.to_string();
        assert!(
            text.starts_with("orders: 5 sent, 3 created, 2 failed"),
            "{text}"
        );
    }
}
