#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use super::*;
use crate::outlier::Outcome;

#[test]
fn http_statuses() {
    assert_eq!(classify(Some(200), None, None), ResponseClass::Success);
    assert_eq!(classify(Some(302), None, None), ResponseClass::Success);
    assert_eq!(
        classify(Some(500), None, None),
        ResponseClass::Failure(FailureKind::Http5xx(500))
    );
    for s in [502, 503, 504] {
        let c = classify(Some(s), None, None);
        assert_eq!(c, ResponseClass::Failure(FailureKind::GatewayError(s)));
        assert!(c.is_gateway_failure());
        assert_eq!(c.outlier_outcome(), Outcome::GatewayFailure);
    }
    let c = classify(Some(409), None, None);
    assert!(c.is_failure());
    assert!(!c.is_server_failure());
    assert_eq!(c.outlier_outcome(), Outcome::Success);
}

#[test]
fn grpc_status_on_200() {
    assert!(classify(Some(200), Some(0), None).is_success());
    let c = classify(Some(200), Some(grpc_code::UNAVAILABLE), None);
    assert_eq!(c, ResponseClass::Failure(FailureKind::GrpcStatus(14)));
    assert!(c.is_gateway_failure());
    assert_eq!(c.outlier_outcome(), Outcome::GatewayFailure);
    let c = classify(None, Some(grpc_code::INTERNAL), None);
    assert_eq!(c.outlier_outcome(), Outcome::Http5xx);
    assert!(!c.is_gateway_failure());
    // NOT_FOUND is the caller's problem, not the host's.
    let c = classify(Some(200), Some(5), None);
    assert!(c.is_failure());
    assert_eq!(c.outlier_outcome(), Outcome::Success);
}

#[test]
fn grpc_status_on_non_200_uses_http() {
    let c = classify(Some(503), Some(0), None);
    assert_eq!(c, ResponseClass::Failure(FailureKind::GatewayError(503)));
}

#[test]
fn transport_errors_win() {
    let c = classify(Some(200), Some(0), Some(TransportError::Reset));
    assert_eq!(c, ResponseClass::Failure(FailureKind::Reset));
    assert_eq!(c.outlier_outcome(), Outcome::LocalOriginFailure);
    let c = classify(None, None, Some(TransportError::ConnectFailure));
    assert!(c.is_gateway_failure());
    assert!(c.is_server_failure());
    assert!(!classify(None, None, Some(TransportError::Timeout)).is_gateway_failure());
    assert_eq!(
        classify(None, None, None),
        ResponseClass::Failure(FailureKind::Other)
    );
}
