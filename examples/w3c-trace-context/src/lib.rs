//! The service contract of the W3C trace-context test suite (github.com/w3c/trace-context,
//! `test/`), served with the mesh. The suite posts to `/test` a JSON array of
//! `{"url": ..., "arguments": [...]}`; for each element, in order, this service posts
//! `arguments` (as JSON) to `url` through the mesh's HTTP client. It has no trace code:
//! the `traceparent`, `tracestate`, `baggage`, B3 and `x-request-id` headers of each call
//! are the mesh's ([`mesh_tower::trace`]), continuing the context of the `/test` request.
//!
//! | request | response |
//! |---|---|
//! | `POST /test` with the array | 200 `{"calls": n}` once every call answered; 502 with `{"failed": [...]}` if some did not; 400 on a body that is not the array |
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! w3c_trace_context::run(listener, std::future::pending()).await?;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

use std::future::Future;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use mesh_tower::outbound::HttpClient;
use mesh_tower::Mesh;
use serde::Deserialize;
use tokio::net::TcpListener;
use tower::ServiceExt;

/// One call the suite asks for.
#[derive(Debug, Clone, Deserialize)]
pub struct Action {
    /// Where to post.
    pub url: String,
    /// The JSON body to post (the suite's nested instructions).
    #[serde(default)]
    pub arguments: serde_json::Value,
}

/// The service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The HTTP server failed.
    #[error("HTTP server failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// The `/test` route, calling out through `mesh`'s client, with the mesh's inbound stack
/// ([`Mesh::layer`]: trace context, metrics, authorization) applied per route, so server
/// spans are named by route.
pub fn router(mesh: &Mesh) -> Router {
    Router::new()
        .route("/test", post(test))
        .with_state(mesh.http_client::<Full<Bytes>>())
        .layer(mesh.layer())
}

/// Serves the contract on `listener` with the mesh's defaults until `shutdown` resolves.
pub async fn run(
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let mesh = Mesh::with_defaults();
    let app = router(&mesh);
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "w3c-trace-context listening");
    }
    mesh.listener(listener)
        .serve(app, shutdown)
        .await
        .map_err(Error::Serve)
}

async fn test(
    State(client): State<HttpClient<Full<Bytes>>>,
    Json(actions): Json<Vec<Action>>,
) -> (StatusCode, Json<serde_json::Value>) {
    let mut failed = Vec::new();
    for action in &actions {
        if let Err(error) = call(&client, action).await {
            tracing::warn!(url = %action.url, %error, "callback failed");
            failed.push(serde_json::json!({"url": action.url, "error": error}));
        }
    }
    if failed.is_empty() {
        (
            StatusCode::OK,
            Json(serde_json::json!({"calls": actions.len()})),
        )
    } else {
        (
            StatusCode::BAD_GATEWAY,
            Json(serde_json::json!({"failed": failed})),
        )
    }
}

/// Posts `action.arguments` to `action.url` and reads the answer to its end.
async fn call(client: &HttpClient<Full<Bytes>>, action: &Action) -> Result<(), String> {
    let body = serde_json::to_vec(&action.arguments).map_err(|e| e.to_string())?;
    let request = http::Request::post(action.url.as_str())
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let response = client
        .clone()
        .oneshot(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("answered {status}"))
    }
}
