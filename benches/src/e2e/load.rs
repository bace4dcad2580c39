//! The load generator: an open loop at a fixed rate (each request timed from the moment
//! it was scheduled to be sent, so a slow response delays no later measurement: latency
//! corrected for coordinated omission), and a closed loop for the maximum throughput.
//!
//! Runs on one current-thread runtime. The tokio timer is only millisecond-precise, so the
//! generator sleeps until just before each send time and then yields (letting responses be
//! processed) until the send time has come: sends leave within microseconds of schedule.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tonic::transport::Channel;

use super::{BoxError, Protocol, BODY};
use crate::proto::echo_client::EchoClient;
use crate::proto::Payload;

/// The longest a single request may take before it counts as an error.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// A client of service A: plain hyper (HTTP/1.1 pool or one h2c connection) or tonic.
// One value per scenario, cloned into each request's task: boxing the larger variant
// would add an allocation per request for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Target {
    /// HTTP/1.1 or HTTP/2.
    Http {
        /// The pooled client.
        client: Client<HttpConnector, Full<Bytes>>,
        /// `http://A/echo`.
        uri: Uri,
    },
    /// gRPC unary calls.
    Grpc(EchoClient<Channel>),
}

impl Target {
    /// A client of service A at `addr`.
    pub fn new(protocol: Protocol, addr: SocketAddr) -> Result<Self, BoxError> {
        Ok(match protocol {
            Protocol::Grpc => {
                let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
                    .tcp_nodelay(true)
                    .connect_lazy();
                Target::Grpc(EchoClient::new(channel))
            }
            _ => {
                let mut connector = HttpConnector::new();
                connector.set_nodelay(true);
                let client = Client::builder(TokioExecutor::new())
                    .http2_only(protocol.is_h2())
                    .pool_max_idle_per_host(1024)
                    .build(connector);
                Target::Http {
                    client,
                    uri: format!("http://{addr}/echo").parse()?,
                }
            }
        })
    }

    /// Sends one request with a 1 KiB body and reads the whole answer; `true` on success.
    pub async fn send(&self) -> bool {
        self.exchange().await == Outcome::Ok
    }

    /// Sends one request with a 1 KiB body and reads the whole answer.
    pub async fn exchange(&self) -> Outcome {
        let call = async {
            match self {
                Target::Http { client, uri } => {
                    let Ok(req) =
                        Request::post(uri.clone()).body(Full::new(Bytes::from_static(&BODY)))
                    else {
                        return Outcome::Transport;
                    };
                    match client.request(req).await {
                        Ok(resp) if resp.status().is_success() => {
                            match resp.into_body().collect().await {
                                Ok(b) => match b.to_bytes().len() == BODY.len() {
                                    true => Outcome::Ok,
                                    false => Outcome::Transport,
                                },
                                Err(_) => Outcome::Transport,
                            }
                        }
                        Ok(resp) => Outcome::Status(resp.status().as_u16()),
                        Err(_) => Outcome::Transport,
                    }
                }
                Target::Grpc(client) => {
                    let mut client = client.clone();
                    let payload = Payload {
                        data: Bytes::from_static(&BODY),
                    };
                    match client.exchange(payload).await {
                        Ok(r) if r.get_ref().data.len() == BODY.len() => Outcome::Ok,
                        Ok(_) => Outcome::Transport,
                        // A status tonic made from a connection or stream error has that
                        // error as its source: a transport failure, as over HTTP.
                        Err(status) if std::error::Error::source(&status).is_some() => {
                            Outcome::Transport
                        }
                        // A status the server answered: beside HTTP's codes, 1000 + code.
                        Err(status) => Outcome::Status(1000 + status.code() as u16),
                    }
                }
            }
        };
        tokio::time::timeout(REQUEST_TIMEOUT, call)
            .await
            .unwrap_or(Outcome::Timeout)
    }
}

/// How one request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A success status and the whole body.
    Ok,
    /// An error status: HTTP's, or 1000 + the gRPC status code.
    Status(u16),
    /// The connection failed or the body was cut short.
    Transport,
    /// No answer within [`REQUEST_TIMEOUT`].
    Timeout,
}

/// How the failed requests of a run failed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Failures {
    /// By error status (HTTP, or 1000 + gRPC code): how many.
    pub status: std::collections::BTreeMap<u16, u64>,
    /// Connection failures and cut bodies.
    pub transport: u64,
    /// Timeouts.
    pub timeout: u64,
}

impl Failures {
    fn count(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Ok => {}
            Outcome::Status(code) => *self.status.entry(code).or_default() += 1,
            Outcome::Transport => self.transport += 1,
            Outcome::Timeout => self.timeout += 1,
        }
    }

    /// A short line: `503 x12, transport x3, timeout x1`; empty when nothing failed.
    pub fn summary(&self) -> String {
        let mut parts: Vec<String> = self
            .status
            .iter()
            .map(|(code, n)| match code {
                1000.. => format!("grpc {} x{n}", code - 1000),
                _ => format!("{code} x{n}"),
            })
            .collect();
        if self.transport > 0 {
            parts.push(format!("transport x{}", self.transport));
        }
        if self.timeout > 0 {
            parts.push(format!("timeout x{}", self.timeout));
        }
        parts.join(", ")
    }
}

/// What one open-loop run measured.
#[derive(Debug, Clone, Default)]
pub struct OpenLoop {
    /// Requests sent.
    pub requests: u64,
    /// Requests that failed or timed out.
    pub errors: u64,
    /// How they failed.
    pub failures: Failures,
    /// Latency percentiles, from each request's scheduled send time, in microseconds.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// The slowest request.
    pub max_us: u64,
    /// The latest a send left after its scheduled time (the generator's own lag).
    pub max_send_lag_us: u64,
}

/// Waits until `when`: the timer for the bulk of the wait, then yields to the runtime
/// (which keeps serving I/O) until the moment comes.
async fn wait_until(when: Instant) {
    loop {
        let now = Instant::now();
        if now >= when {
            return;
        }
        if when - now > Duration::from_millis(2) {
            tokio::time::sleep_until((when - Duration::from_millis(1)).into()).await;
        } else {
            tokio::task::yield_now().await;
        }
    }
}

/// Sends `rate` requests per second for `duration` at fixed intervals, each in its own
/// task whatever the others are doing, then waits for all (each bounded by
/// [`REQUEST_TIMEOUT`]).
pub async fn open_loop(target: &Target, rate: u64, duration: Duration) -> OpenLoop {
    let rate = rate.max(1);
    let n = ((rate as f64) * duration.as_secs_f64()).round().max(1.0) as u64;
    let interval = Duration::from_nanos(1_000_000_000 / rate);
    let start = Instant::now() + Duration::from_millis(5);
    let mut tasks = Vec::with_capacity(n as usize);
    let mut max_lag = Duration::ZERO;
    for i in 0..n {
        let scheduled = start + interval.saturating_mul(u32::try_from(i).unwrap_or(u32::MAX));
        wait_until(scheduled).await;
        max_lag = max_lag.max(scheduled.elapsed());
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            let outcome = target.exchange().await;
            (scheduled.elapsed(), outcome)
        }));
    }
    let mut latencies = Vec::with_capacity(tasks.len());
    let mut errors = 0;
    let mut failures = Failures::default();
    for task in tasks {
        match task.await {
            Ok((latency, outcome)) => {
                latencies.push(latency.as_micros() as u64);
                if outcome != Outcome::Ok {
                    errors += 1;
                    failures.count(outcome);
                }
            }
            Err(_) => {
                errors += 1;
                failures.count(Outcome::Transport);
            }
        }
    }
    latencies.sort_unstable();
    OpenLoop {
        requests: n,
        errors,
        failures,
        p50_us: percentile(&latencies, 0.50),
        p99_us: percentile(&latencies, 0.99),
        p999_us: percentile(&latencies, 0.999),
        max_us: latencies.last().copied().unwrap_or(0),
        max_send_lag_us: max_lag.as_micros() as u64,
    }
}

/// The value below which a fraction `p` of the sorted `values` lie (nearest rank).
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// What a closed-loop run measured.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClosedLoop {
    /// Requests answered successfully.
    pub completed: u64,
    /// Requests that failed.
    pub errors: u64,
    /// Successful requests per second.
    pub rps: f64,
}

/// `concurrency` workers, each sending the next request as soon as the previous one is
/// answered, for `duration` (plus at most one [`REQUEST_TIMEOUT`] for the last requests).
pub async fn closed_loop(target: &Target, concurrency: usize, duration: Duration) -> ClosedLoop {
    let start = Instant::now();
    let deadline = start + duration;
    let workers: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let target = target.clone();
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0u64, 0u64);
                while Instant::now() < deadline {
                    if target.send().await {
                        ok += 1;
                    } else {
                        failed += 1;
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    let (mut completed, mut errors) = (0, 0);
    for worker in workers {
        if let Ok((ok, failed)) = worker.await {
            completed += ok;
            errors += failed;
        }
    }
    let secs = start.elapsed().as_secs_f64().max(1e-9);
    ClosedLoop {
        completed,
        errors,
        rps: completed as f64 / secs,
    }
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn percentile_is_nearest_rank() {
        let v: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&v, 0.5), 500);
        assert_eq!(percentile(&v, 0.99), 990);
        assert_eq!(percentile(&v, 0.999), 999);
        assert_eq!(percentile(&[], 0.5), 0);
        assert_eq!(percentile(&[7], 0.999), 7);
    }
}
