use std::fmt;
use std::str::FromStr;

use example_common::MeshArgs;

/// What the order service does, apart from where it listens.
///
/// A set of clap flags (flatten it into a parser), or built in code with [`Config::new`].
#[derive(Debug, Clone, clap::Args)]
#[non_exhaustive]
pub struct Config {
    /// Payment service to call, by the logical name the mesh routes: HOST:PORT, or
    /// xds:///HOST:PORT (the same target; the listener the control plane is asked for).
    #[arg(long, value_name = "NAME", default_value = "payment-service:8080")]
    pub payment_target: PaymentTarget,

    #[command(flatten)]
    pub mesh: MeshArgs,
}

impl Config {
    /// Calls the payment service at `payment_target`, without a mesh.
    pub fn new(payment_target: PaymentTarget) -> Self {
        Self {
            payment_target,
            mesh: MeshArgs::default(),
        }
    }

    /// Sets the mesh flags.
    #[must_use]
    pub fn with_mesh(mut self, mesh: MeshArgs) -> Self {
        self.mesh = mesh;
        self
    }
}

/// Where the payment service is: `HOST:PORT`, or `xds:///HOST:PORT` to name it the way
/// gRPC's xDS clients do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentTarget {
    authority: http::uri::Authority,
    xds: bool,
}

impl PaymentTarget {
    const XDS_SCHEME: &'static str = "xds:///";

    /// `HOST:PORT`, without the scheme.
    pub fn authority(&self) -> &str {
        self.authority.as_str()
    }

    /// The host (a DNS name or an IP address).
    pub fn host(&self) -> &str {
        self.authority.host()
    }

    /// The port.
    pub fn port(&self) -> u16 {
        // Parsing guarantees a port.
        self.authority.port_u16().unwrap_or_default()
    }

    /// Given as `xds:///...`, that is, meant to be resolved by the mesh.
    pub fn is_xds(&self) -> bool {
        self.xds
    }
}

impl fmt::Display for PaymentTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.xds {
            f.write_str(Self::XDS_SCHEME)?;
        }
        f.write_str(self.authority.as_str())
    }
}

impl FromStr for PaymentTarget {
    type Err = InvalidPaymentTarget;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason: &'static str| InvalidPaymentTarget {
            value: s.to_owned(),
            reason,
        };
        let (rest, xds) = match s.strip_prefix(Self::XDS_SCHEME) {
            Some(rest) => (rest, true),
            None if s.contains("://") => {
                return Err(bad("the only scheme accepted is xds:///"));
            }
            None => (s, false),
        };
        if rest.contains(['/', '@', '?', '#']) {
            return Err(bad("expected just HOST:PORT"));
        }
        let authority: http::uri::Authority =
            rest.parse().map_err(|_| bad("expected HOST:PORT"))?;
        if authority.host().is_empty() {
            return Err(bad("the host is missing"));
        }
        match authority.port_u16() {
            Some(port) if port != 0 => Ok(Self { authority, xds }),
            _ => Err(bad("a port (1-65535) is required")),
        }
    }
}

/// A `--payment-target` that is not `HOST:PORT` or `xds:///HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--payment-target {value:?}: {reason}")]
pub struct InvalidPaymentTarget {
    value: String,
    reason: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_and_xds_forms() -> Result<(), InvalidPaymentTarget> {
        let plain: PaymentTarget = "payment-service:8080".parse()?;
        assert_eq!(plain.authority(), "payment-service:8080");
        assert_eq!((plain.host(), plain.port()), ("payment-service", 8080));
        assert!(!plain.is_xds());

        let xds: PaymentTarget = "xds:///payment-service.shop.svc.cluster.local:8080".parse()?;
        assert!(xds.is_xds());
        assert_eq!(xds.host(), "payment-service.shop.svc.cluster.local");
        assert_eq!(
            xds.to_string(),
            "xds:///payment-service.shop.svc.cluster.local:8080"
        );

        let ip: PaymentTarget = "[::1]:9000".parse()?;
        assert_eq!(ip.port(), 9000);
        Ok(())
    }

    #[test]
    fn bad_targets_say_why() {
        for (bad, why) in [
            ("payment-service", "port"),
            ("payment-service:0", "port"),
            ("payment-service:http", "port"),
            ("http://payment-service:8080", "scheme"),
            ("xds://payment-service:8080", "scheme"),
            ("payment-service:8080/pay", "HOST:PORT"),
            ("user@payment-service:8080", "HOST:PORT"),
            (":8080", "host"),
            ("", "HOST:PORT"),
        ] {
            match bad.parse::<PaymentTarget>() {
                Ok(t) => panic!("{bad:?} accepted as {t:?}"),
                Err(e) => {
                    let msg = e.to_string();
                    assert!(
                        msg.contains("--payment-target") && msg.contains(why),
                        "{bad:?}: {msg}"
                    );
                }
            }
        }
    }
}
