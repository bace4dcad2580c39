//! Runs the end-to-end benchmark in its quickest mode, for real (processes, sockets on
//! 127.0.0.1, mTLS, Envoy when installed), and checks that the JSON it writes has every
//! field the README promises and that requests went through. No timing is asserted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;

fn envoy_installed() -> bool {
    if let Some(path) = std::env::var_os("ENVOY") {
        return PathBuf::from(path).is_file();
    }
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join("envoy").is_file()))
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
        .args(["--quick", "--duration", "0.3", "--max-duration", "0.3"])
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
