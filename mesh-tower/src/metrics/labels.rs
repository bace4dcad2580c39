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
}
