//! The HTTP API: `POST /orders`, `GET /orders/{id}`, `GET /healthz`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use payment_api::{AuthorizeRequest, END_USER_METADATA, VERSION_METADATA};
use serde::{Deserialize, Serialize};
use tonic::metadata::{AsciiMetadataValue, MetadataMap};

use crate::payment::PaymentClient;

/// The currency every order is paid in.
const CURRENCY: &str = "USD";
/// Longest accepted item name, in characters.
const MAX_ITEM_CHARS: usize = 200;
/// The HTTP header whose value is forwarded to the payment service as `end-user` metadata.
const END_USER_HEADER: &str = "end-user";

/// The body of `POST /orders`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewOrder {
    item: String,
    amount_cents: i64,
}

/// An order, as `POST /orders` and `GET /orders/{id}` return it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Order {
    /// `ord-<n>`.
    pub id: String,
    /// What was ordered.
    pub item: String,
    /// The price, positive, in US cents.
    pub amount_cents: i64,
    /// `paid` once the payment is captured (only paid orders are kept).
    pub status: String,
    /// The payment service's id for the payment.
    pub payment_id: String,
    /// The `x-payment-version` of the payment service instance that authorized the
    /// payment, if it sent one.
    pub payment_version: Option<String>,
}

#[derive(Debug)]
struct Orders {
    payments: PaymentClient,
    next_id: AtomicU64,
    by_id: Mutex<HashMap<String, Order>>,
}

/// The order service's routes, calling the payment service through `payments`.
pub fn router(payments: PaymentClient) -> Router {
    let state = Arc::new(Orders {
        payments,
        next_id: AtomicU64::new(1),
        by_id: Mutex::new(HashMap::new()),
    });
    Router::new()
        .route("/orders", post(create_order))
        .route("/orders/{id}", get(get_order))
        .route("/healthz", get(healthz))
        .with_state(state)
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn get_order(
    State(orders): State<Arc<Orders>>,
    Path(id): Path<String>,
) -> Result<Json<Order>, ApiError> {
    let by_id = orders.by_id.lock().unwrap_or_else(PoisonError::into_inner);
    match by_id.get(&id) {
        Some(order) => Ok(Json(order.clone())),
        None => Err(ApiError::NotFound(format!("no order {id:?}"))),
    }
}

async fn create_order(
    State(orders): State<Arc<Orders>>,
    headers: HeaderMap,
    body: Result<Json<NewOrder>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(new) = body?;
    let item = new.item.trim();
    if item.is_empty() {
        return Err(ApiError::BadRequest("item must not be empty".into()));
    }
    if item.chars().count() > MAX_ITEM_CHARS {
        return Err(ApiError::BadRequest(format!(
            "item must be at most {MAX_ITEM_CHARS} characters"
        )));
    }
    if new.amount_cents <= 0 {
        return Err(ApiError::BadRequest(format!(
            "amount_cents must be positive, got {}",
            new.amount_cents
        )));
    }
    let end_user = end_user(&headers)?;

    let id = format!("ord-{}", orders.next_id.fetch_add(1, Ordering::Relaxed));
    let Paid {
        payment_id,
        payment_version,
    } = pay(
        orders.payments.clone(),
        id.clone(),
        new.amount_cents,
        end_user,
    )
    .await?;

    let order = Order {
        id: id.clone(),
        item: item.to_owned(),
        amount_cents: new.amount_cents,
        status: "paid".into(),
        payment_id,
        payment_version,
    };
    orders
        .by_id
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(id.clone(), order.clone());
    tracing::info!(order = %id, payment = %order.payment_id, version = ?order.payment_version, "order paid");
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/orders/{id}"))],
        Json(order),
    )
        .into_response())
}

/// A payment authorized and captured.
#[derive(Debug)]
struct Paid {
    payment_id: String,
    payment_version: Option<String>,
}

/// Authorizes and captures `amount_cents` for order `order_id` in one call, so one order
/// is one routing decision (a canary split counts orders, and a capture can never land on
/// a replica that does not hold the authorization).
async fn pay(
    mut payments: PaymentClient,
    order_id: String,
    amount_cents: i64,
    end_user: Option<AsciiMetadataValue>,
) -> Result<Paid, ApiError> {
    let sale = with_end_user(
        AuthorizeRequest {
            order_id,
            amount_cents,
            currency: CURRENCY.into(),
            capture: true,
        },
        end_user.as_ref(),
    );
    let paid = payments
        .authorize(sale)
        .await
        .map_err(|status| ApiError::payment("Authorize", status))?;
    let payment_version = version(paid.metadata());
    let payment_id = paid.into_inner().payment_id;
    Ok(Paid {
        payment_id,
        payment_version,
    })
}

/// The caller's `end-user` header as gRPC metadata, if it sent one.
fn end_user(headers: &HeaderMap) -> Result<Option<AsciiMetadataValue>, ApiError> {
    match headers.get(END_USER_HEADER) {
        None => Ok(None),
        // `to_str` insists on visible ASCII; the metadata conversion alone would let
        // obs-text bytes through.
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|text| AsciiMetadataValue::try_from(text).ok())
            .map(Some)
            .ok_or_else(|| {
                ApiError::BadRequest("the end-user header must be visible ASCII".into())
            }),
    }
}

fn with_end_user<T>(message: T, end_user: Option<&AsciiMetadataValue>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(end_user) = end_user {
        request
            .metadata_mut()
            .insert(END_USER_METADATA, end_user.clone());
    }
    request
}

fn version(metadata: &MetadataMap) -> Option<String> {
    metadata
        .get(VERSION_METADATA)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Why a request failed, and the response it gets:
///
/// | variant | status | body |
/// |---|---|---|
/// | `BadRequest` | 400 (415 without a JSON content type) | `{"error"}` |
/// | `NotFound` | 404 | `{"error"}` |
/// | `Payment` | 502 | `{"error", "grpc_status", "payment_version"}` |
#[derive(Debug)]
enum ApiError {
    BadRequest(String),
    /// The body is over the limit (axum's default, 2 MiB).
    PayloadTooLarge(String),
    UnsupportedMediaType(String),
    NotFound(String),
    Payment {
        call: &'static str,
        status: tonic::Status,
    },
}

impl ApiError {
    fn payment(call: &'static str, status: tonic::Status) -> Self {
        tracing::warn!(
            call,
            code = grpc_code_name(status.code()),
            message = status.message(),
            "payment call failed"
        );
        Self::Payment { call, status }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::MissingJsonContentType(_) => {
                Self::UnsupportedMediaType(rejection.body_text())
            }
            _ if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Self::PayloadTooLarge(rejection.body_text())
            }
            _ => Self::BadRequest(rejection.body_text()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = match self {
            Self::BadRequest(error) => (
                StatusCode::BAD_REQUEST,
                serde_json::json!({ "error": error }),
            ),
            Self::PayloadTooLarge(error) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                serde_json::json!({ "error": error }),
            ),
            Self::UnsupportedMediaType(error) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                serde_json::json!({ "error": error }),
            ),
            Self::NotFound(error) => (StatusCode::NOT_FOUND, serde_json::json!({ "error": error })),
            Self::Payment { call, status } => {
                let code = grpc_code_name(status.code());
                (
                    StatusCode::BAD_GATEWAY,
                    serde_json::json!({
                        "error": format!("payment {call} failed with {code}: {}", status.message()),
                        "grpc_status": code,
                        "payment_version": version(status.metadata()),
                    }),
                )
            }
        };
        (status, Json(body)).into_response()
    }
}

/// The canonical name of a gRPC status code, as in the gRPC spec (`UNAVAILABLE`).
fn grpc_code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_names_follow_the_spec() {
        assert_eq!(grpc_code_name(tonic::Code::Unavailable), "UNAVAILABLE");
        assert_eq!(grpc_code_name(tonic::Code::from(16)), "UNAUTHENTICATED");
        assert_eq!(grpc_code_name(tonic::Code::from(99)), "UNKNOWN");
    }

    #[test]
    fn non_ascii_end_user_is_a_bad_request() {
        let mut headers = HeaderMap::new();
        let value = match axum::http::HeaderValue::from_bytes(b"j\xe4son") {
            Ok(v) => v,
            Err(e) => panic!("{e}"),
        };
        headers.insert(END_USER_HEADER, value);
        assert!(matches!(end_user(&headers), Err(ApiError::BadRequest(_))));
        assert!(matches!(end_user(&HeaderMap::new()), Ok(None)));
    }
}
