use std::net::SocketAddr;

use futures_util::StreamExt;
use tonic::Request;
use tonic_health::pb::health_check_response::ServingStatus as Wire;
use tonic_health::pb::health_server::Health as _;
use tonic_health::pb::HealthCheckRequest;

use super::*;

fn addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

#[test]
fn ready_needs_the_policy_and_every_listener() {
    let r = Readiness::waiting_for_policy("waiting for the first policy");
    assert_eq!(
        r.status().to_string(),
        "not ready: waiting for the first policy"
    );
    let listener = r.listener(addr());
    listener.waiting("waiting for its inbound policy");
    assert_eq!(
        r.status().to_string(),
        "not ready: waiting for the first policy; listener 127.0.0.1:8080: waiting for its inbound policy"
    );
    r.policy_arrived();
    assert!(!r.is_ready());
    listener.serving();
    assert_eq!(r.status(), ReadinessStatus::Ready);
    // A listener dropped before it served no longer counts.
    let other = r.listener(SocketAddr::from(([127, 0, 0, 1], 9090)));
    assert!(!r.is_ready());
    drop(other);
    assert!(r.is_ready());
}

#[test]
fn shutdown_is_final() {
    let r = Readiness::new();
    let listener = r.listener(addr());
    listener.serving();
    assert!(r.is_ready());
    listener.shutting_down();
    assert_eq!(r.status(), ReadinessStatus::ShuttingDown);
    drop(listener);
    r.policy_arrived();
    assert_eq!(r.status().to_string(), "not ready: shutting down");
    assert!(r.is_shutting_down());
}

#[test]
fn a_hold_says_what_it_waits_for() {
    let r = Readiness::new();
    let hold = r.hold("cache", "loading");
    hold.update("loading, 40%");
    assert_eq!(r.status().to_string(), "not ready: cache: loading, 40%");
    hold.release();
    assert!(r.is_ready());
}

#[test]
fn policy_reason_updates_only_while_waiting() {
    let r = Readiness::waiting_for_policy("a");
    r.policy_waiting_because("b".into());
    assert_eq!(r.status().to_string(), "not ready: b");
    r.policy_arrived();
    r.policy_waiting_because("c".into());
    assert!(r.is_ready());
}

#[test]
fn statuses_follow_readiness() {
    let r = Readiness::waiting_for_policy("first policy");
    let h = Health::new(r.clone());
    h.set_status("pay.Payments", ServingStatus::Serving);
    assert_eq!(h.status(""), Some(ServingStatus::NotServing));
    assert_eq!(h.status("pay.Payments"), Some(ServingStatus::NotServing));
    assert_eq!(h.status("other"), None);
    r.policy_arrived();
    assert_eq!(h.status(""), Some(ServingStatus::Serving));
    assert_eq!(h.status("pay.Payments"), Some(ServingStatus::Serving));
    h.set_status("pay.Payments", ServingStatus::NotServing);
    assert_eq!(h.status("pay.Payments"), Some(ServingStatus::NotServing));
    assert_eq!(h.status(""), Some(ServingStatus::Serving));
    h.set_status("", ServingStatus::NotServing);
    assert_eq!(h.status(""), Some(ServingStatus::NotServing));
    h.clear("pay.Payments");
    assert_eq!(h.status("pay.Payments"), None);
}

fn request(service: &str) -> Request<HealthCheckRequest> {
    Request::new(HealthCheckRequest {
        service: service.into(),
    })
}

#[tokio::test]
async fn check_answers_not_found_for_an_unknown_service() {
    let h = Health::new(Readiness::new());
    let svc = HealthService { health: h.clone() };
    let ok = svc.check(request("")).await.expect("overall status");
    assert_eq!(ok.get_ref().status, Wire::Serving as i32);
    let err = svc.check(request("nope")).await.expect_err("unknown");
    assert_eq!(err.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn watch_sends_changes_and_ends_after_shutdown() {
    let r = Readiness::waiting_for_policy("first policy");
    let h = Health::new(r.clone());
    let svc = HealthService { health: h.clone() };
    let mut overall = svc.watch(request("")).await.expect("watch").into_inner();
    let mut unknown = svc
        .watch(request("pay.Payments"))
        .await
        .expect("watch")
        .into_inner();
    let next = |m: Option<Result<tonic_health::pb::HealthCheckResponse, tonic::Status>>| {
        m.expect("a message").expect("a status").status
    };
    assert_eq!(next(overall.next().await), Wire::NotServing as i32);
    assert_eq!(next(unknown.next().await), Wire::ServiceUnknown as i32);
    r.policy_arrived();
    assert_eq!(next(overall.next().await), Wire::Serving as i32);
    h.set_status("pay.Payments", ServingStatus::Serving);
    assert_eq!(next(unknown.next().await), Wire::Serving as i32);
    r.shut_down();
    assert_eq!(next(overall.next().await), Wire::NotServing as i32);
    let end = overall
        .next()
        .await
        .expect("the end")
        .expect_err("a status");
    assert_eq!(end.code(), tonic::Code::Unavailable);
    assert!(overall.next().await.is_none());
    assert_eq!(next(unknown.next().await), Wire::NotServing as i32);
}
