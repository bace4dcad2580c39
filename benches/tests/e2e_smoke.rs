//! Runs the end-to-end benchmark in its quickest mode, for real (processes, sockets on
//! 127.0.0.1, mTLS, Envoy when installed), and checks that the JSON it writes has every
//! field the README promises and that requests went through. No timing is asserted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use mesh_benches::e2e::proxies::find_binary;

fn envoy_installed() -> bool {
    find_binary("ENVOY", "envoy").is_some()
}

#[test]
fn quick_run_writes_a_complete_report() {
    let dir = std::env::temp_dir().join(format!("e2e-smoke-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("latest.json");
    let envoy = envoy_installed();
    let scenarios = if envoy {
        "bare,mesh,sidecar"
    } else {
        "bare,mesh"
    };
    let status = Command::new(env!("CARGO_BIN_EXE_e2e"))
        // A second of closed loop: two rounds of half a second per scenario.
        .args(["--quick", "--duration", "0.3", "--max-duration", "1"])
        .args(["--protocols", "http1,grpc", "--scenarios", scenarios])
        .args(["--scale-endpoints", "10"])
        .arg("--out")
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success(), "e2e exited with {status}");

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let markdown = std::fs::read_to_string(out.with_extension("md")).unwrap();
    assert!(
        markdown.contains("| protocol | scenario | rate/s |"),
        "{markdown}"
    );
    assert!(
        markdown.contains("| http1 | mesh | service-a "),
        "{markdown}"
    );

    for key in ["nproc", "cpu_model", "kernel"] {
        assert!(!json["machine"][key].is_null(), "machine.{key} missing");
    }
    for key in ["mesh", "rustc", "crates"] {
        assert!(json["versions"][key].is_string(), "versions.{key} missing");
    }
    if envoy {
        assert!(json["versions"]["envoy"].as_str().unwrap().contains("1."));
    }

    let results = json["results"].as_array().unwrap();
    let expected = if envoy { 6 } else { 4 };
    assert_eq!(results.len(), expected, "{results:#?}");
    for r in results {
        let name = format!("{} {}", r["scenario"], r["protocol"]);
        assert_eq!(r["status"], "ok", "{name}: {r:#}");
        assert!(
            r["max_rps"].as_f64().unwrap() > 0.0,
            "{name}: no closed-loop throughput"
        );
        let rounds: Vec<f64> = r["max_rps_rounds"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(rounds.len(), 2, "{name}: one round per half second");
        let median = (rounds[0] + rounds[1]) / 2.0;
        assert!(
            (r["max_rps"].as_f64().unwrap() - median).abs() < 1e-6 * median.max(1.0),
            "{name}: the maximum {} is not the median of its rounds {rounds:?}",
            r["max_rps"]
        );
        let rates = r["rates"].as_array().unwrap();
        assert_eq!(rates.len(), 2, "{name}: quick mode runs two rates");
        for rate in rates {
            let requests = rate["requests"].as_u64().unwrap();
            let errors = rate["errors"].as_u64().unwrap();
            assert!(requests > 0, "{name}: no requests");
            assert!(
                errors * 10 < requests,
                "{name}: {errors} of {requests} failed"
            );
            for key in ["p50_us", "p99_us", "p999_us"] {
                assert!(rate[key].as_u64().unwrap() > 0, "{name}: {key}");
            }
            assert!(rate["cpu_us_per_req"].as_f64().is_some(), "{name}: cpu");
            let memory = &rate["memory"]["service-a"];
            assert!(
                memory["anonymous_kb"].as_u64().unwrap() > 0,
                "{name}: heap of A"
            );
            assert!(memory["file_kb"].as_u64().unwrap() > 0, "{name}: code of A");
            let rss = rate["rss_kb"].as_object().unwrap();
            assert!(rss["service-a"].as_u64().unwrap() > 0, "{name}: rss of A");
            assert!(rss["service-b"].as_u64().unwrap() > 0, "{name}: rss of B");
            if r["scenario"] == "sidecar" {
                assert!(
                    rss["envoy-a"].as_u64().unwrap() > 0,
                    "{name}: rss of envoy-a"
                );
                assert!(
                    rss["envoy-b"].as_u64().unwrap() > 0,
                    "{name}: rss of envoy-b"
                );
            }
        }
    }

    let scale = json["scale"].as_array().unwrap();
    assert_eq!(scale.len(), 1);
    assert_eq!(scale[0]["endpoints"], 10);
    assert!(scale[0]["rss_kb"].as_u64().unwrap() > 0);
    assert!(!json["targets"].as_array().unwrap().is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `e2e instructions` under callgrind, for real: the mesh's services do more work per
/// request than bare ones, and what `E2E_WITHOUT` leaves out is work they no longer do.
/// Skipped without valgrind (CI installs it).
#[test]
fn instruction_counts_of_bare_and_mesh_services() {
    if find_binary("VALGRIND", "valgrind").is_none()
        || find_binary("CALLGRIND_CONTROL", "callgrind_control").is_none()
    {
        eprintln!("skipped: valgrind not installed");
        return;
    }
    let count = |without: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_e2e"))
            .args(["instructions", "--protocols", "http1"])
            .args([
                "--scenarios",
                "bare,mesh-plain",
                "--warmup",
                "5",
                "--requests",
                "10",
            ])
            .env("E2E_WITHOUT", without)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "e2e instructions failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // `| http1 | mesh-plain | A | B | A + B | added |`
        let both = |scenario: &str| -> u64 {
            let row = stdout
                .lines()
                .find(|l| l.starts_with(&format!("| http1 | {scenario} |")))
                .unwrap_or_else(|| panic!("no {scenario} row in {stdout}"));
            row.split('|').nth(5).unwrap().trim().parse().unwrap()
        };
        // The second table's rows: lines of code run per request.
        let lines = |scenario: &str| -> u64 {
            let row = stdout
                .lines()
                .filter(|l| l.starts_with(&format!("| http1 | {scenario} |")))
                .nth(1)
                .unwrap_or_else(|| panic!("no {scenario} row of code lines in {stdout}"));
            row.split('|').nth(5).unwrap().trim().parse().unwrap()
        };
        assert!(
            lines("mesh-plain") > lines("bare") && lines("bare") > 100,
            "code lines per request: bare {}, mesh-plain {}",
            lines("bare"),
            lines("mesh-plain")
        );
        (both("bare"), both("mesh-plain"))
    };
    let (bare, mesh) = count("");
    assert!(bare > 10_000, "bare A + B: {bare} instructions per request");
    assert!(mesh > bare, "mesh-plain {mesh} <= bare {bare}");
    let (_, without) = count("retry,timeout,outlier");
    // The retry policy, the route timeout and outlier detection are a few percent of the
    // mesh's services' work (more in a debug build): far more than the few hundred
    // instructions counts move by. (Istio's metadata exchange goes once per connection
    // between mesh services, so leaving it out changes almost nothing per request.)
    assert!(
        without < mesh - mesh / 50,
        "without retries, timeout and outlier detection {without}, with them {mesh}"
    );
}
