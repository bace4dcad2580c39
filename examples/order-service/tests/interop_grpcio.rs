//! The real `order-service` binary on a mesh whose control plane is not ours:
//! `examples/interop/xds_server.py`, Python grpcio (C-core) with the Envoy protos of
//! xds-protos, serving the canary istiod would for payment-service (beta testers to v2,
//! 90/10 v1/v2 for everyone else), with payment-service v1 and v2 running in this process.
//!
//! Like istiod, that server sends no response headers before its first response, and it
//! answers only what it is asked. The order service's mesh opens its ADS stream at start
//! and subscribes to the payment target on its own schedule; a client that waited for the
//! headers before asking would never learn the target, and the first order would fail.
//!
//! Skipped (with a message) when python3, grpcio or xds-protos is missing, unless
//! `MESH_INTEROP` is set, as `.ci/run` does.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

#[path = "../../interop/peer.rs"]
mod peer;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use example_common::BackgroundServer;
use http::StatusCode;
use order_service::client::{OrderClient, Reply};
use order_service::Order;
use payment_service::PaymentVersion;
use peer::{PythonAds, PATIENCE, TARGET};
use tokio::io::{AsyncBufReadExt, BufReader};

/// Orders sent without the beta header. With p = 0.1 for v2 the count's standard deviation
/// is 6: +-5 sd (a false failure about once in 3.5 million runs) is 10..=70, which tells
/// 90/10 from 100/0 and from 50/50 (200 orders would let 0 through).
const ORDERS: u32 = 400;
const V2_PERCENT: u32 = 10;
const BETA_ORDERS: u32 = 20;
const NODE_ID: &str =
    "sidecar~127.0.0.1~order-service-7d4b9c8f5-x2x4q.default~default.svc.cluster.local";

async fn payment(version: PaymentVersion) -> BackgroundServer<payment_service::Error> {
    let config = payment_service::Config::default().with_version(version);
    BackgroundServer::start(|listener, stop| payment_service::run(config, listener, stop))
        .await
        .unwrap()
}

/// Strips the terminal colour codes a log line may carry.
fn plain(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The address in the binary's "order-service listening addr=IP:PORT" log line.
fn listening_addr(line: &str) -> Option<SocketAddr> {
    let line = plain(line);
    if !line.contains("order-service listening") {
        return None;
    }
    let rest = &line[line.find("addr=")? + "addr=".len()..];
    rest.split_whitespace().next()?.parse().ok()
}

/// Sends one order, bounded by [`PATIENCE`].
async fn order(client: &OrderClient, end_user: &str, log: &Mutex<Vec<String>>) -> Reply {
    tokio::time::timeout(PATIENCE, client.create_order("book", 100, Some(end_user)))
        .await
        .unwrap_or_else(|_| panic!("an order hung; order-service said:\n{}", tail(log)))
        .unwrap()
}

fn tail(log: &Mutex<Vec<String>>) -> String {
    let lines = log.lock().unwrap();
    let start = lines.len().saturating_sub(40);
    lines[start..].join("\n")
}

fn version_of(reply: &Reply, log: &Mutex<Vec<String>>) -> String {
    assert_eq!(
        reply.status,
        StatusCode::CREATED,
        "{:?}\norder-service said:\n{}",
        reply.body,
        tail(log)
    );
    let order: Order = reply.json().unwrap();
    order.payment_version.unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_follow_an_istiod_shaped_canary_from_a_grpcio_control_plane() {
    let Some(python) = peer::python() else {
        return;
    };
    let dir = peer::temp_dir("order-service");
    let v1 = payment(PaymentVersion::V1).await;
    let v2 = payment(PaymentVersion::V2).await;
    let ads = PythonAds::start(&python, &dir, v1.addr(), v2.addr());
    let bootstrap = dir.join("bootstrap.json");
    std::fs::write(&bootstrap, ads.bootstrap(NODE_ID, false)).unwrap();

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_order-service"))
        .arg("--bootstrap")
        .arg(&bootstrap)
        .args(["--payment-target", TARGET, "--listen", "127.0.0.1:0"])
        // Keep the mesh environment of the machine running the tests out of the picture.
        .env_remove("GRPC_XDS_BOOTSTRAP")
        .env_remove("MESH_POLICY")
        .env_remove("MESH_ADMIN")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Its log says where it listens; the rest is kept for failure messages (and read, so
    // the pipe never fills).
    let log = Arc::new(Mutex::new(Vec::new()));
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let kept = Arc::clone(&log);
    tokio::spawn(async move {
        let mut addr_tx = Some(addr_tx);
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(addr) = listening_addr(&line) {
                if let Some(tx) = addr_tx.take() {
                    let _ = tx.send(addr);
                }
            }
            kept.lock().unwrap().push(line);
        }
    });
    let addr = tokio::time::timeout(PATIENCE, addr_rx)
        .await
        .expect("order-service did not say where it listens")
        .unwrap_or_else(|_| panic!("order-service exited:\n{}", tail(&log)));
    let client = OrderClient::new(&format!("http://{addr}")).unwrap();

    // The first order, on a stream the server has not answered until the client asked.
    let first = order(&client, "jason", &log).await;
    let first_version = version_of(&first, &log);
    assert!(
        ["v1", "v2"].contains(&first_version.as_str()),
        "{first_version}"
    );

    // Beta testers always reach v2.
    for _ in 0..BETA_ORDERS {
        let reply = order(&client, "beta-tester", &log).await;
        assert_eq!(version_of(&reply, &log), "v2");
    }

    // Everyone else: 90/10, within the binomial's spread.
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    for _ in 0..ORDERS {
        let reply = order(&client, "jason", &log).await;
        *seen.entry(version_of(&reply, &log)).or_default() += 1;
    }
    println!("split over {ORDERS} orders: {seen:?}");
    let n2 = seen.get("v2").copied().unwrap_or(0);
    let n1 = seen.get("v1").copied().unwrap_or(0);
    assert_eq!(n1 + n2, ORDERS, "{seen:?}");
    let mean = f64::from(ORDERS * V2_PERCENT) / 100.0;
    let p = f64::from(V2_PERCENT) / 100.0;
    let sd = (f64::from(ORDERS) * p * (1.0 - p)).sqrt();
    assert!(
        (f64::from(n2) - mean).abs() <= 5.0 * sd,
        "v2 got {n2} of {ORDERS}, expected about {mean}: {seen:?}"
    );

    // The order service ACKed every type and NACKed nothing.
    ads.assert_all_acked(NODE_ID);
    drop(child);
    drop(ads);
    v1.stop().await.unwrap();
    v2.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
