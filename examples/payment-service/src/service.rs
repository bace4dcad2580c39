use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use payment_api::{
    AuthorizeRequest, AuthorizeResponse, CaptureRequest, CaptureResponse, GetPaymentRequest,
    ListPaymentsRequest, Payment, PaymentService, PaymentStatus, END_USER_METADATA,
    VERSION_METADATA,
};
use tonic::metadata::AsciiMetadataValue;
use tonic::{Request, Response, Status};

use crate::{Config, FailRate};

/// The `PaymentService` implementation: payments in a map in memory, plus the injected
/// failures and latency of its [`Config`].
///
/// Every response, success or error, carries `x-payment-version`.
#[derive(Debug, Clone)]
pub struct Payments {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    version: AsciiMetadataValue,
    fail_rate: FailRate,
    latency: Duration,
    next_id: AtomicU64,
    payments: Mutex<HashMap<String, Payment>>,
}

impl Payments {
    /// An empty store behaving as `config` says.
    pub fn new(config: &Config) -> Self {
        Self {
            inner: Arc::new(Inner {
                version: AsciiMetadataValue::from_static(config.version.as_str()),
                fail_rate: config.fail_rate,
                latency: config.latency(),
                next_id: AtomicU64::new(1),
                payments: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Applies the injected latency and failure, shared by every method.
    async fn before_call(&self) -> Result<(), Status> {
        if !self.inner.latency.is_zero() {
            tokio::time::sleep(self.inner.latency).await;
        }
        let rate = self.inner.fail_rate.get();
        if rate > 0.0 && rand::random_bool(rate) {
            return Err(Status::unavailable("injected failure (--fail-rate)"));
        }
        Ok(())
    }

    fn with_version<T>(&self, result: Result<T, Status>) -> Result<Response<T>, Status> {
        match result {
            Ok(message) => {
                let mut response = Response::new(message);
                response
                    .metadata_mut()
                    .insert(VERSION_METADATA, self.inner.version.clone());
                Ok(response)
            }
            Err(mut status) => {
                status
                    .metadata_mut()
                    .insert(VERSION_METADATA, self.inner.version.clone());
                Err(status)
            }
        }
    }

    fn store(&self) -> std::sync::MutexGuard<'_, HashMap<String, Payment>> {
        // The map is always left consistent (single inserts and field updates), so a
        // panic elsewhere while holding the lock does not make it unusable.
        self.inner
            .payments
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn authorize(
        &self,
        end_user: String,
        req: AuthorizeRequest,
    ) -> Result<AuthorizeResponse, Status> {
        if req.order_id.trim().is_empty() {
            return Err(Status::invalid_argument("order_id must not be empty"));
        }
        if req.amount_cents <= 0 {
            return Err(Status::invalid_argument(format!(
                "amount_cents must be positive, got {}",
                req.amount_cents
            )));
        }
        if !is_currency_code(&req.currency) {
            return Err(Status::invalid_argument(format!(
                "currency must be three upper-case letters (ISO 4217), got {:?}",
                req.currency
            )));
        }
        let n = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let payment = Payment {
            payment_id: format!("pay-{n}"),
            order_id: req.order_id,
            amount_cents: req.amount_cents,
            currency: req.currency,
            status: if req.capture {
                PaymentStatus::Captured.into()
            } else {
                PaymentStatus::Authorized.into()
            },
            end_user,
        };
        let response = AuthorizeResponse {
            payment_id: payment.payment_id.clone(),
            status: payment.status,
        };
        self.store().insert(payment.payment_id.clone(), payment);
        Ok(response)
    }

    fn capture(&self, req: CaptureRequest) -> Result<CaptureResponse, Status> {
        let mut store = self.store();
        let payment = store
            .get_mut(&req.payment_id)
            .ok_or_else(|| not_found(&req.payment_id))?;
        // Authorized -> Captured; Captured stays Captured, so a retried Capture is safe.
        payment.status = PaymentStatus::Captured.into();
        Ok(CaptureResponse {
            payment_id: payment.payment_id.clone(),
            status: payment.status,
        })
    }

    fn get(&self, req: &GetPaymentRequest) -> Result<Payment, Status> {
        self.store()
            .get(&req.payment_id)
            .cloned()
            .ok_or_else(|| not_found(&req.payment_id))
    }
}

fn not_found(payment_id: &str) -> Status {
    Status::not_found(format!(
        "no payment {payment_id:?} on this instance (payments are kept in memory, per instance)"
    ))
}

fn is_currency_code(s: &str) -> bool {
    s.len() == 3 && s.bytes().all(|b| b.is_ascii_uppercase())
}

#[tonic::async_trait]
impl PaymentService for Payments {
    async fn authorize(
        &self,
        request: Request<AuthorizeRequest>,
    ) -> Result<Response<AuthorizeResponse>, Status> {
        let end_user = request
            .metadata()
            .get(END_USER_METADATA)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let result = match self.before_call().await {
            Ok(()) => Payments::authorize(self, end_user, request.into_inner()),
            Err(status) => Err(status),
        };
        self.with_version(result)
    }

    async fn capture(
        &self,
        request: Request<CaptureRequest>,
    ) -> Result<Response<CaptureResponse>, Status> {
        let result = match self.before_call().await {
            Ok(()) => Payments::capture(self, request.into_inner()),
            Err(status) => Err(status),
        };
        self.with_version(result)
    }

    type ListPaymentsStream =
        futures_util::stream::Iter<std::vec::IntoIter<Result<Payment, Status>>>;

    async fn list_payments(
        &self,
        request: Request<ListPaymentsRequest>,
    ) -> Result<Response<Self::ListPaymentsStream>, Status> {
        self.before_call().await?;
        let limit = match request.get_ref().limit {
            0 => usize::MAX,
            n => n as usize,
        };
        let mut all: Vec<Payment> = self.store().values().cloned().collect();
        all.sort_by(|a, b| a.payment_id.cmp(&b.payment_id));
        let items: Vec<Result<Payment, Status>> = all.into_iter().take(limit).map(Ok).collect();
        let mut response = Response::new(futures_util::stream::iter(items));
        response
            .metadata_mut()
            .insert(VERSION_METADATA, self.inner.version.clone());
        Ok(response)
    }

    async fn get_payment(
        &self,
        request: Request<GetPaymentRequest>,
    ) -> Result<Response<Payment>, Status> {
        let result = match self.before_call().await {
            Ok(()) => self.get(request.get_ref()),
            Err(status) => Err(status),
        };
        self.with_version(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(amount_cents: i64, currency: &str) -> AuthorizeRequest {
        AuthorizeRequest {
            order_id: "ord-1".into(),
            amount_cents,
            currency: currency.into(),
            capture: false,
        }
    }

    #[test]
    fn authorize_capture_get() -> Result<(), Status> {
        let payments = Payments::new(&Config::default());
        let auth = payments.authorize("alice".into(), request(500, "EUR"))?;
        assert_eq!(auth.status(), PaymentStatus::Authorized);
        let cap = payments.capture(CaptureRequest {
            payment_id: auth.payment_id.clone(),
        })?;
        assert_eq!(cap.status(), PaymentStatus::Captured);
        // Capturing twice is a no-op, so retries are safe.
        let again = payments.capture(CaptureRequest {
            payment_id: auth.payment_id.clone(),
        })?;
        assert_eq!(again.status(), PaymentStatus::Captured);
        let payment = payments.get(&GetPaymentRequest {
            payment_id: auth.payment_id,
        })?;
        assert_eq!(payment.amount_cents, 500);
        assert_eq!(payment.end_user, "alice");
        Ok(())
    }

    #[test]
    fn bad_requests_are_invalid_argument() {
        let payments = Payments::new(&Config::default());
        for req in [
            request(0, "USD"),
            request(-5, "USD"),
            request(5, "usd"),
            request(5, ""),
        ] {
            let err = payments.authorize(String::new(), req.clone()).err();
            assert_eq!(
                err.map(|s| s.code()),
                Some(tonic::Code::InvalidArgument),
                "{req:?}"
            );
        }
    }

    #[test]
    fn unknown_payment_is_not_found() {
        let payments = Payments::new(&Config::default());
        let err = payments
            .capture(CaptureRequest {
                payment_id: "pay-404".into(),
            })
            .err();
        assert_eq!(err.map(|s| s.code()), Some(tonic::Code::NotFound));
    }
}
