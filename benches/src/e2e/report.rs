//! The results: the JSON written to `benches/results/latest.json` and the Markdown table.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use super::scale::ScaleResult;
use super::{Protocol, Scenario};

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// When the run finished, seconds since the Unix epoch.
    pub finished_unix: u64,
    /// The command line.
    pub command: String,
    /// The machine.
    pub machine: Machine,
    /// Versions of everything measured.
    pub versions: BTreeMap<String, String>,
    /// How it was run.
    pub settings: Settings,
    /// One entry per scenario and protocol.
    pub results: Vec<ScenarioResult>,
    /// Memory and update time with many endpoints.
    pub scale: Vec<ScaleResult>,
    /// The targets, checked at the reference rate.
    pub targets: Vec<TargetCheck>,
}

/// The machine the run was on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Logical CPUs.
    pub nproc: usize,
    /// CPU model, from /proc/cpuinfo.
    pub cpu_model: String,
    /// Kernel release.
    pub kernel: String,
    /// /proc/loadavg when the run started (other work on the machine skews numbers).
    pub loadavg_at_start: String,
    /// /proc/loadavg when the run finished.
    pub loadavg_at_end: String,
}

/// How the run was configured.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// Seconds measured per rate.
    pub duration_s: f64,
    /// Open-loop rates, requests per second.
    pub rates: Vec<u64>,
    /// Closed-loop concurrency for the maximum throughput.
    pub max_concurrency: usize,
    /// Seconds of the closed loop.
    pub max_duration_s: f64,
    /// Body size each way, bytes.
    pub body_bytes: usize,
    /// Whether the processes under test shared one core and the generator had the other.
    pub pinned: bool,
    /// The core of the processes under test, when pinned.
    pub cpu_under_test: Option<usize>,
    /// The generator's core, when pinned.
    pub cpu_generator: Option<usize>,
}

/// One scenario on one protocol.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    /// The scenario.
    pub scenario: Scenario,
    /// The protocol.
    pub protocol: Protocol,
    /// `ok`, `skipped` or `failed`.
    pub status: String,
    /// Why skipped or failed.
    pub reason: Option<String>,
    /// Per open-loop rate.
    pub rates: Vec<RateResult>,
    /// Closed-loop maximum throughput with everything under test on one core, req/s: the
    /// median of [`max_rps_rounds`](Self::max_rps_rounds).
    pub max_rps: Option<f64>,
    /// Each closed-loop round's throughput, req/s, in the order run (the scenarios of a
    /// protocol take their rounds in turn, every other round in reverse order).
    pub max_rps_rounds: Vec<f64>,
    /// Failed requests during the closed loop.
    pub max_rps_errors: u64,
    /// Peak RSS (VmHWM) of each process at the end, KiB.
    pub rss_kb: BTreeMap<String, u64>,
}

impl ScenarioResult {
    /// A scenario that did not run.
    pub fn not_run(scenario: Scenario, protocol: Protocol, status: &str, reason: String) -> Self {
        Self {
            scenario,
            protocol,
            status: status.into(),
            reason: Some(reason),
            rates: Vec::new(),
            max_rps: None,
            max_rps_rounds: Vec::new(),
            max_rps_errors: 0,
            rss_kb: BTreeMap::new(),
        }
    }

    fn at(&self, rate: u64) -> Option<&RateResult> {
        self.rates.iter().find(|r| r.rate == rate)
    }
}

/// One open-loop rate.
#[derive(Debug, Clone, Serialize)]
pub struct RateResult {
    /// Requests per second asked for.
    pub rate: u64,
    /// Requests sent.
    pub requests: u64,
    /// Requests that failed or timed out.
    pub errors: u64,
    /// How they failed: `503 x12, grpc 14 x3, transport x2, timeout x1` (empty: none).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub failures: String,
    /// Median latency from the scheduled send time, µs.
    pub p50_us: u64,
    /// 99th percentile, µs.
    pub p99_us: u64,
    /// 99.9th percentile, µs.
    pub p999_us: u64,
    /// Slowest, µs.
    pub max_us: u64,
    /// The generator's worst lag behind its schedule, µs.
    pub max_send_lag_us: u64,
    /// CPU (user + system) per request summed over every process under test, µs.
    pub cpu_us_per_req: f64,
    /// The same per process.
    pub cpu_us_per_req_by_process: BTreeMap<String, f64>,
    /// Peak RSS (VmHWM) of each process after this rate, KiB.
    pub rss_kb: BTreeMap<String, u64>,
    /// Resident memory of each process right after this rate, by kind: what the RSS of a
    /// bigger program holds in code pages is not memory it allocated.
    pub memory: BTreeMap<String, super::procs::MemoryNow>,
    /// The scenario's closed-loop maximum throughput (repeated here for convenience).
    pub max_rps: Option<f64>,
}

/// One of the targets.
#[derive(Debug, Clone, Serialize)]
pub struct TargetCheck {
    /// The protocol it was checked on.
    pub protocol: Protocol,
    /// What is required.
    pub target: String,
    /// What was measured.
    pub measured: String,
    /// Whether it is met.
    pub met: bool,
}

/// The rate the targets are stated at.
pub const REFERENCE_RATE: u64 = 2000;

fn find(results: &[ScenarioResult], s: Scenario, p: Protocol) -> Option<&ScenarioResult> {
    results
        .iter()
        .find(|r| r.scenario == s && r.protocol == p && r.status == "ok")
}

/// Checks the targets on every protocol where `bare` and `mesh` (and, for the
/// ratios, `sidecar`) ran at the reference rate.
pub fn check_targets(results: &[ScenarioResult]) -> Vec<TargetCheck> {
    let mut checks = Vec::new();
    for p in Protocol::ALL {
        let (Some(bare), Some(mesh)) = (
            find(results, Scenario::Bare, p),
            find(results, Scenario::Mesh, p),
        ) else {
            continue;
        };
        let sidecar = find(results, Scenario::Sidecar, p);
        let mut push = |target: String, measured: String, met: bool| {
            checks.push(TargetCheck {
                protocol: p,
                target,
                measured,
                met,
            });
        };
        if let (Some(b), Some(m)) = (bare.at(REFERENCE_RATE), mesh.at(REFERENCE_RATE)) {
            let added_p99 = m.p99_us as f64 - b.p99_us as f64;
            let added_p50 = m.p50_us as f64 - b.p50_us as f64;
            let added_cpu = m.cpu_us_per_req - b.cpu_us_per_req;
            push(
                "mesh added p99 < 150 µs".into(),
                format!("{added_p99:+.0} µs"),
                added_p99 < 150.0,
            );
            if let Some(s) = sidecar.and_then(|s| s.at(REFERENCE_RATE)) {
                let side_p99 = s.p99_us as f64 - b.p99_us as f64;
                let side_cpu = s.cpu_us_per_req - b.cpu_us_per_req;
                push(
                    "mesh added p99 <= 5% of sidecar's".into(),
                    format!(
                        "{added_p99:+.0} µs vs {side_p99:+.0} µs ({:.1}%)",
                        pct(added_p99, side_p99)
                    ),
                    added_p99 <= 0.05 * side_p99,
                );
                push(
                    "mesh added CPU/req <= 10% of sidecar's".into(),
                    format!(
                        "{added_cpu:+.1} µs vs {side_cpu:+.1} µs ({:.1}%)",
                        pct(added_cpu, side_cpu)
                    ),
                    added_cpu <= 0.10 * side_cpu,
                );
            }
            push(
                "mesh added p50 < 50 µs".into(),
                format!("{added_p50:+.0} µs"),
                added_p50 < 50.0,
            );
        }
        // Memory as it stood after the reference rate: the later, higher rates can overload
        // a scenario, and the connections an overload opens are not the mesh's footprint.
        let rss_at = |r: &ScenarioResult, service: &str| {
            r.at(REFERENCE_RATE)
                .map_or(&r.rss_kb, |x| &x.rss_kb)
                .get(service)
                .copied()
        };
        for service in ["service-a", "service-b"] {
            let (Some(b), Some(m)) = (rss_at(bare, service), rss_at(mesh, service)) else {
                continue;
            };
            let added = m as f64 - b as f64;
            push(
                format!(
                    "mesh added memory (peak RSS through {REFERENCE_RATE}/s), {service} < 5 MiB"
                ),
                format!("{:+.1} MiB", added / 1024.0),
                added < 5.0 * 1024.0,
            );
        }
        if let (Some(b), Some(m)) = (bare.max_rps, mesh.max_rps) {
            push(
                "mesh max throughput >= 85% of bare".into(),
                format!("{m:.0} vs {b:.0} req/s ({:.1}%)", pct(m, b)),
                m >= 0.85 * b,
            );
        }
    }
    checks
}

fn pct(part: f64, whole: f64) -> f64 {
    if whole.abs() < f64::EPSILON {
        0.0
    } else {
        100.0 * part / whole
    }
}

/// The Markdown rendering: latency and CPU per protocol and rate, throughput and memory,
/// scale, targets.
pub fn markdown(report: &Report) -> String {
    let mut out = String::new();
    let m = &report.machine;
    let _ = writeln!(
        out,
        "Machine: {} × {}, Linux {}; load average at start {}, at end {}.",
        m.nproc, m.cpu_model, m.kernel, m.loadavg_at_start, m.loadavg_at_end
    );
    let s = &report.settings;
    let _ = writeln!(
        out,
        "Open loop {} s per rate, {} B bodies each way; processes under test {}; closed loop {} concurrent for {} s per scenario, in rounds the scenarios take in turn.\n",
        s.duration_s,
        s.body_bytes,
        if s.pinned { "on CPU 1, generator on CPU 0" } else { "not pinned" },
        s.max_concurrency,
        s.max_duration_s
    );
    let _ = writeln!(out, "| protocol | scenario | rate/s | p50 µs | p99 µs | p99.9 µs | +p50 µs | +p99 µs | CPU µs/req | errors |");
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|");
    for r in &report.results {
        if r.status != "ok" {
            let _ = writeln!(
                out,
                "| {} | {} | {} | | | | | | | |",
                r.protocol, r.scenario, r.status
            );
            continue;
        }
        let bare = find(&report.results, Scenario::Bare, r.protocol);
        for x in &r.rates {
            let base = bare.and_then(|b| b.at(x.rate));
            let added = |f: fn(&RateResult) -> u64| {
                base.map_or_else(String::new, |b| format!("{:+}", f(x) as i64 - f(b) as i64))
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {:.1} | {} |",
                r.protocol,
                r.scenario,
                x.rate,
                x.p50_us,
                x.p99_us,
                x.p999_us,
                added(|r| r.p50_us),
                added(|r| r.p99_us),
                x.cpu_us_per_req,
                if x.failures.is_empty() {
                    x.errors.to_string()
                } else {
                    format!("{} ({})", x.errors, x.failures)
                }
            );
        }
    }
    let _ = writeln!(
        out,
        "\n| protocol | scenario | max req/s (one core; median of the rounds) | rounds, req/s | peak RSS per process over the whole run, overloads included (MiB) |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|");
    for r in report.results.iter().filter(|r| r.status == "ok") {
        let rss: Vec<String> = r
            .rss_kb
            .iter()
            .map(|(k, v)| format!("{k} {:.1}", *v as f64 / 1024.0))
            .collect();
        let rounds: Vec<String> = r.max_rps_rounds.iter().map(|v| format!("{v:.0}")).collect();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            r.protocol,
            r.scenario,
            r.max_rps.map_or_else(String::new, |v| format!("{v:.0}")),
            rounds.join(", "),
            rss.join(", ")
        );
    }
    let _ = writeln!(
        out,
        "\n| protocol | scenario | resident after {REFERENCE_RATE}/s per process: anonymous (heap, stacks) + file-backed (code, libraries; shared, reclaimable), MiB |"
    );
    let _ = writeln!(out, "|---|---|---|");
    for r in report.results.iter().filter(|r| r.status == "ok") {
        let Some(x) = r.at(REFERENCE_RATE) else {
            continue;
        };
        let mem: Vec<String> = x
            .memory
            .iter()
            .map(|(k, m)| {
                format!(
                    "{k} {:.1} + {:.1}",
                    m.anonymous_kb as f64 / 1024.0,
                    m.file_kb as f64 / 1024.0
                )
            })
            .collect();
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            r.protocol,
            r.scenario,
            mem.join(", ")
        );
    }
    let skipped: Vec<String> = report
        .results
        .iter()
        .filter(|r| r.status != "ok")
        .map(|r| {
            format!(
                "{} {} {}: {}",
                r.scenario,
                r.protocol,
                r.status,
                r.reason.as_deref().unwrap_or("")
            )
        })
        .collect();
    if !skipped.is_empty() {
        let _ = writeln!(out, "\nNot measured: {}.", skipped.join("; "));
    }
    if !report.scale.is_empty() {
        let _ = writeln!(out, "\n| endpoints | RSS growth KiB | build µs | build + publish + first request µs | update one endpoint µs |");
        let _ = writeln!(out, "|---|---|---|---|---|");
        for s in &report.scale {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                s.endpoints, s.rss_growth_kb, s.build_us, s.apply_us, s.update_us
            );
        }
    }
    if !report.targets.is_empty() {
        let _ = writeln!(out, "\nTargets at {REFERENCE_RATE} req/s:\n");
        let _ = writeln!(out, "| protocol | target | measured | met |");
        let _ = writeln!(out, "|---|---|---|---|");
        for t in &report.targets {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                t.protocol,
                t.target,
                t.measured,
                if t.met { "yes" } else { "**no**" }
            );
        }
    }
    let versions: Vec<String> = report
        .versions
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    let _ = writeln!(out, "\nVersions: {}.", versions.join("; "));
    out
}
