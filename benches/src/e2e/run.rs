//! One run: every scenario on every protocol, one after another, each with fresh
//! processes; then the scale probes; then the report.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::load::{closed_loop, open_loop, Target};
use super::procs::{have_taskset, pin_self, Proc};
use super::proxies::{find_binary, start_envoy_pair, start_haproxy, version_of};
use super::report::{check_targets, Machine, RateResult, Report, ScenarioResult, Settings};
use super::scale::ScaleResult;
use super::serve::{serve_a_args, serve_b_args};
use super::{BoxError, Protocol, Scenario, BODY};

/// The core the processes under test share.
const CPU_UNDER_TEST: usize = 1;
/// The generator's core.
const CPU_GENERATOR: usize = 0;

/// What to run.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RunConfig {
    /// Measured time per rate.
    pub duration: Duration,
    /// Open-loop rates.
    pub rates: Vec<u64>,
    /// Protocols, in order.
    pub protocols: Vec<Protocol>,
    /// Scenarios, in order.
    pub scenarios: Vec<Scenario>,
    /// Open-loop warm-up before the measured rates (500 req/s).
    pub warmup: Duration,
    /// Closed-loop concurrency.
    pub concurrency: usize,
    /// Closed-loop time.
    pub max_duration: Duration,
    /// Endpoint counts for the scale probes (empty: none).
    pub scale_endpoints: Vec<usize>,
    /// Pin the processes under test to CPU 1 and the generator to CPU 0.
    pub pin: bool,
    /// The command line, for the report.
    pub command: String,
}

impl RunConfig {
    /// The full run: 8 s per rate at 500, 2,000 and 5,000 req/s, every protocol and
    /// scenario, 4 s of closed loop at 64 concurrent requests, scale 10 to 10,000 endpoints.
    pub fn new() -> Self {
        Self {
            duration: Duration::from_secs(8),
            rates: vec![500, 2000, 5000],
            protocols: Protocol::ALL.to_vec(),
            scenarios: Scenario::ALL.to_vec(),
            warmup: Duration::from_secs(1),
            concurrency: 64,
            max_duration: Duration::from_secs(4),
            scale_endpoints: vec![10, 1000, 10_000],
            pin: true,
            command: String::new(),
        }
    }
}

impl Default for RunConfig {
    fn default() -> Self {
        Self::new()
    }
}

/// Shared by every scenario of a run.
struct Context {
    exe: PathBuf,
    dir: PathBuf,
    cpu: Option<usize>,
    envoy: Option<PathBuf>,
    haproxy: Option<PathBuf>,
}

/// Runs everything `config` asks for and returns the report. Progress goes to stderr.
pub async fn run(config: &RunConfig) -> Result<Report, BoxError> {
    let loadavg_at_start = loadavg();
    let nproc = cpu_count();
    let pinned = config.pin && nproc >= 2 && have_taskset() && pin_self(CPU_GENERATOR);
    if config.pin && !pinned {
        eprintln!("e2e: not pinning (needs 2 CPUs and taskset); numbers include contention with the generator");
    }
    let dir = std::env::temp_dir().join(format!("mesh-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    super::serve::write_certificates(&dir.join("certs"))?;
    let ctx = Context {
        exe: std::env::current_exe()?,
        dir: dir.clone(),
        cpu: pinned.then_some(CPU_UNDER_TEST),
        envoy: find_binary("ENVOY", "envoy"),
        haproxy: find_binary("HAPROXY", "haproxy"),
    };

    let mut results = Vec::new();
    let mut failed = false;
    for &protocol in &config.protocols {
        // Every scenario's processes run side by side (all on the core under test; the
        // idle ones cost nothing), and the rates are interleaved across scenarios, so a
        // change in the machine's background load hits every scenario alike.
        let mut running = Vec::new();
        for &scenario in &config.scenarios {
            let missing = match scenario {
                Scenario::Sidecar if ctx.envoy.is_none() => {
                    Some("envoy not found (set ENVOY or put envoy on PATH)")
                }
                Scenario::Haproxy if ctx.haproxy.is_none() => {
                    Some("haproxy not found (set HAPROXY or put haproxy on PATH)")
                }
                _ => None,
            };
            if let Some(reason) = missing {
                results.push(ScenarioResult::not_run(
                    scenario,
                    protocol,
                    "skipped",
                    reason.into(),
                ));
                continue;
            }
            match Running::start(&ctx, config, scenario, protocol).await {
                Ok(r) => running.push(r),
                Err(err) => {
                    failed = true;
                    results.push(ScenarioResult::not_run(
                        scenario,
                        protocol,
                        "failed",
                        err.to_string(),
                    ));
                }
            }
        }
        for &rate in &config.rates {
            for r in &mut running {
                r.measure(rate, config.duration).await;
            }
        }
        // The closed loop too, in rounds taken in turn (each scenario's maximum is the
        // median of its rounds): one scenario's whole closed loop after another's let a
        // few seconds of background load decide their ratio.
        // Every other round in reverse, so that no scenario always follows the same one
        // (the results are sorted after).
        let rounds = max_rounds(config.max_duration);
        let per_round = config.max_duration / rounds;
        for round in 0..rounds {
            if round > 0 {
                running.reverse();
            }
            for r in &mut running {
                r.max_round(config.concurrency, per_round).await;
            }
        }
        for r in running {
            let result = r.finish();
            eprintln!("e2e: {}", progress_line(&result));
            results.push(result);
        }
    }
    results.sort_by_key(|r| (r.protocol, r.scenario));

    let mut scale = Vec::new();
    for &n in &config.scale_endpoints {
        match scale_probe(&ctx, n) {
            Ok(s) => {
                eprintln!(
                    "e2e: scale {n} endpoints: +{} KiB, apply {} µs, update {} µs",
                    s.rss_growth_kb, s.apply_us, s.update_us
                );
                scale.push(s);
            }
            Err(err) => {
                failed = true;
                eprintln!("e2e: scale {n} endpoints failed: {err}");
            }
        }
    }

    // Requests that failed: service A's log says why (its relay writes each distinct
    // reason, with counts), so it is kept. (The ninth stop of issue 14 lost the cause of
    // 502s under a VM stall with the logs; it was A's breaker.)
    let requests_failed = results
        .iter()
        .any(|r| r.max_rps_errors > 0 || r.rates.iter().any(|rate| rate.errors > 0));
    if failed {
        eprintln!("e2e: something failed; logs kept in {}", dir.display());
    } else if requests_failed {
        eprintln!(
            "e2e: requests failed; the services' logs (why) kept in {}",
            dir.display()
        );
    } else if std::env::var_os("E2E_KEEP_LOGS").is_some() {
        eprintln!("e2e: logs kept in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let targets = check_targets(&results);
    Ok(Report {
        finished_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        command: config.command.clone(),
        machine: Machine {
            nproc,
            cpu_model: cpu_model(),
            kernel: read_trimmed("/proc/sys/kernel/osrelease"),
            loadavg_at_start,
            loadavg_at_end: loadavg(),
        },
        versions: versions(&ctx),
        settings: Settings {
            duration_s: config.duration.as_secs_f64(),
            rates: config.rates.clone(),
            max_concurrency: config.concurrency,
            max_duration_s: config.max_duration.as_secs_f64(),
            body_bytes: BODY.len(),
            pinned,
            cpu_under_test: pinned.then_some(CPU_UNDER_TEST),
            cpu_generator: pinned.then_some(CPU_GENERATOR),
        },
        results,
        scale,
        targets,
    })
}

fn progress_line(r: &ScenarioResult) -> String {
    if r.status != "ok" {
        return format!(
            "{} {}: {} ({})",
            r.scenario,
            r.protocol,
            r.status,
            r.reason.as_deref().unwrap_or("")
        );
    }
    let rates: Vec<String> = r
        .rates
        .iter()
        .map(|x| {
            let failures = if x.failures.is_empty() {
                String::new()
            } else {
                format!(" ({})", x.failures)
            };
            format!(
                "{}/s p50 {} p99 {} µs, {:.0} µs CPU/req, {} errors{failures}",
                x.rate, x.p50_us, x.p99_us, x.cpu_us_per_req, x.errors
            )
        })
        .collect();
    format!(
        "{} {}: {}; max {:.0} req/s",
        r.scenario,
        r.protocol,
        rates.join("; "),
        r.max_rps.unwrap_or(0.0)
    )
}

/// Closed-loop rounds per scenario: one per half second of `max_duration`, at most 5.
fn max_rounds(max_duration: Duration) -> u32 {
    let halves = (max_duration.as_secs_f64() / 0.5).floor();
    if halves >= 5.0 {
        5
    } else if halves >= 1.0 {
        halves as u32
    } else {
        1
    }
}

/// The median of `values` (the mean of the middle two when their count is even).
fn median(values: &[f64]) -> Option<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// One scenario's processes, running, and what has been measured on them.
struct Running {
    scenario: Scenario,
    protocol: Protocol,
    /// Killed when dropped, on every path.
    procs: Vec<Proc>,
    target: Target,
    rates: Vec<RateResult>,
    /// Each closed-loop round's throughput, req/s.
    max_rounds: Vec<f64>,
    /// Failed requests over the closed-loop rounds.
    max_errors: u64,
}

impl Running {
    /// Starts B, the proxies if any, and A; warms them up.
    async fn start(
        ctx: &Context,
        config: &RunConfig,
        scenario: Scenario,
        protocol: Protocol,
    ) -> Result<Self, BoxError> {
        let certs = ctx.dir.join("certs");
        let log = |service: &str| ctx.dir.join(format!("{scenario}-{protocol}-{service}.log"));
        let mut procs = Vec::new();
        let args = serve_b_args(protocol, scenario, &certs);
        let mut b = Proc::spawn("service-b", &ctx.exe, &args, ctx.cpu, Some(&log("b")))?;
        let b_addr = b.read_listen_addr()?;
        procs.push(b);
        let proxy_dir = ctx.dir.join(format!("{scenario}-{protocol}"));
        let upstream: SocketAddr = match (scenario, &ctx.envoy, &ctx.haproxy) {
            (Scenario::Sidecar, Some(envoy), _) => {
                std::fs::create_dir_all(&proxy_dir)?;
                let (proxies, addr) =
                    start_envoy_pair(envoy, &proxy_dir, &certs, protocol, b_addr, ctx.cpu)?;
                procs.extend(proxies);
                addr
            }
            (Scenario::Haproxy, _, Some(haproxy)) => {
                std::fs::create_dir_all(&proxy_dir)?;
                let (proxies, addr) =
                    start_haproxy(haproxy, &proxy_dir, protocol, b_addr, ctx.cpu)?;
                procs.extend(proxies);
                addr
            }
            _ => b_addr,
        };
        let args = serve_a_args(protocol, scenario, upstream, &certs);
        let mut a = Proc::spawn("service-a", &ctx.exe, &args, ctx.cpu, Some(&log("a")))?;
        let a_addr = a.read_listen_addr()?;
        procs.push(a);

        let target = Target::new(protocol, a_addr)?;
        let warm = open_loop(&target, 500, config.warmup).await;
        if warm.errors == warm.requests {
            return Err(format!(
                "all {} warm-up requests failed (logs in {})",
                warm.requests,
                ctx.dir.display()
            )
            .into());
        }
        Ok(Self {
            scenario,
            protocol,
            procs,
            target,
            rates: Vec::new(),
            max_rounds: Vec::new(),
            max_errors: 0,
        })
    }

    /// One open-loop rate: latency, CPU per request of each process, peak RSS so far.
    async fn measure(&mut self, rate: u64, duration: Duration) {
        let before: Vec<u64> = self.procs.iter().map(Proc::cpu_us).collect();
        let r = open_loop(&self.target, rate, duration).await;
        let after: Vec<u64> = self.procs.iter().map(Proc::cpu_us).collect();
        let n = r.requests.max(1) as f64;
        let by_process: BTreeMap<String, f64> = self
            .procs
            .iter()
            .zip(before.iter().zip(&after))
            .map(|(p, (b, a))| (p.name().to_string(), a.saturating_sub(*b) as f64 / n))
            .collect();
        self.rates.push(RateResult {
            rate,
            requests: r.requests,
            errors: r.errors,
            failures: r.failures.summary(),
            p50_us: r.p50_us,
            p99_us: r.p99_us,
            p999_us: r.p999_us,
            max_us: r.max_us,
            max_send_lag_us: r.max_send_lag_us,
            cpu_us_per_req: by_process.values().sum(),
            cpu_us_per_req_by_process: by_process,
            rss_kb: rss_by_process(&self.procs),
            memory: self
                .procs
                .iter()
                .map(|p| (p.name().to_string(), p.memory_now()))
                .collect(),
            max_rps: None,
        });
    }

    /// One closed-loop round.
    async fn max_round(&mut self, concurrency: usize, duration: Duration) {
        let round = closed_loop(&self.target, concurrency, duration).await;
        self.max_rounds.push(round.rps);
        self.max_errors += round.errors;
    }

    /// The result; the processes stop when `self` is dropped.
    fn finish(mut self) -> ScenarioResult {
        let max = median(&self.max_rounds);
        for r in &mut self.rates {
            r.max_rps = max;
        }
        ScenarioResult {
            scenario: self.scenario,
            protocol: self.protocol,
            status: "ok".into(),
            reason: None,
            rates: std::mem::take(&mut self.rates),
            max_rps: max,
            max_rps_rounds: std::mem::take(&mut self.max_rounds),
            max_rps_errors: self.max_errors,
            rss_kb: rss_by_process(&self.procs),
        }
    }
}

fn rss_by_process(procs: &[Proc]) -> BTreeMap<String, u64> {
    procs
        .iter()
        .map(|p| (p.name().to_string(), p.peak_rss_kb()))
        .collect()
}

/// Runs `e2e scale-probe N` in a fresh process and reads its JSON line.
fn scale_probe(ctx: &Context, n: usize) -> Result<ScaleResult, BoxError> {
    let mut cmd = match ctx.cpu {
        Some(cpu) => {
            let mut c = std::process::Command::new("taskset");
            c.arg("-c").arg(cpu.to_string()).arg(&ctx.exe);
            c
        }
        None => std::process::Command::new(&ctx.exe),
    };
    let out = cmd
        .arg("scale-probe")
        .arg(n.to_string())
        .stderr(std::process::Stdio::inherit())
        .output()?;
    if !out.status.success() {
        return Err(format!("scale-probe {n} exited with {}", out.status).into());
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn versions(ctx: &Context) -> BTreeMap<String, String> {
    let mut v = BTreeMap::new();
    v.insert("mesh".into(), env!("CARGO_PKG_VERSION").into());
    v.insert("rustc".into(), env!("E2E_RUSTC_VERSION").into());
    v.insert("crates".into(), env!("E2E_CRATE_VERSIONS").into());
    if let Some(envoy) = &ctx.envoy {
        v.insert("envoy".into(), version_of(envoy, &["--version"]));
    }
    if let Some(haproxy) = &ctx.haproxy {
        v.insert("haproxy".into(), version_of(haproxy, &["-v"]));
    }
    v
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

fn loadavg() -> String {
    read_trimmed("/proc/loadavg")
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn cpuinfo() -> String {
    std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default()
}

/// Logical CPUs of the machine (not of this process's affinity mask).
fn cpu_count() -> usize {
    let n = cpuinfo()
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    if n > 0 {
        n
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

fn cpu_model() -> String {
    cpuinfo()
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or_else(|| "unknown".into(), |(_, m)| m.trim().to_string())
}

/// Whether `path`'s parent exists or can be made.
pub fn ensure_parent(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => std::fs::create_dir_all(parent),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::{max_rounds, median};
    use std::time::Duration;

    #[test]
    fn the_closed_loop_takes_a_round_per_half_second_up_to_five() {
        assert_eq!(max_rounds(Duration::from_secs(4)), 5);
        assert_eq!(max_rounds(Duration::from_secs_f64(1.2)), 2);
        assert_eq!(max_rounds(Duration::from_millis(500)), 1);
        assert_eq!(max_rounds(Duration::from_millis(100)), 1);
    }

    #[test]
    fn the_median_of_odd_and_even_counts() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 100.0]), Some(3.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 100.0]), Some(3.0));
    }
}
