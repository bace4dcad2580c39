use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use example_common::MeshArgs;

/// What the payment service does, apart from where it listens.
///
/// It is a set of clap flags (flatten it into a parser) and can also be built in code,
/// starting from [`Config::default`] (v1, no failures, no added latency, no mesh).
#[derive(Debug, Clone, Default, clap::Args)]
#[non_exhaustive]
pub struct Config {
    /// Version reported on every response as `x-payment-version` metadata.
    #[arg(long = "version", value_enum, default_value_t = PaymentVersion::V1)]
    pub version: PaymentVersion,

    /// Fraction of calls, 0 to 1, that fail with UNAVAILABLE.
    #[arg(long, value_name = "F", default_value_t = FailRate::NEVER)]
    pub fail_rate: FailRate,

    /// Delay added to every call, in milliseconds.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub latency_ms: u64,

    #[command(flatten)]
    pub mesh: MeshArgs,
}

impl Config {
    /// Sets the version reported in `x-payment-version`.
    #[must_use]
    pub fn with_version(mut self, version: PaymentVersion) -> Self {
        self.version = version;
        self
    }

    /// Sets the fraction of calls that fail with `UNAVAILABLE`; it must lie in `0.0..=1.0`.
    pub fn with_fail_rate(mut self, rate: f64) -> Result<Self, InvalidFailRate> {
        self.fail_rate = FailRate::new(rate)?;
        Ok(self)
    }

    /// Sets the delay added to every call (whole milliseconds; anything below is dropped).
    #[must_use]
    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.latency_ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// Sets the mesh flags.
    #[must_use]
    pub fn with_mesh(mut self, mesh: MeshArgs) -> Self {
        self.mesh = mesh;
        self
    }

    /// The delay added to every call.
    pub fn latency(&self) -> Duration {
        Duration::from_millis(self.latency_ms)
    }
}

/// The version a payment-service instance reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, clap::ValueEnum)]
#[non_exhaustive]
pub enum PaymentVersion {
    /// `v1`
    #[default]
    V1,
    /// `v2`
    V2,
}

impl PaymentVersion {
    /// The name sent in `x-payment-version`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V1 => "v1",
            Self::V2 => "v2",
        }
    }
}

impl fmt::Display for PaymentVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A fraction of calls to fail, between 0 and 1 inclusive.
#[derive(Debug, Clone, Copy, Default, PartialEq, PartialOrd)]
pub struct FailRate(f64);

impl FailRate {
    /// No call fails.
    pub const NEVER: Self = Self(0.0);
    /// Every call fails.
    pub const ALWAYS: Self = Self(1.0);

    /// Checks that `rate` lies in `0.0..=1.0` (NaN does not).
    pub fn new(rate: f64) -> Result<Self, InvalidFailRate> {
        if (0.0..=1.0).contains(&rate) {
            Ok(Self(rate))
        } else {
            Err(InvalidFailRate::OutOfRange(rate))
        }
    }

    /// The fraction, in `0.0..=1.0`.
    pub fn get(self) -> f64 {
        self.0
    }
}

impl fmt::Display for FailRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl FromStr for FailRate {
    type Err = InvalidFailRate;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rate = s
            .trim()
            .parse::<f64>()
            .map_err(|_| InvalidFailRate::NotANumber(s.to_owned()))?;
        Self::new(rate)
    }
}

/// A fail rate that is not a number between 0 and 1.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidFailRate {
    /// Not a number at all.
    #[error("--fail-rate must be a number between 0 and 1, got {0:?}")]
    NotANumber(String),
    /// A number outside `0.0..=1.0`, or NaN.
    #[error("--fail-rate must be between 0 and 1, got {0}")]
    OutOfRange(f64),
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    #[command(disable_version_flag = true)]
    struct Cli {
        #[command(flatten)]
        config: Config,
    }

    fn parse(args: &[&str]) -> Result<Config, String> {
        Cli::try_parse_from(std::iter::once("payment-service").chain(args.iter().copied()))
            .map(|cli| cli.config)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults() -> Result<(), String> {
        let config = parse(&[])?;
        assert_eq!(config.version, PaymentVersion::V1);
        assert_eq!(config.fail_rate, FailRate::NEVER);
        assert_eq!(config.latency(), Duration::ZERO);
        Ok(())
    }

    #[test]
    fn all_flags() -> Result<(), String> {
        let config = parse(&[
            "--version",
            "v2",
            "--fail-rate",
            "0.25",
            "--latency-ms",
            "40",
        ])?;
        assert_eq!(config.version, PaymentVersion::V2);
        assert_eq!(config.fail_rate.get(), 0.25);
        assert_eq!(config.latency(), Duration::from_millis(40));
        Ok(())
    }

    #[test]
    fn fail_rate_out_of_range_is_explained() {
        for bad in ["--fail-rate=1.5", "--fail-rate=-0.1", "--fail-rate=NaN"] {
            match parse(&[bad]) {
                Ok(c) => panic!("{bad} accepted as {c:?}"),
                Err(e) => assert!(e.contains("--fail-rate must be between 0 and 1"), "{e}"),
            }
        }
        match parse(&["--fail-rate", "half"]) {
            Ok(c) => panic!("accepted as {c:?}"),
            Err(e) => assert!(
                e.contains("--fail-rate must be a number between 0 and 1"),
                "{e}"
            ),
        }
    }

    #[test]
    fn unknown_version_is_rejected() {
        match parse(&["--version", "v3"]) {
            Ok(c) => panic!("accepted as {c:?}"),
            Err(e) => assert!(
                e.contains("v3") && e.contains("v1") && e.contains("v2"),
                "{e}"
            ),
        }
    }

    #[test]
    fn builder_checks_the_fail_rate() {
        assert!(Config::default().with_fail_rate(1.0).is_ok());
        assert_eq!(
            Config::default().with_fail_rate(1.5).err(),
            Some(InvalidFailRate::OutOfRange(1.5))
        );
    }
}
