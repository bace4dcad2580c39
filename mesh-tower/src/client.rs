//! Calling other services through the mesh, for the common case: [`Mesh::get`],
//! [`Mesh::post`] and [`Mesh::request`] build a request to a logical target, send it
//! through the outbound client (routing, load balancing, retries, timeouts, circuit
//! breaking, mTLS, trace context) and hand back a [`MeshResponse`], or a typed
//! [`ClientError`] when the mesh answered the call itself (an open circuit, no healthy
//! endpoint, a timeout...), so callers match on a [`MeshError`] instead of parsing headers.
//!
//! ```no_run
//! use mesh_tower::client::ClientError;
//! use mesh_tower::MeshError;
//!
//! # async fn run(mesh: mesh_tower::Mesh) -> Result<(), Box<dyn std::error::Error>> {
//! match mesh.get("http://inventory:8080/items/42").send().await {
//!     Ok(response) if response.status().is_success() => {
//!         let item: serde_json::Value = response.json().await?;
//!         println!("{item}");
//!     }
//!     Ok(response) => println!("inventory said {}", response.status()),
//!     Err(ClientError::Mesh(MeshError::CircuitOpen { cluster, .. })) => {
//!         println!("{cluster} is overloaded; try later");
//!     }
//!     Err(other) => return Err(other.into()),
//! }
//! # Ok(())
//! # }
//! ```
//!
//! For streaming bodies, HTTP/2 specifics or a tower stack of your own, use
//! [`Mesh::http_client`] (a `tower::Service`) directly; [`MeshResponseExt::mesh_error`]
//! reads the same typed error off any response it returns.

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use tower::ServiceExt;

use crate::body::BoxError;
use crate::outbound::ResponseBody;
use crate::{Mesh, MeshError};

/// Why a call made with [`RequestBuilder::send`] gave no upstream response.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The mesh answered the call itself: no route, an open circuit, no healthy endpoint,
    /// a timeout, a failed connection, an injected fault. The HTTP status a plain client
    /// would have seen is [`MeshError::http_status`].
    #[error(transparent)]
    Mesh(MeshError),
    /// The request could not be built (a bad URI, header name or value).
    #[error("invalid request: {0}")]
    InvalidRequest(#[source] http::Error),
    /// The request body could not be encoded as JSON.
    #[error("request body: {0}")]
    Encode(#[source] serde_json::Error),
    /// The response body failed while it was read.
    #[error("response body: {0}")]
    Body(#[source] BoxError),
    /// The response body is not the JSON asked for.
    #[error("response body is not the expected JSON: {0}")]
    Decode(#[source] serde_json::Error),
    /// The response body is not UTF-8.
    #[error("response body is not UTF-8: {0}")]
    Utf8(#[source] std::string::FromUtf8Error),
    /// The client failed otherwise.
    #[error("{0}")]
    Other(BoxError),
}

impl ClientError {
    /// The mesh's error, when the mesh answered the call itself.
    pub fn mesh_error(&self) -> Option<&MeshError> {
        match self {
            Self::Mesh(e) => Some(e),
            _ => None,
        }
    }
}

/// Reads the mesh's typed error off a response of [`Mesh::http_client`] or
/// [`Mesh::channel`].
pub trait MeshResponseExt {
    /// The error the mesh answered with, if it answered the call itself; also set (as
    /// [`MeshError::RetryBudgetExhausted`]) on an upstream failure returned when the
    /// retry budget allowed no retry.
    fn mesh_error(&self) -> Option<&MeshError>;
}

impl<B> MeshResponseExt for Response<B> {
    fn mesh_error(&self) -> Option<&MeshError> {
        self.extensions().get::<MeshError>()
    }
}

/// A request being built; see the [module docs](self).
#[derive(Debug)]
#[must_use = "a request does nothing until it is sent"]
pub struct RequestBuilder {
    mesh: Mesh,
    request: Result<http::request::Builder, http::Error>,
    body: Result<Bytes, ClientError>,
}

impl RequestBuilder {
    fn new(mesh: Mesh, method: Method, uri: &str) -> Self {
        let request = Uri::try_from(uri)
            .map_err(http::Error::from)
            .map(|uri| Request::builder().method(method).uri(uri));
        Self {
            mesh,
            request,
            body: Ok(Bytes::new()),
        }
    }

    /// Adds a header.
    pub fn header<K, V>(mut self, name: K, value: V) -> Self
    where
        HeaderName: TryFrom<K>,
        <HeaderName as TryFrom<K>>::Error: Into<http::Error>,
        HeaderValue: TryFrom<V>,
        <HeaderValue as TryFrom<V>>::Error: Into<http::Error>,
    {
        self.request = self.request.map(|r| r.header(name, value));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = Ok(body.into());
        self
    }

    /// Sets a JSON body (and `content-type: application/json`).
    pub fn json<T: serde::Serialize + ?Sized>(mut self, value: &T) -> Self {
        self.body = serde_json::to_vec(value)
            .map(Bytes::from)
            .map_err(ClientError::Encode);
        self.request = self
            .request
            .map(|r| r.header(CONTENT_TYPE, "application/json"));
        self
    }

    /// Sends it through the mesh. `Ok` with whatever the upstream answered (any status);
    /// `Err(ClientError::Mesh(..))` when the mesh answered itself.
    pub async fn send(self) -> Result<MeshResponse, ClientError> {
        let body = self.body?;
        let request = self
            .request
            .and_then(|r| r.body(Full::new(body)))
            .map_err(ClientError::InvalidRequest)?;
        let response = self
            .mesh
            .http_client::<Full<Bytes>>()
            .oneshot(request)
            .await
            .map_err(ClientError::Other)?;
        match response.mesh_error() {
            // The upstream's own failure, with a note that no retry was allowed.
            None | Some(MeshError::RetryBudgetExhausted(_)) => Ok(MeshResponse(response)),
            Some(error) => Err(ClientError::Mesh(error.clone())),
        }
    }
}

/// An upstream's response to a call sent with [`RequestBuilder::send`].
#[derive(Debug)]
pub struct MeshResponse(Response<ResponseBody>);

impl MeshResponse {
    /// The status.
    pub fn status(&self) -> StatusCode {
        self.0.status()
    }

    /// The headers.
    pub fn headers(&self) -> &http::HeaderMap {
        self.0.headers()
    }

    /// The whole body.
    pub async fn bytes(self) -> Result<Bytes, ClientError> {
        self.0
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .map_err(ClientError::Body)
    }

    /// The whole body as text.
    pub async fn text(self) -> Result<String, ClientError> {
        let bytes = self.bytes().await?;
        String::from_utf8(bytes.to_vec()).map_err(ClientError::Utf8)
    }

    /// The whole body, decoded from JSON.
    pub async fn json<T: serde::de::DeserializeOwned>(self) -> Result<T, ClientError> {
        let bytes = self.bytes().await?;
        serde_json::from_slice(&bytes).map_err(ClientError::Decode)
    }

    /// The response itself (streaming body, extensions).
    pub fn into_inner(self) -> Response<ResponseBody> {
        self.0
    }
}

impl Mesh {
    /// Starts a request to `uri` (`http://payment-service:8080/path`: the authority is the
    /// logical target the policy routes).
    pub fn request(&self, method: Method, uri: &str) -> RequestBuilder {
        RequestBuilder::new(self.clone(), method, uri)
    }

    /// Starts a GET request.
    pub fn get(&self, uri: &str) -> RequestBuilder {
        self.request(Method::GET, uri)
    }

    /// Starts a POST request.
    pub fn post(&self, uri: &str) -> RequestBuilder {
        self.request(Method::POST, uri)
    }
}
