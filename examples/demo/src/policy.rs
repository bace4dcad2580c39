//! The demo's mesh policy, written the way users write it: an Istio-style policy file
//! (`services`, `destinationRules`, `virtualServices`, as in the seed guide), rendered as
//! YAML text and turned into a snapshot by `mesh_core::policy_file` — the same parser a
//! service started with `--policy FILE` uses.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use mesh_core::policy_file::PolicyFile;
use mesh_core::Snapshot;

use crate::identity::{Issued, NAMESPACE, ORDER_SA, PAYMENT_SA};
use crate::DemoError;

/// The logical name the order-service calls.
pub const PAYMENT_TARGET: &str = "payment-service:8080";

/// The `end-user` that the header route sends to v2.
pub const BETA_TESTER: &str = "beta-tester";

/// One payment-service endpoint as Kubernetes would list it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its `version` label (`v1`, `v2`).
    pub version: &'static str,
}

/// VirtualService `retries`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retries {
    /// Retries after the first attempt.
    pub attempts: u32,
    /// Timeout of each attempt.
    pub per_try_timeout: Duration,
}

/// DestinationRule `outlierDetection`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outlier {
    /// `consecutive5xxErrors` (a gRPC `UNAVAILABLE` counts).
    pub consecutive_5xx: u32,
    /// `interval`: how often ejections are reviewed.
    pub interval: Duration,
    /// `baseEjectionTime`.
    pub base_ejection_time: Duration,
    /// `maxEjectionPercent`.
    pub max_ejection_percent: u32,
}

/// DestinationRule `connectionPool`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    /// `tcp.maxConnections`.
    pub max_connections: u32,
    /// `http.http1MaxPendingRequests`.
    pub http1_max_pending_requests: u32,
    /// `http.http2MaxRequests`: requests in flight at once (gRPC runs on HTTP/2).
    pub http2_max_requests: u32,
    /// `http.maxRetries`: retries in flight at once (Envoy's default is 3).
    pub max_retries: u32,
}

/// What a story wants the mesh to do; [`Policy::yaml`] writes it as a policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Percent of orders sent to subset v2 (the rest go to v1).
    pub v2_weight: u32,
    /// Route `end-user: beta-tester` to v2 whatever the weights.
    pub beta_testers_to_v2: bool,
    /// Retries; `None` writes `attempts: 0` (no retries at all).
    pub retries: Option<Retries>,
    /// Outlier detection on every subset.
    pub outlier: Option<Outlier>,
    /// A connection-pool limit on every subset.
    pub pool: Option<Pool>,
}

impl Policy {
    /// Everything to v1, no retries, no limits.
    pub fn all_v1() -> Self {
        Self {
            v2_weight: 0,
            beta_testers_to_v2: false,
            retries: None,
            outlier: None,
            pool: None,
        }
    }

    /// `v2_weight` percent to v2, the rest to v1.
    #[must_use]
    pub fn with_v2_weight(mut self, percent: u32) -> Self {
        self.v2_weight = percent.min(100);
        self
    }

    /// Adds the beta-tester header route.
    #[must_use]
    pub fn with_beta_testers_to_v2(mut self) -> Self {
        self.beta_testers_to_v2 = true;
        self
    }

    /// Sets the retry policy.
    #[must_use]
    pub fn with_retries(mut self, retries: Retries) -> Self {
        self.retries = Some(retries);
        self
    }

    /// Sets outlier detection.
    #[must_use]
    pub fn with_outlier(mut self, outlier: Outlier) -> Self {
        self.outlier = Some(outlier);
        self
    }

    /// Sets the connection-pool limits.
    #[must_use]
    pub fn with_pool(mut self, pool: Pool) -> Self {
        self.pool = Some(pool);
        self
    }

    /// The policy file text for these endpoints, for a caller with identity `caller`
    /// (its `certificates:` and `workload:` blocks, and `serviceAccounts` on the payment
    /// service, which turns auto mTLS on); plaintext without one.
    pub fn yaml(&self, endpoints: &[Endpoint], caller: Option<&Issued>) -> String {
        self.render(endpoints, caller, caller.is_some())
    }

    /// The input of the dev control plane for these endpoints: the same services (with
    /// `serviceAccounts`, so clusters carry auto mTLS), DestinationRule and VirtualService,
    /// without any workload's own `certificates:`/`workload:` blocks (each service's
    /// bootstrap names its certificates).
    pub fn control_plane_yaml(&self, endpoints: &[Endpoint]) -> String {
        self.render(endpoints, None, true)
    }

    fn render(&self, endpoints: &[Endpoint], caller: Option<&Issued>, mtls: bool) -> String {
        let mut y = String::with_capacity(2048);
        y.push_str(
            "# Written by the demo; the same file works with `order-service --policy FILE`.\n\
             namespace: default\n",
        );
        if mtls && caller.is_none() {
            // No certificates in this file (the control plane's input): auto mTLS is
            // Istio's default all the same.
            y.push_str("autoMtls: true\n");
        }
        if let Some(id) = caller {
            y.push_str(&id.certificates_yaml());
            let _ = write!(
                y,
                "workload:\n  name: {ORDER_SA}\n  serviceAccount: {sa}\n  labels: {{ app: {ORDER_SA}, version: v1 }}\n",
                sa = id.service_account
            );
            // The demo's HTTP client (an ingress, in a cluster) is not in the mesh: the
            // order-service's own port is plaintext, not PERMISSIVE (which would wait for
            // the first byte of every connection to tell TLS from plaintext).
            let _ = write!(
                y,
                "peerAuthentications:\n  - metadata: {{ name: order-service-ingress, namespace: {NAMESPACE} }}\n    \
                 spec:\n      selector:\n        matchLabels: {{ app: {ORDER_SA} }}\n      \
                 mtls: {{ mode: DISABLE }}\n"
            );
        }
        y.push_str(
            "services:\n  - name: payment-service\n    ports: [{ port: 8080, name: grpc }]\n",
        );
        if mtls {
            let _ = writeln!(y, "    serviceAccounts: [{PAYMENT_SA}]");
        }
        y.push_str("    endpoints:\n");
        for ep in endpoints {
            // Writing to a String cannot fail.
            let _ = writeln!(
                y,
                "      - {{ address: \"{}\", labels: {{ version: {} }} }}",
                ep.addr, ep.version
            );
        }
        y.push_str(
            "destinationRules:\n  - apiVersion: networking.istio.io/v1\n    kind: DestinationRule\n    \
             metadata:\n      name: payment-service\n    spec:\n      host: payment-service\n",
        );
        if self.pool.is_some() || self.outlier.is_some() {
            y.push_str("      trafficPolicy:\n");
        }
        if let Some(p) = &self.pool {
            let _ = write!(
                y,
                "        connectionPool:\n          tcp:\n            maxConnections: {}\n          \
                 http:\n            http1MaxPendingRequests: {}\n            http2MaxRequests: {}\n            \
                 maxRetries: {}\n",
                p.max_connections, p.http1_max_pending_requests, p.http2_max_requests, p.max_retries
            );
        }
        if let Some(o) = &self.outlier {
            let _ = write!(
                y,
                "        outlierDetection:\n          consecutive5xxErrors: {}\n          \
                 interval: {}\n          baseEjectionTime: {}\n          maxEjectionPercent: {}\n",
                o.consecutive_5xx,
                duration(o.interval),
                duration(o.base_ejection_time),
                o.max_ejection_percent
            );
        }
        y.push_str(
            "      subsets:\n        - name: v1\n          labels: { version: v1 }\n        \
             - name: v2\n          labels: { version: v2 }\n",
        );
        y.push_str(
            "virtualServices:\n  - apiVersion: networking.istio.io/v1\n    kind: VirtualService\n    \
             metadata:\n      name: payment-service\n    spec:\n      hosts: [payment-service]\n      http:\n",
        );
        let retries = match &self.retries {
            Some(r) => format!(
                "          retries:\n            attempts: {}\n            perTryTimeout: {}\n            \
                 retryOn: unavailable,connect-failure,refused-stream,reset\n",
                r.attempts,
                duration(r.per_try_timeout)
            ),
            None => "          retries: { attempts: 0 }\n".to_owned(),
        };
        if self.beta_testers_to_v2 {
            let _ = write!(
                y,
                "        - name: beta-testers\n          match:\n            - headers:\n                \
                 end-user: {{ exact: {BETA_TESTER} }}\n          route:\n            \
                 - destination: {{ host: payment-service, subset: v2 }}\n{retries}"
            );
        }
        let v2 = self.v2_weight.min(100);
        let _ = write!(
            y,
            "        - name: split\n          route:\n            \
             - destination: {{ host: payment-service, subset: v1 }}\n              weight: {}\n            \
             - destination: {{ host: payment-service, subset: v2 }}\n              weight: {v2}\n{retries}",
            100 - v2
        );
        y
    }

    /// Parses [`Policy::yaml`] with the policy-file parser and translates it, as a service
    /// given `--policy FILE` would. `origin` names it in errors.
    pub fn snapshot(
        &self,
        endpoints: &[Endpoint],
        caller: Option<&Issued>,
        origin: &str,
    ) -> Result<Snapshot, DemoError> {
        let text = self.yaml(endpoints, caller);
        let bad = |source| DemoError::Policy {
            origin: origin.to_owned(),
            source,
        };
        PolicyFile::parse(&text, origin)
            .map_err(bad)?
            .to_snapshot(origin)
            .map_err(bad)
    }
}

/// The payment service's policy file (one per version, for the `version` label): its
/// certificates and workload, STRICT mTLS, and the seed guide's `payment-access`
/// AuthorizationPolicy: only the order-service may call the payment methods.
pub fn payment_yaml(payment: &Issued, version: &str) -> String {
    format!(
        "# Written by the demo; the same file works with `payment-service --policy FILE`.\n\
         namespace: {NAMESPACE}\n\
         {certs}\
         workload:\n  name: payment-service\n  serviceAccount: {sa}\n  \
         labels: {{ app: payment-service, version: {version} }}\n\
         peerAuthentications:\n  - metadata: {{ name: default, namespace: {NAMESPACE} }}\n    \
         spec:\n      mtls: {{ mode: STRICT }}\n\
         authorizationPolicies:\n  - metadata: {{ name: payment-access, namespace: {NAMESPACE} }}\n    \
         spec:\n      selector:\n        matchLabels: {{ app: payment-service }}\n      \
         action: ALLOW\n      rules:\n        - from:\n            - source:\n                \
         principals: [\"{principal}\"]\n          to:\n            - operation:\n                \
         methods: [POST]\n                paths: [\"/payment.v1.PaymentService/*\"]\n",
        certs = payment.certificates_yaml(),
        sa = payment.service_account,
        principal = PAYMENT_ACCESS_PRINCIPAL,
    )
}

/// The one principal `payment-access` allows.
pub const PAYMENT_ACCESS_PRINCIPAL: &str = "cluster.local/ns/default/sa/order-service";

/// An Istio duration string (`250ms`, `2s`).
fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints() -> Vec<Endpoint> {
        vec![
            Endpoint {
                addr: SocketAddr::from(([127, 0, 0, 1], 50051)),
                version: "v1",
            },
            Endpoint {
                addr: SocketAddr::from(([127, 0, 0, 1], 50052)),
                version: "v2",
            },
        ]
    }

    #[test]
    fn every_shape_parses_and_translates() -> Result<(), DemoError> {
        let full = Policy::all_v1()
            .with_v2_weight(25)
            .with_beta_testers_to_v2()
            .with_retries(Retries {
                attempts: 3,
                per_try_timeout: Duration::from_millis(500),
            })
            .with_outlier(Outlier {
                consecutive_5xx: 3,
                interval: Duration::from_millis(500),
                base_ejection_time: Duration::from_secs(2),
                max_ejection_percent: 50,
            })
            .with_pool(Pool {
                max_connections: 1,
                http1_max_pending_requests: 1,
                http2_max_requests: 4,
                max_retries: 3,
            });
        for policy in [Policy::all_v1(), Policy::all_v1().with_v2_weight(100), full] {
            let snap = policy.snapshot(&endpoints(), None, "test")?;
            assert!(
                snap.outbound(PAYMENT_TARGET).is_some(),
                "{}",
                policy.yaml(&endpoints(), None)
            );
        }
        Ok(())
    }

    fn issued(sa: &str) -> Issued {
        Issued {
            service_account: sa.to_owned(),
            dir: std::path::PathBuf::from(format!("/tmp/ids/{sa}")),
        }
    }

    #[test]
    fn the_mtls_shapes_parse_and_translate() -> Result<(), DemoError> {
        let caller = issued(ORDER_SA);
        let text = Policy::all_v1().yaml(&endpoints(), Some(&caller));
        let file = PolicyFile::parse(&text, "order").map_err(|e| DemoError::Policy {
            origin: "order".into(),
            source: e,
        })?;
        assert!(file.certificates.is_some(), "{text}");
        assert!(
            text.contains("serviceAccounts: [payment-service]"),
            "{text}"
        );
        assert!(Policy::all_v1()
            .snapshot(&endpoints(), Some(&caller), "order")?
            .outbound(PAYMENT_TARGET)
            .is_some());

        let text = payment_yaml(&issued(PAYMENT_SA), "v2");
        let bad = |source| DemoError::Policy {
            origin: "payment".into(),
            source,
        };
        let file = PolicyFile::parse(&text, "payment").map_err(bad)?;
        assert_eq!(file.authorization_policies.len(), 1, "{text}");
        assert_eq!(file.peer_authentications.len(), 1, "{text}");
        match file.inbound_policy() {
            Ok(Some(_)) => {}
            other => panic!("{other:?}: {text}"),
        }
        file.to_snapshot("payment").map_err(bad)?;
        Ok(())
    }

    #[test]
    fn durations_are_istio_strings() {
        assert_eq!(duration(Duration::from_secs(2)), "2s");
        assert_eq!(duration(Duration::from_millis(250)), "250ms");
    }
}
