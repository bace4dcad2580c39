//! The processes under test: spawned (pinned to a core with `taskset`), watched through
//! `/proc` (CPU time, peak RSS), killed when dropped.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Why a process under test could not be started or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProcError {
    /// The program could not be started.
    #[error("cannot start {name} ({program}): {source}")]
    Spawn {
        /// The process's role.
        name: String,
        /// The program run.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The process did not say where it listens, or exited first.
    #[error("{name} did not report its address within {secs} s: {detail}")]
    NoAddress {
        /// The process's role.
        name: String,
        /// How long it had.
        secs: u64,
        /// What was read instead, or how it ended.
        detail: String,
    },
    /// The process did not accept connections on its port in time.
    #[error("{name} is not accepting on {addr} after {secs} s{detail}")]
    NotListening {
        /// The process's role.
        name: String,
        /// The address polled.
        addr: SocketAddr,
        /// How long it had.
        secs: u64,
        /// Its exit status, when it exited.
        detail: String,
    },
}

/// A running process under test; killed and reaped on drop.
#[derive(Debug)]
pub struct Proc {
    name: String,
    child: Child,
}

/// How long a process has to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(15);

impl Proc {
    /// Starts `program args` as `name`, pinned to `cpu` when given, with stdout piped (read
    /// it with [`Proc::read_listen_addr`]) and stderr to `log` (or discarded).
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        cpu: Option<usize>,
        log: Option<&Path>,
    ) -> Result<Self, ProcError> {
        let mut cmd = match cpu {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(cpu.to_string()).arg(program);
                c
            }
            None => Command::new(program),
        };
        cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped());
        let stderr = log
            .and_then(|p| std::fs::File::create(p).ok())
            .map_or_else(Stdio::null, Stdio::from);
        cmd.stderr(stderr);
        let child = cmd.spawn().map_err(|source| ProcError::Spawn {
            name: name.into(),
            program: program.display().to_string(),
            source,
        })?;
        Ok(Self {
            name: name.into(),
            child,
        })
    }

    /// The role name (`service-a`, `envoy-b`...).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its process id (`taskset` execs the program, so this is the program's).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Reads the `LISTEN <addr>` line the benchmark's own services print.
    pub fn read_listen_addr(&mut self) -> Result<SocketAddr, ProcError> {
        self.read_listen_addr_within(START_TIMEOUT)
    }

    /// [`Proc::read_listen_addr`], waiting up to `timeout` (a process under valgrind
    /// starts slowly).
    pub fn read_listen_addr_within(&mut self, timeout: Duration) -> Result<SocketAddr, ProcError> {
        let no_addr = |detail: String| ProcError::NoAddress {
            name: self.name.clone(),
            secs: timeout.as_secs(),
            detail,
        };
        let Some(stdout) = self.child.stdout.take() else {
            return Err(no_addr("stdout is not piped".into()));
        };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = match rx.recv_timeout(timeout) {
            Ok(line) => line,
            Err(_) => return Err(no_addr("nothing read".into())),
        };
        line.trim()
            .strip_prefix("LISTEN ")
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| {
                let status = self.child.try_wait().ok().flatten();
                no_addr(format!("read {:?}, exit status {status:?}", line.trim()))
            })
    }

    /// Waits until the process accepts TCP connections on `addr`.
    pub fn wait_listening(&mut self, addr: SocketAddr) -> Result<(), ProcError> {
        let start = Instant::now();
        while start.elapsed() < START_TIMEOUT {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(ProcError::NotListening {
                    name: self.name.clone(),
                    addr,
                    secs: START_TIMEOUT.as_secs(),
                    detail: format!(" (exited: {status})"),
                });
            }
            if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(ProcError::NotListening {
            name: self.name.clone(),
            addr,
            secs: START_TIMEOUT.as_secs(),
            detail: String::new(),
        })
    }

    /// User + system CPU time of all its threads so far, in microseconds (0 if unreadable).
    pub fn cpu_us(&self) -> u64 {
        cpu_us_of(&format!("/proc/{}/stat", self.pid()))
    }

    /// Peak resident set size (`VmHWM`), in KiB (0 if unreadable).
    pub fn peak_rss_kb(&self) -> u64 {
        status_kb(self.pid(), "VmHWM:")
    }

    /// Resident memory now, by kind (0s if unreadable).
    pub fn memory_now(&self) -> MemoryNow {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        let kb = |key: &str| status_value_kb(&status, key);
        MemoryNow {
            anonymous_kb: kb("RssAnon:"),
            file_kb: kb("RssFile:"),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // SIGTERM first: a process under valgrind then exits through valgrind, which
        // removes its three vgdb FIFOs from /tmp (SIGKILL left them there, 18 per
        // `instructions` run). SIGKILL if it has not gone within a second.
        let asked = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if asked {
            let deadline = Instant::now() + Duration::from_secs(1);
            while Instant::now() < deadline {
                if matches!(self.child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Clock ticks per second for `/proc/*/stat` times (`getconf CLK_TCK`, else 100).
fn clock_ticks() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|t| *t > 0)
            .unwrap_or(100)
    })
}

/// utime + stime of a `/proc/.../stat` file, in microseconds.
pub fn cpu_us_of(path: &str) -> u64 {
    let Ok(stat) = std::fs::read_to_string(path) else {
        return 0;
    };
    // The command name may hold spaces and parentheses: the fields start after the last ')'.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the line: 12th and 13th after ')'.
    (field(11) + field(12)) * 1_000_000 / clock_ticks()
}

/// A process's resident memory at one moment, split as the kernel counts it.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct MemoryNow {
    /// `RssAnon`: heap, stacks and other private memory, KiB.
    pub anonymous_kb: u64,
    /// `RssFile`: pages of mapped files (the program's code and its libraries, shared with
    /// every process mapping the same file and dropped under memory pressure), KiB.
    pub file_kb: u64,
}

/// The value of a `kB` line (`key` with its colon) of a status file's text, 0 if absent.
fn status_value_kb(status: &str, key: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A `kB` line of `/proc/PID/status` (`VmHWM:`, `VmRSS:`), 0 if unreadable.
pub fn status_kb(pid: u32, key: &str) -> u64 {
    status_kb_of(&format!("/proc/{pid}/status"), key)
}

/// A `kB` line of a status file.
pub fn status_kb_of(path: &str, key: &str) -> u64 {
    std::fs::read_to_string(path).map_or(0, |s| status_value_kb(&s, key))
}

/// Pins the calling process (the load generator) to `cpu` with `taskset -p`; threads it
/// starts later inherit the mask. Returns whether it worked.
pub fn pin_self(cpu: usize) -> bool {
    Command::new("taskset")
        .arg("-pc")
        .arg(cpu.to_string())
        .arg(std::process::id().to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether `taskset` can run here.
pub fn have_taskset() -> bool {
    Command::new("taskset")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
