//! The outbound client against real backends on 127.0.0.1.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use mesh_core::breaker::Thresholds;
use mesh_core::outlier::OutlierConfig;
use mesh_core::retry::{RetryBudgetConfig, RetryOn, RetryPolicy};
use mesh_core::Snapshot;
use mesh_tower::Mesh;
use support::*;
use tokio::sync::Semaphore;

fn retry_5xx(n: u32) -> RetryPolicy {
    RetryPolicy::new(n, RetryOn::parse("5xx,reset,connect-failure").unwrap()).with_backoff(
        mesh_core::retry::BackoffConfig::new(Duration::from_millis(1)),
    )
}

#[tokio::test]
async fn split_90_10_lands_within_tolerance() {
    let v1 = Backend::start("v1", Script::Ok).await;
    let v2 = Backend::start("v2", Script::Ok).await;
    let b = Snapshot::builder();
    let b = cluster(b, "pay-v1", &[&v1], |_| {});
    let b = cluster(b, "pay-v2", &[&v2], |_| {});
    let b = route(
        b,
        "payment-service:8080",
        weighted(&[("pay-v1", 90), ("pay-v2", 10)]),
    );
    let mesh = Mesh::builder().snapshot(b.build()).build().unwrap();
    let mut client = mesh.http_client();
    let n = 1000;
    let mut to_v2 = 0;
    for _ in 0..n {
        let (status, backend, _) = get(&mut client, "http://payment-service:8080/pay").await;
        assert_eq!(status, 200);
        if backend == "v2" {
            to_v2 += 1;
        }
    }
    // Binomial(1000, 0.1): sd ~ 9.5; +-4.5 sd.
    assert!((57..=143).contains(&to_v2), "v2 got {to_v2} of {n}");
    assert_eq!(v1.hits() + v2.hits(), n);
}

#[tokio::test]
async fn unknown_target_is_dialed_by_dns_name() {
    let be = Backend::start("plain", Script::Ok).await;
    let mesh = Mesh::with_defaults();
    let mut client = mesh.http_client();
    let uri = format!("http://localhost:{}/x", be.addr.port());
    let (status, backend, _) = get(&mut client, &uri).await;
    assert_eq!((status, backend.as_str()), (200, "plain"));
}

#[tokio::test]
async fn a_failed_dial_to_an_unknown_target_says_it_was_dialed_by_dns() {
    // A port nothing listens on: bound, then closed.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mesh = Mesh::with_defaults();
    let resp = mesh
        .get(&format!("http://127.0.0.1:{port}/x"))
        .send()
        .await
        .unwrap_err();
    let Some(mesh_tower::MeshError::Connect { endpoint, reason }) = resp.mesh_error() else {
        panic!("not a connect error: {resp:?}");
    };
    assert_eq!(endpoint, &format!("127.0.0.1:{port}"));
    assert!(
        reason.contains(&format!(
            "target 127.0.0.1:{port} is not in the mesh policy"
        )) && reason.contains("the policy has no service of that name")
            && reason.contains("it was dialed by DNS"),
        "{reason}"
    );
}

#[tokio::test]
async fn an_unknown_ipv6_literal_target_is_dialed_at_that_address() {
    let be = Backend::start_on("[::1]:0", "v6", Script::Ok).await;
    let mesh = Mesh::with_defaults();
    let mut client = mesh.http_client();
    let uri = format!("http://[::1]:{}/x", be.addr.port());
    let (status, backend, err) = get(&mut client, &uri).await;
    assert_eq!((status, backend.as_str()), (200, "v6"), "{err}");
}

#[tokio::test]
async fn failing_replica_is_ejected_and_retries_hide_it() {
    let good1 = Backend::start("good1", Script::Ok).await;
    let good2 = Backend::start("good2", Script::Ok).await;
    let bad = Backend::start("bad", Script::FailEveryOther).await;
    let b = cluster(Snapshot::builder(), "pay", &[&good1, &good2, &bad], |c| {
        c.outlier_detection = Some(
            OutlierConfig::new()
                .with_failure_percentage(30, 3, 4, 100)
                .with_interval(Duration::from_millis(50))
                .with_ejection_time(Duration::from_secs(60), Duration::from_secs(300))
                .with_max_ejection_percent(50),
        );
    });
    let mut action = mesh_core::route::ForwardAction::to_cluster("pay");
    action.retry_policy = Some(retry_5xx(2));
    let mesh = Mesh::builder()
        .snapshot(route(b, "pay:80", action).build())
        .build()
        .unwrap();
    let mut client = mesh.http_client();
    let mut ejected = false;
    // Bounded: at most 2,000 requests or 20 s, whichever comes first.
    let until = std::time::Instant::now() + Duration::from_secs(20);
    for _ in 0..2000 {
        let (status, _, err) = get(&mut client, "http://pay:80/").await;
        assert_eq!(status, 200, "a failure reached the caller ({err})");
        let status = mesh.cluster_status();
        ejected = status
            .iter()
            .flat_map(|(_, eps)| eps)
            .any(|e| e.address == bad.addr && e.ejected);
        if ejected || std::time::Instant::now() > until {
            break;
        }
    }
    assert!(ejected, "the failing replica was never ejected");
    // Once ejected it gets nothing.
    let before = bad.hits();
    for _ in 0..20 {
        assert_eq!(get(&mut client, "http://pay:80/").await.0, 200);
    }
    assert_eq!(bad.hits(), before);
}

#[tokio::test]
async fn breaker_rejects_at_once_past_max_requests() {
    let gate = Arc::new(Semaphore::new(0));
    let slow = Backend::start("slow", Script::Gate(Arc::clone(&gate))).await;
    let b = cluster(Snapshot::builder(), "pay", &[&slow], |c| {
        c.circuit_breakers = Thresholds::default().with_max_requests(2);
    });
    let b = route(
        b,
        "pay:80",
        mesh_core::route::ForwardAction::to_cluster("pay"),
    );
    let mesh = Mesh::builder().snapshot(b.build()).build().unwrap();
    let held: Vec<_> = (0..2)
        .map(|_| {
            let mut c = mesh.http_client();
            tokio::spawn(async move { get(&mut c, "http://pay:80/").await })
        })
        .collect();
    // Wait until both are at the backend.
    while slow.hits() < 2 {
        tokio::task::yield_now().await;
    }
    let mut client = mesh.http_client();
    let (status, _, err) = get(&mut client, "http://pay:80/").await;
    assert_eq!((status, err.as_str()), (503, "circuit-open:max-requests"));
    gate.add_permits(2);
    for h in held {
        assert_eq!(h.await.unwrap().0, 200);
    }
    // With the slots free again, calls go through.
    gate.add_permits(1);
    assert_eq!(get(&mut client, "http://pay:80/").await.0, 200);
}

/// HTTP/1.1 carries one request per connection: the connections a burst opened serve the
/// next burst (kept warm up to the breaker's `max_connections`), rather than being closed
/// and dialed again (for mTLS, a handshake each).
#[tokio::test]
async fn a_bursts_connections_stay_warm_for_the_next_burst() {
    const BURST: usize = 100;
    let gate = Arc::new(Semaphore::new(0));
    let slow = Backend::start("slow", Script::Gate(Arc::clone(&gate))).await;
    let b = cluster(Snapshot::builder(), "pay", &[&slow], |c| {
        c.protocol = mesh_core::cluster::UpstreamProtocol::Http1;
    });
    let b = route(
        b,
        "pay:80",
        mesh_core::route::ForwardAction::to_cluster("pay"),
    );
    let mesh = Mesh::builder().snapshot(b.build()).build().unwrap();
    for round in 1..=2 {
        let held: Vec<_> = (0..BURST)
            .map(|_| {
                let mut c = mesh.http_client();
                tokio::spawn(async move { get(&mut c, "http://pay:80/").await })
            })
            .collect();
        // All of them at the backend at once: one connection each.
        while slow.hits() < round * BURST {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        gate.add_permits(BURST);
        for h in held {
            assert_eq!(h.await.unwrap().0, 200);
        }
        // Answered connections go back to the pool once their response is read.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        slow.accepted.load(std::sync::atomic::Ordering::SeqCst),
        BURST,
        "the second burst dialed new connections"
    );
}

/// Envoy's `include_request_attempt_count`: on a virtual host that asks, every upstream
/// request says which attempt it is, retried or not; elsewhere none does, retries included
/// (a go-control-plane or gRPC-style route table does not ask).
#[tokio::test]
async fn attempts_are_numbered_only_where_the_virtual_host_asks() {
    use tower::{Service, ServiceExt};
    for (counted, retried, want) in [
        (true, false, "1"),
        (true, true, "2"),
        (false, true, "none"),
        (false, false, "none"),
    ] {
        // A retried call's first attempt gets a 503 and its second answers.
        let script = if retried {
            Script::FailEveryOther
        } else {
            Script::Ok
        };
        let be = Backend::start("b", script).await;
        let b = cluster(Snapshot::builder(), "pay", &[&be], |_| {});
        let mut action = mesh_core::route::ForwardAction::to_cluster("pay");
        action.retry_policy = retried.then(|| retry_5xx(2));
        let b = if counted {
            counted_route(b, "pay:80", action)
        } else {
            route(b, "pay:80", action)
        };
        let mesh = Mesh::builder().snapshot(b.build()).build().unwrap();
        let mut client = mesh.http_client();
        let req = http::Request::get("http://pay:80/")
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        let resp = client.ready().await.unwrap().call(req).await.unwrap();
        let case = format!("counted {counted}, retried {retried}");
        assert_eq!(resp.status(), 200, "{case}");
        assert_eq!(be.hits(), if retried { 2 } else { 1 }, "{case}");
        assert_eq!(resp.headers()["x-seen-attempt-count"], want, "{case}");
    }
}

#[tokio::test]
async fn retry_budget_caps_retries_in_flight() {
    let failing =
        Backend::start("failing", Script::DelayThen(Duration::from_millis(20), 503)).await;
    let b = cluster(Snapshot::builder(), "pay", &[&failing], |c| {
        c.circuit_breakers = Thresholds::default().with_max_retries(100);
        c.retry_budget = Some(RetryBudgetConfig::new(0.0, 2));
    });
    let mut action = mesh_core::route::ForwardAction::to_cluster("pay");
    action.retry_policy = Some(retry_5xx(3));
    // The backend tells retries by their attempt count.
    let mesh = Mesh::builder()
        .snapshot(counted_route(b, "pay:80", action).build())
        .build()
        .unwrap();
    let calls: Vec<_> = (0..16)
        .map(|_| {
            let mut c = mesh.http_client();
            tokio::spawn(async move { get(&mut c, "http://pay:80/").await })
        })
        .collect();
    for c in calls {
        assert_eq!(c.await.unwrap().0, 503);
    }
    let max = failing
        .max_retries_in_flight
        .load(std::sync::atomic::Ordering::SeqCst);
    assert!(max >= 1, "some retries were made");
    assert!(max <= 2, "the budget allows 2 retries in flight, saw {max}");
    // Without the budget 16 calls x 4 attempts would reach the backend.
    assert!(failing.hits() < 16 * 4, "hits {}", failing.hits());
}

#[tokio::test(start_paused = true)]
async fn route_timeout_fires() {
    let slow = Backend::start("slow", Script::Delay(Duration::from_secs(30))).await;
    let b = cluster(Snapshot::builder(), "pay", &[&slow], |_| {});
    let mut action = mesh_core::route::ForwardAction::to_cluster("pay");
    action.timeout = Some(Duration::from_millis(200));
    let mesh = Mesh::builder()
        .snapshot(route(b, "pay:80", action).build())
        .build()
        .unwrap();
    let mut client = mesh.http_client();
    let (status, _, err) = get(&mut client, "http://pay:80/").await;
    assert_eq!((status, err.as_str()), (504, "timeout"));
}

#[tokio::test(start_paused = true)]
async fn per_try_timeout_retries_then_gives_up_at_the_route_timeout() {
    let slow = Backend::start("slow", Script::Delay(Duration::from_secs(30))).await;
    let b = cluster(Snapshot::builder(), "pay", &[&slow], |_| {});
    let mut action = mesh_core::route::ForwardAction::to_cluster("pay");
    action.timeout = Some(Duration::from_secs(1));
    action.retry_policy = Some(
        RetryPolicy::new(5, RetryOn::parse("5xx,reset").unwrap())
            .with_per_try_timeout(Some(Duration::from_millis(300))),
    );
    let mesh = Mesh::builder()
        .snapshot(route(b, "pay:80", action).build())
        .build()
        .unwrap();
    let mut client = mesh.http_client();
    let (status, _, err) = get(&mut client, "http://pay:80/").await;
    assert_eq!((status, err.as_str()), (504, "timeout"));
    // 300 ms tries within a 1 s budget: more than one attempt, fewer than six.
    assert!((2..=4).contains(&slow.hits()), "attempts: {}", slow.hits());
}

#[tokio::test]
async fn weight_changes_apply_without_a_failed_request() {
    let v1 = Backend::start("v1", Script::Ok).await;
    let v2 = Backend::start("v2", Script::Ok).await;
    let build = |w2: u32| {
        let b = cluster(Snapshot::builder(), "pay-v1", &[&v1], |_| {});
        let b = cluster(b, "pay-v2", &[&v2], |_| {});
        let split = if w2 == 100 {
            vec![("pay-v2", 100)]
        } else {
            vec![("pay-v1", 100 - w2), ("pay-v2", w2)]
        };
        route(b, "pay:80", weighted(&split)).build()
    };
    let mesh = Mesh::builder().snapshot(build(5)).build().unwrap();
    let mut client = mesh.http_client();
    for w in [5, 10, 25, 50, 100] {
        mesh.policy().publish(build(w));
        for _ in 0..50 {
            let (status, _, err) = get(&mut client, "http://pay:80/").await;
            assert_eq!(status, 200, "failed during weight {w}: {err}");
        }
    }
    let before = v1.hits();
    for _ in 0..50 {
        let (_, backend, _) = get(&mut client, "http://pay:80/").await;
        assert_eq!(backend, "v2");
    }
    assert_eq!(v1.hits(), before);
}

#[tokio::test]
async fn http1_and_http2_callers() {
    let be = Backend::start("b", Script::Ok).await;
    let b = cluster(Snapshot::builder(), "pay", &[&be], |_| {});
    let b = route(
        b,
        "pay:80",
        mesh_core::route::ForwardAction::to_cluster("pay"),
    );
    let mesh = Mesh::builder().snapshot(b.build()).build().unwrap();
    let mut client = mesh.http_client();
    for version in [http::Version::HTTP_11, http::Version::HTTP_2] {
        use tower::{Service, ServiceExt};
        let req = http::Request::get("http://pay:80/v")
            .version(version)
            .body(http_body_util::Full::new(bytes::Bytes::from_static(b"hi")))
            .unwrap();
        let resp = client.ready().await.unwrap().call(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let seen = resp
            .headers()
            .get("x-http-version")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(seen, format!("{version:?}"));
    }
}

#[tokio::test]
async fn no_route_and_no_endpoint_answer_with_typed_errors() {
    let b = cluster(Snapshot::builder(), "empty", &[], |_| {});
    let b = route(
        b,
        "pay:80",
        mesh_core::route::ForwardAction::to_cluster("empty"),
    );
    let b = route(
        b,
        "gone:80",
        mesh_core::route::ForwardAction::to_cluster("missing"),
    );
    let mesh = Mesh::builder().snapshot(b.build()).build().unwrap();
    let mut client = mesh.http_client();
    assert_eq!(
        get(&mut client, "http://pay:80/").await.2,
        "no-healthy-endpoint"
    );
    assert_eq!(
        get(&mut client, "http://gone:80/").await.2,
        "cluster-not-found"
    );
}

/// As Envoy does: control-plane's `interop_envoy_fault` runs the same case on a real Envoy.
#[tokio::test]
async fn a_route_fault_aborts_on_the_callers_headers_not_on_the_routes_header_changes() {
    use mesh_core::matcher::{HeaderMatcher, HeaderValueMatch, StringMatcher};
    use mesh_core::route::{
        FaultAbort, FaultInjection, ForwardAction, FractionalPercent, HeaderMutations, Route,
        RouteAction, RouteMatch,
    };
    let be = Backend::start("pay", Script::Ok).await;
    let b = cluster(Snapshot::builder(), "pay", &[&be], |_| {});
    let chaos = || http::HeaderValue::from_static("on");
    let fault = FaultInjection {
        abort: Some(FaultAbort::Http {
            status: 503,
            percentage: FractionalPercent::new(100, 100),
        }),
        headers: vec![HeaderMatcher::new(
            "x-chaos",
            HeaderValueMatch::String(StringMatcher::exact("on")),
            false,
        )
        .unwrap()],
        ..FaultInjection::default()
    };
    // The route sets the very header the fault matches on: Envoy's fault filter decides
    // before the router changes headers, so only callers that send it are aborted.
    let route = Route::new(
        "r",
        RouteMatch::default(),
        RouteAction::Forward(ForwardAction::to_cluster("pay")),
    )
    .with_headers(
        HeaderMutations::new().set(http::HeaderName::from_static("x-chaos"), chaos()),
        HeaderMutations::new(),
    )
    .with_fault(Some(fault));
    let snap = with_route(b, "pay:80", route).build();
    let mesh = Mesh::builder().snapshot(snap).build().unwrap();
    let mut client = mesh.http_client();

    let (status, backend, _) = get(&mut client, "http://pay:80/").await;
    assert_eq!((status, backend.as_str()), (200, "pay"));
    assert_eq!(be.hits(), 1);

    use tower::{Service, ServiceExt};
    let req = http::Request::get("http://pay:80/")
        .header("x-chaos", chaos())
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let resp = client.ready().await.unwrap().call(req).await.unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(be.hits(), 1, "an aborted request reached the backend");
}

/// As Envoy's router: the retry policy judges the upstream's own head (a trailers-only
/// `grpc-status: 14` is retried on `unavailable`), and the route's response header changes
/// come after it; the metrics see the head as changed (Istio's stats filter runs after the
/// router on the response).
#[tokio::test]
async fn the_retry_policy_judges_the_upstreams_head_and_the_metrics_the_changed_one() {
    use mesh_core::route::{ForwardAction, HeaderMutations, Route, RouteAction, RouteMatch};
    use tower::{Service, ServiceExt};
    let be = Backend::start("pay", Script::GrpcStatus(14)).await;
    let b = cluster(Snapshot::builder(), "pay", &[&be], |_| {});
    let mut action = ForwardAction::to_cluster("pay");
    action.retry_policy = Some(
        RetryPolicy::new(1, RetryOn::parse("unavailable").unwrap()).with_backoff(
            mesh_core::retry::BackoffConfig::new(Duration::from_millis(1)),
        ),
    );
    let route = Route::new("r", RouteMatch::default(), RouteAction::Forward(action)).with_headers(
        HeaderMutations::new(),
        HeaderMutations::new().set(
            http::HeaderName::from_static("grpc-status"),
            http::HeaderValue::from_static("0"),
        ),
    );
    let snap = with_route(b, "pay:80", route).build();
    let mesh = Mesh::builder().snapshot(snap).build().unwrap();
    let mut client = mesh.http_client();
    let req = http::Request::post("http://pay:80/pkg.Pay/Charge")
        .header("content-type", "application/grpc")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let resp = client.ready().await.unwrap().call(req).await.unwrap();
    assert_eq!(resp.headers()["grpc-status"], "0");
    // The body's end records the call.
    http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap();
    assert_eq!(be.hits(), 2, "the upstream's unavailable was not retried");
    let rendered = mesh.metrics().render();
    let calls: Vec<&str> = rendered
        .lines()
        .filter(|l| l.starts_with("istio_requests_total{") && l.contains("reporter=\"source\""))
        .collect();
    assert_eq!(calls.len(), 1, "{rendered}");
    assert!(
        calls[0].contains("grpc_response_status=\"0\""),
        "{}",
        calls[0]
    );
}

/// A mesh client and a mesh server at their defaults: the client's HTTP/1.1 pool may open
/// `max_connections` (1,024) connections to one endpoint, and the server's per-peer limit
/// must admit them all. Below it, the server closed connections the client was using or
/// about to reuse, the failures ejected the endpoint, and the client's calls all failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mesh_clients_whole_pool_fits_a_mesh_servers_per_peer_limit() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tower::ServiceExt;

    let pool = Thresholds::default().max_connections as usize;
    assert!(mesh_tower::inbound::DEFAULT_MAX_CONNECTIONS_PER_PEER >= pool);
    let server_mesh = Mesh::builder()
        .snapshot(
            Snapshot::builder()
                .inbound_default(Some(mesh_core::inbound::InboundPolicy::new(
                    mesh_core::inbound::TlsMode::Disable,
                )))
                .build(),
        )
        .build()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Every request waits until all of them have arrived, so each holds its own connection.
    let gate = Arc::new(Semaphore::new(0));
    let arrived = Arc::new(AtomicUsize::new(0));
    let service = {
        let (gate, arrived) = (Arc::clone(&gate), Arc::clone(&arrived));
        tower::service_fn(move |_: http::Request<hyper::body::Incoming>| {
            let (gate, arrived) = (Arc::clone(&gate), Arc::clone(&arrived));
            async move {
                arrived.fetch_add(1, Ordering::SeqCst);
                gate.acquire().await.unwrap().forget();
                Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                    bytes::Bytes::from_static(b"ok"),
                )))
            }
        })
    };
    tokio::spawn(
        server_mesh
            .listener(listener)
            .serve(service, std::future::pending()),
    );

    let server = Backend {
        name: "mesh-server",
        addr,
        hits: Default::default(),
        retries_in_flight: Default::default(),
        max_retries_in_flight: Default::default(),
        accepted: Default::default(),
    };
    let b = cluster(Snapshot::builder(), "pay", &[&server], |c| {
        c.outlier_detection = Some(OutlierConfig::new());
    });
    let client_mesh = Mesh::builder()
        .snapshot(
            route(
                b,
                "pay:80",
                mesh_core::route::ForwardAction::to_cluster("pay"),
            )
            .build(),
        )
        .build()
        .unwrap();
    let calls: Vec<_> = (0..pool)
        .map(|_| {
            let client = client_mesh.http_client::<http_body_util::Full<bytes::Bytes>>();
            tokio::spawn(async move {
                let req = http::Request::get("http://pay:80/")
                    .body(http_body_util::Full::new(bytes::Bytes::new()))
                    .unwrap();
                client.oneshot(req).await.unwrap().status()
            })
        })
        .collect();
    // Bounded: 60 s for all of them to arrive.
    let until = std::time::Instant::now() + Duration::from_secs(60);
    while arrived.load(Ordering::SeqCst) < pool && std::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gate.add_permits(pool);
    let mut ok = 0;
    for call in calls {
        if call.await.unwrap() == 200 {
            ok += 1;
        }
    }
    assert_eq!(ok, pool, "calls failed with both sides at their defaults");
    assert_eq!(arrived.load(Ordering::SeqCst), pool);
}
