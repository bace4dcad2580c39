//! Istio's configuration, as users write it, translated into the mesh-core model the way
//! istiod's proxyless generator does.
//!
//! Inputs: the services and endpoints (what Kubernetes would provide) and the
//! `VirtualService` / `DestinationRule` objects. Output: outbound listeners per
//! `host:port`, route configurations, clusters per service port and subset
//! (`outbound|8080|v1|payment-service.default.svc.cluster.local`), and their endpoints.
//! Errors name the field path (`virtualServices[0].spec.http[1].route[0].weight`).

mod clusters;
pub mod duration;
pub mod networking;
mod routes;
pub mod services;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

pub use routes::{default_retry_policy, grpc_code};

use crate::cluster::{Cluster, ClusterLoadAssignment};
use crate::matcher::MatcherError;
use crate::route::{
    ForwardAction, Route, RouteAction, RouteConfig, RouteMatch, VirtualHost, WeightedClustersError,
};
use crate::snapshot::SnapshotBuilder;
use networking::{DestinationRuleSpec, Object, VirtualServiceSpec};
use services::Service;

/// A field path into the input, built as translation descends.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Path(String);

impl Path {
    /// The root, e.g. `virtualServices[0]`.
    pub fn root(root: impl Into<String>) -> Self {
        Self(root.into())
    }

    /// `self.name`.
    pub fn field(&self, name: &str) -> Self {
        if self.0.is_empty() {
            Self(name.to_owned())
        } else {
            Self(format!("{}.{name}", self.0))
        }
    }

    /// `self[i]`.
    pub fn index(&self, i: usize) -> Self {
        Self(format!("{}[{i}]", self.0))
    }

    /// `self["key"]`.
    pub fn key(&self, key: &str) -> Self {
        Self(format!("{}[{key:?}]", self.0))
    }

    /// An error at this path.
    pub fn err(&self, kind: IstioErrorKind) -> IstioError {
        IstioError {
            path: self.0.clone(),
            kind,
        }
    }

    /// The path as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A translation error: where, and what.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{path}: {kind}")]
pub struct IstioError {
    /// The field path.
    pub path: String,
    /// What is wrong.
    pub kind: IstioErrorKind,
}

/// What is wrong with a field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum IstioErrorKind {
    /// A required field is missing.
    #[error("required field is missing")]
    Missing,
    /// A value of the wrong form.
    #[error("{value:?} is not valid: expected {expected}")]
    InvalidValue {
        /// The value.
        value: String,
        /// What was expected.
        expected: &'static str,
    },
    /// A feature this mesh does not implement.
    #[error("{feature} is not supported by this mesh")]
    Unsupported {
        /// The feature.
        feature: &'static str,
    },
    /// A duration that does not parse.
    #[error(transparent)]
    Duration(#[from] duration::DurationError),
    /// A regex or range that does not compile.
    #[error(transparent)]
    Matcher(#[from] MatcherError),
    /// A weighted split that is invalid.
    #[error(transparent)]
    Split(#[from] WeightedClustersError),
    /// A retry condition that is not known.
    #[error(transparent)]
    RetryOn(#[from] crate::retry::UnknownRetryOn),
    /// Route weights that do not add up to 100.
    #[error("route weights add up to {sum}, not 100")]
    Weights {
        /// Their sum.
        sum: u64,
    },
    /// A host that names no known service.
    #[error("host {host:?} is not a known service (known: {known})")]
    UnknownHost {
        /// The host.
        host: String,
        /// The services known, comma-separated.
        known: String,
    },
    /// A subset no DestinationRule defines.
    #[error("subset {subset:?} of {host:?} is not defined by any DestinationRule")]
    UnknownSubset {
        /// The service.
        host: String,
        /// The subset.
        subset: String,
    },
    /// A service with several ports and a destination that names none.
    #[error("service {host:?} has several ports and the destination names none of them")]
    AmbiguousPort {
        /// The service.
        host: String,
    },
    /// A port the service does not have.
    #[error("service {host:?} has no port {port}")]
    UnknownPort {
        /// The service.
        host: String,
        /// The port.
        port: u32,
    },
}

/// Everything the translation reads.
#[derive(Debug, Clone, Copy)]
pub struct MeshInputs<'a> {
    /// Services and endpoints, with the path of the list they came from.
    pub services: &'a [Service],
    /// VirtualServices.
    pub virtual_services: &'a [Object<VirtualServiceSpec>],
    /// DestinationRules.
    pub destination_rules: &'a [Object<DestinationRuleSpec>],
    /// The namespace of objects that name none.
    pub default_namespace: &'a str,
    /// The cluster domain (`cluster.local`).
    pub domain_suffix: &'a str,
    /// The SPIFFE trust domain (`cluster.local`).
    pub trust_domain: &'a str,
    /// Send mTLS to every service that has service accounts, unless a DestinationRule
    /// says otherwise (Istio's auto mTLS).
    pub auto_mtls: bool,
}

/// The outbound half of a snapshot.
#[derive(Debug, Clone, Default)]
pub struct Outbound {
    /// target (`host:port`) -> route configuration name.
    pub listeners: BTreeMap<String, String>,
    /// Route configurations.
    pub route_configs: Vec<RouteConfig>,
    /// Clusters.
    pub clusters: Vec<Cluster>,
    /// Endpoints.
    pub endpoints: Vec<ClusterLoadAssignment>,
}

impl Outbound {
    /// Adds everything to a snapshot builder.
    pub fn into_builder(self, mut builder: SnapshotBuilder) -> SnapshotBuilder {
        for (target, rc) in &self.listeners {
            builder = builder.listener(target, rc);
        }
        for rc in self.route_configs {
            builder = builder.route_config(rc);
        }
        for c in self.clusters {
            builder = builder.cluster(c);
        }
        for e in self.endpoints {
            builder = builder.endpoints(e);
        }
        builder
    }
}

/// Istio's cluster name for a service port and subset.
pub fn cluster_name(port: u16, subset: Option<&str>, fqdn: &str) -> String {
    format!("outbound|{port}|{}|{fqdn}", subset.unwrap_or(""))
}

struct Index<'a> {
    inputs: MeshInputs<'a>,
    /// fqdn -> service
    by_fqdn: BTreeMap<String, &'a Service>,
    /// fqdn -> subset names defined for it
    subsets: BTreeMap<String, BTreeSet<String>>,
    /// fqdn -> the DestinationRule that applies (the first one, as in Istio)
    rules: BTreeMap<String, usize>,
}

impl<'a> Index<'a> {
    fn new(inputs: MeshInputs<'a>, errors: &mut Vec<IstioError>) -> Self {
        let mut by_fqdn = BTreeMap::new();
        // The file's default namespace and domain suffix end up in the same host names.
        let expected = "a DNS name: lower-case letters, digits, '-' and '.', \
                        starting and ending with a letter or digit";
        let mut defaults_valid = true;
        for (field, value) in [
            ("namespace", inputs.default_namespace),
            ("domainSuffix", inputs.domain_suffix),
        ] {
            if !is_dns_name(value) {
                defaults_valid = false;
                errors.push(Path::root(field).err(IstioErrorKind::InvalidValue {
                    value: value.to_owned(),
                    expected,
                }));
            }
        }
        for (i, s) in inputs.services.iter().enumerate() {
            // The names become host names, route domains and cluster names: only what
            // Kubernetes allows (lower-case letters, digits, `-` and `.`).
            let names = [
                ("name", Some(s.name.as_str())),
                ("namespace", s.namespace.as_deref()),
            ];
            let mut valid = defaults_valid;
            for (field, value) in names {
                if let Some(value) = value.filter(|v| !is_dns_name(v)) {
                    valid = false;
                    errors.push(Path::root("services").index(i).field(field).err(
                        IstioErrorKind::InvalidValue {
                            value: value.to_owned(),
                            expected: "a DNS name: lower-case letters, digits, '-' and '.', \
                                       starting and ending with a letter or digit",
                        },
                    ));
                }
            }
            if valid {
                by_fqdn.insert(s.fqdn(inputs.default_namespace, inputs.domain_suffix), s);
            }
        }
        let mut index = Self {
            inputs,
            by_fqdn,
            subsets: BTreeMap::new(),
            rules: BTreeMap::new(),
        };
        for (i, dr) in inputs.destination_rules.iter().enumerate() {
            let path = Path::root("destinationRules")
                .index(i)
                .field("spec")
                .field("host");
            let ns = dr
                .metadata
                .namespace
                .as_deref()
                .unwrap_or(inputs.default_namespace);
            match index.resolve(&dr.spec.host, ns, &path) {
                Ok(fqdn) => {
                    index.rules.entry(fqdn.clone()).or_insert(i);
                    let set = index.subsets.entry(fqdn).or_default();
                    set.extend(dr.spec.subsets.iter().map(|s| s.name.clone()));
                }
                Err(e) => errors.push(e),
            }
        }
        index
    }

    /// Resolves a host as Istio does: a short name in the object's namespace, `name.ns`,
    /// `name.ns.svc`, or the full name.
    fn resolve(&self, host: &str, namespace: &str, path: &Path) -> Result<String, IstioError> {
        let suffix = self.inputs.domain_suffix;
        let dots = host.matches('.').count();
        let candidate = match dots {
            0 => format!("{host}.{namespace}.svc.{suffix}"),
            1 => format!("{host}.svc.{suffix}"),
            2 if host.ends_with(".svc") => format!("{host}.{suffix}"),
            _ => host.to_owned(),
        };
        if self.by_fqdn.contains_key(&candidate) {
            Ok(candidate)
        } else {
            Err(path.err(IstioErrorKind::UnknownHost {
                host: host.to_owned(),
                known: self.by_fqdn.keys().cloned().collect::<Vec<_>>().join(", "),
            }))
        }
    }
}

struct DestinationResolver<'i, 'a> {
    index: &'i Index<'a>,
    namespace: &'i str,
    /// The port being built: a destination without a port on a multi-port service uses it.
    listener_port: u16,
}

impl routes::ResolveDestination for DestinationResolver<'_, '_> {
    fn cluster_for(
        &self,
        dest: &networking::Destination,
        path: &Path,
    ) -> Result<String, IstioError> {
        let fqdn = self
            .index
            .resolve(&dest.host, self.namespace, &path.field("host"))?;
        let service = self.index.by_fqdn[&fqdn];
        let port = match dest.port {
            Some(p) => {
                let known = service
                    .ports
                    .iter()
                    .any(|sp| u32::from(sp.port) == p.number);
                let port = u16::try_from(p.number).ok().filter(|_| known);
                port.ok_or_else(|| {
                    path.field("port")
                        .field("number")
                        .err(IstioErrorKind::UnknownPort {
                            host: dest.host.clone(),
                            port: p.number,
                        })
                })?
            }
            None if service.ports.len() == 1 => service.ports[0].port,
            None if service.ports.iter().any(|p| p.port == self.listener_port) => {
                self.listener_port
            }
            None => {
                return Err(path.err(IstioErrorKind::AmbiguousPort {
                    host: dest.host.clone(),
                }))
            }
        };
        if let Some(subset) = &dest.subset {
            let defined = self
                .index
                .subsets
                .get(&fqdn)
                .is_some_and(|s| s.contains(subset));
            if !defined {
                return Err(path.field("subset").err(IstioErrorKind::UnknownSubset {
                    host: dest.host.clone(),
                    subset: subset.clone(),
                }));
            }
        }
        Ok(cluster_name(port, dest.subset.as_deref(), &fqdn))
    }
}

/// Whether `name` can be a Kubernetes name and a part of a host name: 1 to 253 of
/// `a-z`, `0-9`, `-` and `.`, starting and ending with a letter or digit.
fn is_dns_name(name: &str) -> bool {
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && alnum(name.chars().next())
        && alnum(name.chars().last())
}

/// Translates the inputs into listeners, routes, clusters and endpoints. Every error is
/// reported, not just the first.
pub fn translate(inputs: MeshInputs<'_>) -> Result<Outbound, Vec<IstioError>> {
    let mut errors = Vec::new();
    let index = Index::new(inputs, &mut errors);
    let mut out = Outbound::default();

    // VirtualServices that apply to each service, in file order.
    let mut vs_for: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, vs) in inputs.virtual_services.iter().enumerate() {
        let ns = vs
            .metadata
            .namespace
            .as_deref()
            .unwrap_or(inputs.default_namespace);
        let gateways_ok =
            vs.spec.gateways.is_empty() || vs.spec.gateways.iter().any(|g| g == "mesh");
        if !gateways_ok {
            continue;
        }
        let spec_path = Path::root("virtualServices").index(i).field("spec");
        if vs.spec.tls.is_some() || vs.spec.tcp.is_some() {
            errors.push(
                spec_path
                    .field(if vs.spec.tls.is_some() { "tls" } else { "tcp" })
                    .err(IstioErrorKind::Unsupported {
                        feature: "TLS and TCP routes",
                    }),
            );
        }
        for (h, host) in vs.spec.hosts.iter().enumerate() {
            match index.resolve(host, ns, &spec_path.field("hosts").index(h)) {
                Ok(fqdn) => vs_for.entry(fqdn).or_default().push(i),
                Err(e) => errors.push(e),
            }
        }
    }

    for service in inputs.services {
        let ns = service.namespace_or(inputs.default_namespace);
        let fqdn = service.fqdn(inputs.default_namespace, inputs.domain_suffix);
        for port in &service.ports {
            let rc_name = format!("{fqdn}:{}", port.port);
            let short_names = [
                service.name.clone(),
                format!("{}.{ns}", service.name),
                format!("{}.{ns}.svc", service.name),
                fqdn.clone(),
            ];
            let mut domains = Vec::new();
            for n in &short_names {
                domains.push(format!("{n}:{}", port.port));
                out.listeners
                    .insert(format!("{n}:{}", port.port), rc_name.clone());
            }
            domains.extend(short_names.iter().cloned());

            let mut routes = Vec::new();
            match vs_for.get(&fqdn) {
                Some(list) => {
                    for &i in list {
                        let vs = &inputs.virtual_services[i];
                        let vs_ns = vs
                            .metadata
                            .namespace
                            .as_deref()
                            .unwrap_or(inputs.default_namespace);
                        let resolver = DestinationResolver {
                            index: &index,
                            namespace: vs_ns,
                            listener_port: port.port,
                        };
                        let base = Path::root("virtualServices")
                            .index(i)
                            .field("spec")
                            .field("http");
                        for (r, http) in vs.spec.http.iter().enumerate() {
                            // A route bound to another port does not apply here.
                            if http
                                .matches
                                .iter()
                                .all(|m| m.port.is_some_and(|p| p != u32::from(port.port)))
                                && !http.matches.is_empty()
                            {
                                continue;
                            }
                            match routes::translate_http_route(http, &base.index(r), &resolver) {
                                Ok(mut rs) => routes.append(&mut rs),
                                Err(e) => errors.push(e),
                            }
                        }
                    }
                }
                None => {
                    let mut fwd = ForwardAction::to_cluster(cluster_name(port.port, None, &fqdn));
                    fwd.retry_policy = Some(default_retry_policy());
                    routes.push(Route::new(
                        "default",
                        RouteMatch::default(),
                        RouteAction::Forward(fwd),
                    ));
                }
            }
            out.route_configs.push(RouteConfig::new(
                rc_name.clone(),
                // istiod's sidecar virtual hosts ask for the attempt count.
                vec![VirtualHost::new(rc_name.clone(), domains, routes)
                    .with_request_attempt_count(true)],
            ));
            match clusters::clusters_for_port(&index, service, port, &fqdn) {
                Ok((mut cs, mut es)) => {
                    out.clusters.append(&mut cs);
                    out.endpoints.append(&mut es);
                }
                Err(mut e) => errors.append(&mut e),
            }
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}
