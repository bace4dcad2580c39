//! Instructions per request of services A and B themselves, counted by callgrind
//! (`e2e instructions`): the same processes as the load benchmark, run under
//! `valgrind --tool=callgrind`, sent a fixed number of requests one after another.
//!
//! The CPU time the load benchmark measures moves 10 to 25% between runs on a shared
//! machine; an instruction count moves by a few hundred per request. It counts user space
//! only (the kernel's share, the same syscalls for bare and mesh, is not in it), and it
//! counts work, not time: a cache miss is one instruction like any other.
//!
//! Per process: start it under callgrind, send the warm-up requests (connections, pools
//! and interned metric series are made then), zero the counters (`callgrind_control -z`),
//! send the measured requests, dump (`callgrind_control -d`) and read the dump's total.
//! With `E2E_KEEP_LOGS=1` the profiles (`<scenario>-<protocol>-<service>.<pid>.1`, for
//! `callgrind_annotate`) and the services' logs are kept; after a failure, always.
//! valgrind and `callgrind_control` are found through `VALGRIND` / `CALLGRIND_CONTROL` or `PATH`.
//!
//! The profiles carry instruction addresses (`--dump-instr=yes`), and a second table counts
//! the code each request runs: the 64-byte lines holding an instruction that ran at least
//! once per request on average. At a moderate rate the services idle between requests,
//! and A, B, the kernel and the generator share the caches: each request finds much of its
//! code evicted, and the CPU time the load benchmark measures at 2,000 req/s followed these
//! lines (about 30 ns each on the development VM, bare and mesh alike) more closely than it
//! followed the instructions.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::load::Target;
use super::procs::Proc;
use super::proxies::find_binary;
use super::serve::{serve_a_args, serve_b_args};
use super::{BoxError, Protocol, Scenario};

/// What to count.
#[derive(Debug, Clone)]
pub struct Config {
    /// Protocols, each with every scenario.
    pub protocols: Vec<Protocol>,
    /// `bare`, `mesh`, `mesh-plain` (the proxies' scenarios have no services of ours).
    pub scenarios: Vec<Scenario>,
    /// Requests sent before the counters are zeroed.
    pub warmup: u64,
    /// Requests counted.
    pub requests: u64,
    /// Requests in flight at once (1: one after another).
    pub concurrency: u64,
}

/// The count of one protocol and scenario.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Count {
    /// The protocol.
    pub protocol: Protocol,
    /// The scenario.
    pub scenario: Scenario,
    /// Service A's instructions per request (its inbound, the app, its outbound client).
    pub a: u64,
    /// Service B's instructions per request (its inbound and the app).
    pub b: u64,
    /// Service A's lines of code run per request: 64-byte lines holding an instruction
    /// that ran at least once per request on average; `None` when the profile has no
    /// instruction addresses.
    pub a_lines: Option<u64>,
    /// Service B's lines of code run per request.
    pub b_lines: Option<u64>,
}

/// Under valgrind a process starts some 50 times slower than natively.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// Counts every protocol and scenario of `config`, in order. Progress goes to stderr.
pub async fn count(exe: &Path, config: &Config) -> Result<Vec<Count>, BoxError> {
    let not_found = |tool: &str| format!("{tool} not found on PATH (apt-get install valgrind)");
    let tools = Tools {
        valgrind: find_binary("VALGRIND", "valgrind").ok_or_else(|| not_found("valgrind"))?,
        control: find_binary("CALLGRIND_CONTROL", "callgrind_control")
            .ok_or_else(|| not_found("callgrind_control"))?,
    };
    if let Some(s) = config
        .scenarios
        .iter()
        .find(|s| !matches!(s, Scenario::Bare | Scenario::Mesh | Scenario::MeshPlain))
    {
        return Err(
            format!("scenario {s}: only bare, mesh and mesh-plain run our services").into(),
        );
    }
    let dir = std::env::temp_dir().join(format!("mesh-e2e-instructions-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    super::serve::write_certificates(&dir.join("certs"))?;
    let mut counts = Vec::new();
    let result = async {
        for &protocol in &config.protocols {
            for &scenario in &config.scenarios {
                eprintln!("e2e instructions: {protocol} {scenario}");
                counts.push(count_one(exe, &tools, &dir, protocol, scenario, config).await?);
            }
        }
        Ok::<_, BoxError>(())
    }
    .await;
    // The services' logs say why a request failed: kept then, as by the load run.
    if result.is_err() || std::env::var_os("E2E_KEEP_LOGS").is_some_and(|v| v == "1") {
        eprintln!(
            "e2e instructions: profiles and logs kept in {}",
            dir.display()
        );
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result.map(|()| counts)
}

/// valgrind and its control program.
struct Tools {
    valgrind: PathBuf,
    control: PathBuf,
}

async fn count_one(
    exe: &Path,
    tools: &Tools,
    dir: &Path,
    protocol: Protocol,
    scenario: Scenario,
    config: &Config,
) -> Result<Count, BoxError> {
    let certs = dir.join("certs");
    let tag = format!("{scenario}-{protocol}");
    let under_callgrind = |service: &str, serve: Vec<String>| {
        let mut args = vec![
            "--tool=callgrind".to_string(),
            "--dump-instr=yes".to_string(),
            format!(
                "--callgrind-out-file={}",
                dir.join(format!("{tag}-{service}.%p")).display()
            ),
            exe.display().to_string(),
        ];
        args.extend(serve);
        let log = dir.join(format!("{tag}-{service}.log"));
        Proc::spawn(service, &tools.valgrind, &args, None, Some(&log))
    };

    let mut b = under_callgrind("service-b", serve_b_args(protocol, scenario, &certs))?;
    let b_addr = b.read_listen_addr_within(START_TIMEOUT)?;
    let args = serve_a_args(protocol, scenario, b_addr, &certs);
    let mut a = under_callgrind("service-a", args)?;
    let a_addr = a.read_listen_addr_within(START_TIMEOUT)?;

    let target = Target::new(protocol, a_addr)?;
    send(&target, config.warmup, config.concurrency, "warm-up").await?;
    for p in [&a, &b] {
        callgrind_control(&tools.control, "-z", p.pid())?;
    }
    send(&target, config.requests, config.concurrency, "counted").await?;
    let mut per_request = Vec::new();
    let mut lines = Vec::new();
    for p in [&a, &b] {
        callgrind_control(&tools.control, "-d", p.pid())?;
        let profile = dumped(dir, &format!("{tag}-{}.{}.", p.name(), p.pid())).await?;
        let total = total_of(&profile).ok_or("a dumped profile without its total")?;
        per_request.push(total / config.requests.max(1));
        lines.push(hot_code_lines(&profile, config.requests.max(1)));
    }
    Ok(Count {
        protocol,
        scenario,
        a: per_request[0],
        b: per_request[1],
        a_lines: lines[0],
        b_lines: lines[1],
    })
}

/// Sends `n` requests, `concurrency` at a time (each of that many tasks sends its share
/// one after another); every one must succeed.
async fn send(target: &Target, n: u64, concurrency: u64, what: &str) -> Result<(), BoxError> {
    let concurrency = concurrency.clamp(1, n.max(1));
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..concurrency {
        let target = target.clone();
        // Shares that add up to `n`.
        let share = n / concurrency + u64::from(t < n % concurrency);
        tasks.spawn(async move {
            for _ in 0..share {
                let outcome = target.exchange().await;
                if outcome != super::load::Outcome::Ok {
                    return Err(outcome);
                }
            }
            Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Ok(())) => {}
            Ok(Err(outcome)) => return Err(format!("a {what} request failed: {outcome:?}").into()),
            Err(e) => return Err(format!("a {what} task failed: {e}").into()),
        }
    }
    Ok(())
}

fn callgrind_control(control: &Path, flag: &str, pid: u32) -> Result<(), BoxError> {
    let out = Command::new(control)
        .arg(flag)
        .arg(pid.to_string())
        .output()?;
    if !out.status.success() {
        return Err(format!(
            "callgrind_control {flag} {pid}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into());
    }
    Ok(())
}

/// The text of the first dump (`<prefix>1`) in `dir`, once it is written whole (its total
/// is at its end).
async fn dumped(dir: &Path, prefix: &str) -> Result<String, BoxError> {
    let path: PathBuf = dir.join(format!("{prefix}1"));
    let start = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(&path) {
            if total_of(&text).is_some() {
                return Ok(text);
            }
        }
        if start.elapsed() > Duration::from_secs(60) {
            return Err(format!("no total in {} after 60 s", path.display()).into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The 64-byte lines of code holding an instruction that ran at least `min` times, in a
/// callgrind profile dumped with `--dump-instr=yes` (positions `instr line`); `None` for a
/// profile without instruction addresses. An address is the instruction's offset in its
/// object (`ob=`: the executable, libc, ...), so lines are told apart by object too. It is
/// written whole (`0x...`) or relative to the previous cost line's (`+n`, `-n`, `*`), call
/// lines included; a call line's cost is the callee's, not its own instruction's, so only
/// its address counts.
fn hot_code_lines(profile: &str, min: u64) -> Option<u64> {
    let positions = profile.lines().find_map(|l| l.strip_prefix("positions:"))?;
    let mut names = positions.split_whitespace();
    if names.next()? != "instr" {
        return None;
    }
    let other_positions = names.count();
    let number = |s: &str| match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    };
    let mut runs: std::collections::HashMap<(&str, u64), u64> = std::collections::HashMap::new();
    let mut addr = 0u64;
    let mut call_cost = false;
    // The current object, by its compressed id (`(3)`) or its name.
    let mut object = "";
    for line in profile.lines() {
        if line.starts_with("calls=") {
            call_cost = true;
            continue;
        }
        if let Some(ob) = line.strip_prefix("ob=") {
            object = ob.split_whitespace().next().unwrap_or(ob);
            continue;
        }
        let Some(first) = line.bytes().next() else {
            continue;
        };
        if !(first.is_ascii_digit() || matches!(first, b'+' | b'-' | b'*')) {
            continue;
        }
        let mut fields = line.split_whitespace();
        let Some(position) = fields.next() else {
            continue;
        };
        addr = match position.as_bytes()[0] {
            b'+' => addr.wrapping_add(number(&position[1..])?),
            b'-' => addr.wrapping_sub(number(&position[1..])?),
            b'*' => addr,
            _ => number(position)?,
        };
        if std::mem::take(&mut call_cost) {
            continue;
        }
        let ran = fields
            .nth(other_positions)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        *runs.entry((object, addr)).or_default() += ran;
    }
    let hot: std::collections::HashSet<(&str, u64)> = runs
        .into_iter()
        .filter(|&(_, ran)| ran >= min)
        .map(|((object, addr), _)| (object, addr >> 6))
        .collect();
    Some(hot.len() as u64)
}

/// The instruction total of a callgrind profile's text.
fn total_of(profile: &str) -> Option<u64> {
    profile.lines().find_map(|l| {
        l.strip_prefix("summary:")
            .or_else(|| l.strip_prefix("totals:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    })
}

/// The Markdown table: per request, A and B and both, and what each scenario adds over
/// `bare` of the same protocol.
pub fn markdown(counts: &[Count], config: &Config) -> String {
    let mut out = format!(
        "Instructions per request (callgrind, user space), {} requests counted after {} of warm-up, {}.\n\n\
         | protocol | scenario | service A | service B | A + B | added over bare (A / B / both) |\n\
         |---|---|---:|---:|---:|---|\n",
        config.requests,
        config.warmup,
        match config.concurrency {
            0 | 1 => "sent one after another".to_owned(),
            n => format!("{n} at a time"),
        }
    );
    let instructions: Vec<(&Count, u64, u64)> = counts.iter().map(|c| (c, c.a, c.b)).collect();
    push_rows(&mut out, &instructions);
    let lines: Vec<(&Count, u64, u64)> = counts
        .iter()
        .filter_map(|c| Some((c, c.a_lines?, c.b_lines?)))
        .collect();
    if lines.is_empty() {
        return out;
    }
    out.push_str(
        "\nCode run per request: 64-byte lines holding an instruction that ran at least once per request.\n\n\
         | protocol | scenario | service A | service B | A + B | added over bare (A / B / both) |\n\
         |---|---|---:|---:|---:|---|\n",
    );
    push_rows(&mut out, &lines);
    out
}

/// A table's rows: A's and B's figure per protocol and scenario, and what each scenario
/// adds over `bare` of the same protocol.
fn push_rows(out: &mut String, rows: &[(&Count, u64, u64)]) {
    for &(c, a, b) in rows {
        let bare = rows
            .iter()
            .find(|(x, _, _)| x.protocol == c.protocol && x.scenario == Scenario::Bare);
        let added = match bare {
            Some(&(_, ba, bb)) if c.scenario != Scenario::Bare => format!(
                "{:+} / {:+} / {:+}",
                a as i64 - ba as i64,
                b as i64 - bb as i64,
                (a + b) as i64 - (ba + bb) as i64
            ),
            _ => String::new(),
        };
        out.push_str(&format!(
            "| {} | {} | {a} | {b} | {} | {added} |\n",
            c.protocol,
            c.scenario,
            a + b
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_total_of_either_callgrind_format() {
        assert_eq!(
            total_of("events: Ir\nsummary: 12607636\n"),
            Some(12_607_636)
        );
        assert_eq!(
            total_of("events: Ir\n\nfn=main\n0 5\ntotals: 42\n"),
            Some(42)
        );
        assert_eq!(total_of("events: Ir\nfn=main\n0 5\n"), None);
    }

    #[test]
    fn the_table_shows_what_the_mesh_adds_over_bare() {
        let counts = [
            Count {
                protocol: Protocol::Http1,
                scenario: Scenario::Bare,
                a: 42_000,
                b: 10_800,
                a_lines: Some(1_800),
                b_lines: Some(780),
            },
            Count {
                protocol: Protocol::Http1,
                scenario: Scenario::MeshPlain,
                a: 61_400,
                b: 29_000,
                a_lines: Some(2_650),
                b_lines: Some(1_340),
            },
        ];
        let config = Config {
            protocols: vec![Protocol::Http1],
            scenarios: vec![Scenario::Bare, Scenario::MeshPlain],
            warmup: 200,
            requests: 300,
            concurrency: 1,
        };
        let table = markdown(&counts, &config);
        assert!(
            table.contains("| http1 | bare | 42000 | 10800 | 52800 |  |"),
            "{table}"
        );
        assert!(
            table.contains(
                "| http1 | mesh-plain | 61400 | 29000 | 90400 | +19400 / +18200 / +37600 |"
            ),
            "{table}"
        );
        assert!(
            table.contains("| http1 | mesh-plain | 2650 | 1340 | 3990 | +850 / +560 / +1410 |"),
            "{table}"
        );
    }

    #[test]
    fn code_lines_count_instructions_that_ran_often_enough_by_their_64_byte_line() {
        // Two functions; relative addresses continue across call lines and functions.
        let profile =
            "version: 1\ncreator: callgrind-3.19.0\npositions: instr line\nevents: Ir\n\n\
            ob=(1) /bin/e2e\n\
            fn=(1) main\n\
            0x1000 10 300\n\
            +4 * 300\n\
            +60 11 300\n\
            cfn=(2) callee\n\
            calls=300 0x2000 20\n\
            +4 12 90000\n\
            +64 13 299\n\
            fn=(2)\n\
            0x2000 20 150\n\
            * * 150\n\
            -0x1000 21 600\n\
            ob=(2) /lib/libc.so.6\n\
            fn=(3) memcpy\n\
            0x1000 30 300\n\
            ob=(1)\n\
            fn=(1)\n\
            0x1008 10 300\n\
            totals: 96799\n";
        // In the executable: 0x1000 and 0x1004, line 0x40; 0x1040, line 0x41; the call at
        // 0x1044 counts no instruction of its own; 0x1084 ran 299 times (too few); 0x2000
        // ran 300 times in two cost lines (line 0x80); 0x1000 again and 0x1008 (line
        // 0x40). In libc: 0x1000, its own line 0x40.
        assert_eq!(hot_code_lines(profile, 300), Some(4));
        assert_eq!(hot_code_lines(profile, 1), Some(5));
        assert_eq!(
            hot_code_lines("positions: line\nevents: Ir\nfn=(1) main\n10 5\n", 1),
            None,
            "no instruction addresses"
        );
    }
}
