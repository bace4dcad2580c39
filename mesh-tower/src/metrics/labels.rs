//! Who this workload is, for the `source_*` / `destination_*` labels.

/// The identity of the local workload, as Istio labels it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkloadLabels {
    /// `*_workload`: the deployment name.
    pub workload: String,
    /// `*_workload_namespace`.
    pub namespace: String,
    /// `*_app` (the `app` label).
    pub app: String,
    /// `*_version` (the `version` label).
    pub version: String,
    /// `*_canonical_service`.
    pub canonical_service: String,
    /// `*_canonical_revision`.
    pub canonical_revision: String,
    /// `*_cluster`: the mesh cluster id.
    pub cluster: String,
    /// `*_principal`: this workload's SPIFFE ID.
    pub principal: String,
    /// `destination_service` for inbound requests: the service host this workload serves
    /// (`payment-service.default.svc.cluster.local`); unknown means the request's host.
    pub service: String,
}

const UNKNOWN: &str = "unknown";

impl Default for WorkloadLabels {
    fn default() -> Self {
        Self::unknown()
    }
}

impl WorkloadLabels {
    /// Every label `unknown`.
    pub fn unknown() -> Self {
        Self {
            workload: UNKNOWN.into(),
            namespace: UNKNOWN.into(),
            app: UNKNOWN.into(),
            version: UNKNOWN.into(),
            canonical_service: UNKNOWN.into(),
            canonical_revision: "latest".into(),
            cluster: UNKNOWN.into(),
            principal: UNKNOWN.into(),
            service: UNKNOWN.into(),
        }
    }

    /// A workload named `name` (also its app and canonical service).
    pub fn named(name: &str) -> Self {
        Self {
            workload: name.into(),
            app: name.into(),
            canonical_service: name.into(),
            ..Self::unknown()
        }
    }

    /// Read from the variables Istio's injector sets (`ISTIO_META_WORKLOAD_NAME`,
    /// `POD_NAMESPACE`, `ISTIO_META_CLUSTER_ID`, `CANONICAL_SERVICE`, `CANONICAL_REVISION`,
    /// `SERVICE_ACCOUNT`, `TRUST_DOMAIN`), then `OTEL_SERVICE_NAME`, then `default_name`.
    pub fn from_env(default_name: &str) -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let name = var("ISTIO_META_WORKLOAD_NAME")
            .or_else(|| var("OTEL_SERVICE_NAME"))
            .unwrap_or_else(|| default_name.to_owned());
        let mut l = Self::named(&name);
        if let Some(ns) = var("POD_NAMESPACE") {
            l.namespace = ns;
        }
        if let Some(c) = var("ISTIO_META_CLUSTER_ID") {
            l.cluster = c;
        }
        if let Some(s) = var("CANONICAL_SERVICE") {
            l.app = s.clone();
            l.canonical_service = s;
        }
        if let Some(r) = var("CANONICAL_REVISION") {
            l.version = r.clone();
            l.canonical_revision = r;
        }
        if let (Some(sa), ns) = (var("SERVICE_ACCOUNT"), &l.namespace) {
            let td = var("TRUST_DOMAIN").unwrap_or_else(|| "cluster.local".into());
            l.principal = format!("spiffe://{td}/ns/{ns}/sa/{sa}");
        }
        l
    }

    /// Fills in what an xDS bootstrap's node says about the workload, over what was set
    /// before: the Istio agent writes its `ISTIO_META_*` variables there (`WORKLOAD_NAME`,
    /// `NAMESPACE`, `CLUSTER_ID`, `SERVICE_ACCOUNT`, `LABELS` with `app`, `version` and
    /// the `service.istio.io/canonical-*` labels), while the `grpc-agent` injection template
    /// sets those variables on the agent's container only. A node id of Istio's form
    /// (`sidecar~IP~POD.NAMESPACE~NAMESPACE.svc.cluster.local`) gives the namespace when the
    /// metadata does not.
    pub fn with_node_metadata(
        mut self,
        node_id: &str,
        metadata: &serde_json::Map<String, serde_json::Value>,
    ) -> Self {
        let text = |k: &str| {
            metadata
                .get(k)
                .and_then(serde_json::Value::as_str)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let labels = metadata
            .get("LABELS")
            .and_then(serde_json::Value::as_object);
        let label = |k: &str| {
            labels
                .and_then(|l| l.get(k))
                .and_then(serde_json::Value::as_str)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        if let Some(ns) = text("NAMESPACE").or_else(|| namespace_of_node_id(node_id)) {
            self.namespace = ns;
        }
        if let Some(w) = text("WORKLOAD_NAME") {
            self.workload = w.clone();
            self.app = w.clone();
            self.canonical_service = w;
        }
        if let Some(app) = label("app").or_else(|| label("app.kubernetes.io/name")) {
            self.app = app.clone();
            self.canonical_service = app;
        }
        if let Some(v) = label("version").or_else(|| label("app.kubernetes.io/version")) {
            self.version = v.clone();
            self.canonical_revision = v;
        }
        if let Some(s) = label("service.istio.io/canonical-name") {
            self.canonical_service = s;
        }
        if let Some(r) = label("service.istio.io/canonical-revision") {
            self.canonical_revision = r;
        }
        if let Some(c) = text("CLUSTER_ID") {
            self.cluster = c;
        }
        if let Some(sa) = text("SERVICE_ACCOUNT") {
            let td = principal_trust_domain(&self.principal).unwrap_or("cluster.local");
            self.principal = format!("spiffe://{td}/ns/{}/sa/{sa}", self.namespace);
        }
        self
    }

    /// Sets the service host inbound requests are reported under.
    pub fn with_service(mut self, service: impl Into<String>) -> Self {
        self.service = service.into();
        self
    }

    /// Sets the namespace.
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// Sets the version.
    pub fn with_version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self
    }

    /// Sets the principal (SPIFFE ID).
    pub fn with_principal(mut self, principal: impl Into<String>) -> Self {
        self.principal = principal.into();
        self
    }
}

/// The host of `host[:port]` (brackets of an IPv6 literal kept off).
pub(crate) fn host_of(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) && !h.contains(':') => h,
        _ => authority,
    }
}

/// `(name, namespace)` of a service host: `payment.shop.svc.cluster.local` ->
/// `("payment", "shop")`; a bare name has no namespace.
pub(crate) fn service_parts(host: &str) -> (&str, &str) {
    if host.parse::<std::net::IpAddr>().is_ok() {
        return (host, UNKNOWN);
    }
    let mut labels = host.split('.');
    let name = labels.next().unwrap_or(host);
    (name, labels.next().unwrap_or(UNKNOWN))
}

/// The namespace in an Istio SPIFFE ID (`spiffe://td/ns/<ns>/sa/<sa>`).
pub(crate) fn principal_namespace(principal: &str) -> &str {
    let mut parts = principal.split('/');
    while let Some(p) = parts.next() {
        if p == "ns" {
            return parts.next().unwrap_or(UNKNOWN);
        }
    }
    UNKNOWN
}

/// The namespace in an Istio node id (`sidecar~10.0.0.1~pod-1.shop~shop.svc.cluster.local`).
fn namespace_of_node_id(id: &str) -> Option<String> {
    let mut parts = id.split('~');
    let (_kind, _ip, pod, _domain) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    pod.rsplit_once('.')
        .map(|(_, ns)| ns)
        .filter(|ns| !ns.is_empty())
        .map(str::to_owned)
}

/// The trust domain of a SPIFFE ID.
fn principal_trust_domain(principal: &str) -> Option<&str> {
    principal
        .strip_prefix("spiffe://")
        .and_then(|rest| rest.split('/').next())
        .filter(|td| !td.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_services() {
        assert_eq!(host_of("payment:8080"), "payment");
        assert_eq!(host_of("[::1]:80"), "::1");
        assert_eq!(host_of("payment"), "payment");
        assert_eq!(
            service_parts("payment.shop.svc.cluster.local"),
            ("payment", "shop")
        );
        assert_eq!(service_parts("payment"), ("payment", "unknown"));
        assert_eq!(service_parts("127.0.0.1"), ("127.0.0.1", "unknown"));
        assert_eq!(
            principal_namespace("spiffe://cluster.local/ns/shop/sa/order"),
            "shop"
        );
        assert_eq!(principal_namespace("unknown"), "unknown");
    }

    #[test]
    fn node_metadata_fills_in_what_the_istio_agent_writes() {
        // The bootstrap the Istio agent writes (istio/istio testdata): only the node id
        // says the namespace.
        let file = "shared/testdata/istio/agent-grpc-bootstrap.json";
        let text = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../..")
                .join(file),
        )
        .or_else(|_| std::fs::read_to_string(std::path::Path::new("/work").join(file)))
        .expect("test input");
        let boot: serde_json::Value = serde_json::from_str(&text).expect("test input");
        let node = &boot["node"];
        let l = WorkloadLabels::named("order-service").with_node_metadata(
            node["id"].as_str().expect("test input"),
            node["metadata"].as_object().expect("test input"),
        );
        assert_eq!(l.namespace, "fake-namespace");
        assert_eq!(l.workload, "order-service");

        // A current agent's metadata (ISTIO_META_* of the pod) wins over the variables.
        let md = serde_json::json!({
            "GENERATOR": "grpc",
            "NAMESPACE": "shop",
            "WORKLOAD_NAME": "order-service-v1",
            "CLUSTER_ID": "Kubernetes",
            "SERVICE_ACCOUNT": "order-service",
            "LABELS": {
                "app": "order-service",
                "version": "v1",
                "service.istio.io/canonical-revision": "v1-rev",
            },
        });
        let l = WorkloadLabels::named("from-env")
            .with_namespace("env-ns")
            .with_node_metadata(
                "sidecar~10.0.0.1~order-1.shop~shop.svc.cluster.local",
                md.as_object().expect("test input"),
            );
        assert_eq!(l.workload, "order-service-v1");
        assert_eq!(l.namespace, "shop");
        assert_eq!(l.app, "order-service");
        assert_eq!(l.canonical_service, "order-service");
        assert_eq!(l.version, "v1");
        assert_eq!(l.canonical_revision, "v1-rev");
        assert_eq!(l.cluster, "Kubernetes");
        assert_eq!(
            l.principal,
            "spiffe://cluster.local/ns/shop/sa/order-service"
        );

        // Nothing there: what was set stays.
        let l = WorkloadLabels::named("x")
            .with_namespace("ns")
            .with_node_metadata("plain-id", &serde_json::Map::new());
        assert_eq!((l.workload.as_str(), l.namespace.as_str()), ("x", "ns"));
    }
}
