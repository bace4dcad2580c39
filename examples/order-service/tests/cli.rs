//! Runs the package's built binaries: `order-service` with bad flags, and `order-client`
//! against an in-process order service and payment service.

use std::process::Output;

use example_common::{BackgroundServer, BoxError};
use order_service::Config;
use tokio::process::Command;

async fn run(bin: &str, args: &[&str]) -> std::io::Result<Output> {
    Command::new(bin)
        .args(args)
        // Keep the mesh environment of the machine running the tests out of the picture.
        .env_remove("GRPC_XDS_BOOTSTRAP")
        .env_remove("MESH_POLICY")
        .env_remove("MESH_ADMIN")
        .output()
        .await
}

#[tokio::test]
async fn bad_payment_target_is_refused_with_a_clear_message() -> Result<(), BoxError> {
    let out = run(
        env!("CARGO_BIN_EXE_order-service"),
        &["--payment-target", "http://payment-service:8080"],
    )
    .await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "exit status {:?}", out.status);
    assert!(
        stderr.contains("--payment-target") && stderr.contains("xds:///"),
        "stderr: {stderr}"
    );
    Ok(())
}

#[tokio::test]
async fn bad_listen_address_is_refused() -> Result<(), BoxError> {
    let out = run(env!("CARGO_BIN_EXE_order-service"), &["--listen", "8081"]).await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "exit status {:?}", out.status);
    assert!(stderr.contains("--listen"), "stderr: {stderr}");
    Ok(())
}

#[tokio::test]
async fn order_client_summarizes_by_payment_version() -> Result<(), BoxError> {
    let payment = BackgroundServer::start(|listener, stop| {
        payment_service::run(payment_service::Config::default(), listener, stop)
    })
    .await?;
    let config = Config::new(payment.addr().to_string().parse()?);
    let order =
        BackgroundServer::start(|listener, stop| order_service::run(config, listener, stop))
            .await?;

    let url = format!("http://{}", order.addr());
    let out = run(
        env!("CARGO_BIN_EXE_order-client"),
        &["--url", &url, "--count", "3", "--end-user", "jason"],
    )
    .await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{:?}: {stdout}", out.status);
    assert!(
        stdout.contains("orders: 3 sent, 3 created, 0 failed"),
        "{stdout}"
    );
    assert!(stdout.contains("v1: 3"), "{stdout}");

    order.stop().await?;
    payment.stop().await
}

#[tokio::test]
async fn order_client_fails_when_no_order_is_created() -> Result<(), BoxError> {
    let payment = BackgroundServer::start(|listener, stop| {
        let config = payment_service::Config::default().with_fail_rate(1.0);
        async move {
            payment_service::run(config?, listener, stop)
                .await
                .map_err(BoxError::from)
        }
    })
    .await?;
    let config = Config::new(payment.addr().to_string().parse()?);
    let order =
        BackgroundServer::start(|listener, stop| order_service::run(config, listener, stop))
            .await?;

    let url = format!("http://{}", order.addr());
    let out = run(
        env!("CARGO_BIN_EXE_order-client"),
        &["--url", &url, "--count", "2"],
    )
    .await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(stdout.contains("502 UNAVAILABLE: 2"), "{stdout}");

    order.stop().await?;
    payment.stop().await
}
