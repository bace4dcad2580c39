//! The `payment.v1` gRPC API of the example services, generated from
//! `proto/payment/v1/payment.proto` at build time without `protoc` (the file is compiled
//! by `protox`, the Rust code by `tonic-prost-build`).
//!
//! It holds the messages, the client and the server trait; the example
//! `payment-service` implements the server, `order-service` uses the client.
//!
//! ```
//! use payment_api::{AuthorizeRequest, PaymentStatus};
//!
//! let request = AuthorizeRequest {
//!     order_id: "ord-1".into(),
//!     amount_cents: 1250,
//!     currency: "USD".into(),
//!     capture: false,
//! };
//! assert_eq!(request.amount_cents, 1250);
//! assert_eq!(PaymentStatus::Captured.as_str_name(), "PAYMENT_STATUS_CAPTURED");
//! ```
#![forbid(unsafe_code)]

/// The generated code of package `payment.v1`.
#[allow(missing_debug_implementations, clippy::all)]
pub mod v1 {
    tonic::include_proto!("payment.v1");
}

pub use v1::payment_service_client::PaymentServiceClient;
pub use v1::payment_service_server::{PaymentService, PaymentServiceServer};
pub use v1::{
    AuthorizeRequest, AuthorizeResponse, CaptureRequest, CaptureResponse, GetPaymentRequest,
    ListPaymentsRequest, Payment, PaymentStatus,
};

/// Response metadata key under which the payment service reports its version (`v1`, `v2`).
pub const VERSION_METADATA: &str = "x-payment-version";

/// Request metadata key carrying the end user a call is made for; forwarded by the
/// order service from its callers' `end-user` HTTP header.
pub const END_USER_METADATA: &str = "end-user";
