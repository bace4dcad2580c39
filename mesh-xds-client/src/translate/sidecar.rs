//! istiod's Envoy sidecar output, read leniently ([`crate::shape::IstioShape::Sidecar`]).
//!
//! What a sidecar gets is written for Envoy: listeners per port with several filter chains
//! (HTTP, TCP passthrough, the `virtualInbound` chains per destination port), Istio's own
//! network and HTTP filters (`istio.metadata_exchange`, `istio_authn`, `istio.stats`,
//! `TypedStruct`s), clusters with `transport_socket_matches` and cluster-level network
//! filters, and TLS contexts that name SDS secrets. The proxyless rules would NACK most of
//! it. Here each resource is first *normalized* into what the proxyless translation reads:
//!
//! - HTTP filters other than the router, fault and RBAC are marked optional (skipped), and
//!   so are route-level overrides of them;
//! - TLS contexts naming the SDS secrets `default` (the workload certificate) and `ROOTCA`
//!   (the mesh roots) name the certificate provider instance `default` instead, which is
//!   the instance the Istio agent's bootstrap defines;
//! - a cluster's `transport_socket_matches` entry `tlsMode-istio` becomes its transport
//!   socket (every endpoint of a mesh service speaks mTLS), and its cluster-level network
//!   filters (metadata exchange) are dropped;
//!
//! and every change is recorded by name ([`Skipped`]) for the logs, `mesh-xds` and the
//! admin page. Listeners become a [`SidecarListener`]: one entry per filter chain with its
//! match, TLS and what it carries, and chains the mesh has no use for (TCP proxies,
//! passthrough, black holes) are kept as such, never a reason to reject the listener.

use std::net::{IpAddr, SocketAddr};

use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType as SocketConfig;
use envoy_types::pb::envoy::config::core::v3::{TrafficDirection, TransportSocket};
use envoy_types::pb::envoy::config::listener::v3::filter::ConfigType as FilterConfigType;
use envoy_types::pb::envoy::config::listener::v3::{FilterChain, Listener};
use envoy_types::pb::envoy::config::route::v3::{FilterConfig, RouteConfiguration};
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::HttpFault;
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, http_filter::ConfigType, HttpConnectionManager,
};
use envoy_types::pb::envoy::extensions::filters::network::rbac::v3::Rbac as NetworkRbac;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
    tcp_proxy::ClusterSpecifier, TcpProxy,
};
use envoy_types::pb::envoy::extensions::transport_sockets::raw_buffer::v3::RawBuffer;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::common_tls_context::{
    CertificateProviderInstance, ValidationContextType,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateProviderPluginInstance, CommonTlsContext, DownstreamTlsContext, UpstreamTlsContext,
};
use envoy_types::pb::google::protobuf::Any;
use mesh_core::inbound::{InboundPolicy, TlsMode};
use mesh_core::rbac::{Authorization, RbacAction, RbacEngine};
use prost::{Message, Name};

use super::filters::{http_filters, Side};
use super::listener::{client_listener, ClientListener};
use super::rbac::rbac_rules;
use super::route::route_config_parts;
use super::tls::downstream_tls;

/// The certificate provider instance that SDS secrets `default` and `ROOTCA` map to.
pub const SDS_PROVIDER_INSTANCE: &str = "default";

/// Istio's SDS secret names: the workload certificate and the mesh roots.
const SDS_SECRETS: [&str; 2] = ["default", "ROOTCA"];

/// Istio's cluster for traffic to destinations it does not know (ORIGINAL_DST).
pub const PASSTHROUGH_CLUSTER: &str = "PassthroughCluster";

/// Things of a resource the mesh does not honour, each as `field (name): why`.
pub type Skipped = Vec<String>;

/// One filter chain of a sidecar listener.
#[derive(Debug, Clone, PartialEq)]
pub struct SidecarChain {
    /// Its name (`0.0.0.0_8080`, `virtualInbound-catchall-http`), or `filter_chains[i]`.
    pub name: String,
    /// `filter_chain_match.destination_port`.
    pub destination_port: Option<u32>,
    /// `filter_chain_match.prefix_ranges` (destination addresses), as address and length.
    pub prefix_ranges: Vec<(IpAddr, u32)>,
    /// `None`: plaintext; `Some(require_client_certificate)`: TLS.
    pub tls: Option<bool>,
    /// The certificate provider instances its TLS context names.
    pub providers: Vec<String>,
    /// What it carries.
    pub kind: ChainKind,
}

/// What a sidecar filter chain carries.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ChainKind {
    /// An HttpConnectionManager: routes (outbound) and RBAC (inbound).
    Http {
        /// Its routes and filters, as a client listener reads them (`None` on the inbound
        /// side, where routes do not route).
        client: Option<Box<ClientListener>>,
        /// The RBAC engines of its HTTP filters.
        rbac: Vec<RbacEngine>,
    },
    /// A TCP proxy (or another network filter chain): opaque bytes to a cluster.
    Tcp {
        /// The cluster it forwards to, when it names one.
        cluster: Option<String>,
        /// The RBAC engines of its network RBAC filters.
        rbac: Vec<RbacEngine>,
    },
    /// A chain the mesh cannot read; why.
    Unusable(String),
}

/// A listener of istiod's sidecar output.
#[derive(Debug, Clone, PartialEq)]
pub struct SidecarListener {
    /// Its address.
    pub address: Option<SocketAddr>,
    /// Whether it takes inbound traffic (`traffic_direction: INBOUND`, `virtualInbound`).
    pub inbound: bool,
    /// Its filter chains (the default chain last).
    pub chains: Vec<SidecarChain>,
    /// What was skipped.
    pub skipped: Skipped,
}

impl SidecarListener {
    /// The RDS names its HTTP chains use.
    pub fn rds_names(&self) -> impl Iterator<Item = &str> {
        self.chains.iter().filter_map(|c| match &c.kind {
            ChainKind::Http {
                client: Some(client),
                ..
            } => match &client.routes {
                super::ClientRoutes::Rds(name) => Some(name.as_str()),
                _ => None,
            },
            _ => None,
        })
    }

    /// The outbound HTTP chain: the first with an HttpConnectionManager.
    pub fn http_client(&self) -> Option<&ClientListener> {
        self.chains.iter().find_map(|c| match &c.kind {
            ChainKind::Http {
                client: Some(client),
                ..
            } => Some(client.as_ref()),
            _ => None,
        })
    }

    /// The inbound policy for traffic to `addr`, from the chains that match its port (and,
    /// when they name destination addresses, its address; any, for an unspecified one),
    /// else the catch-all chains (no destination port). The TLS mode
    /// follows the chains (all mutual TLS: STRICT; none: DISABLE; both: PERMISSIVE); the
    /// authorization is the HTTP chains' RBAC, which Istio writes the same on each. Chains
    /// that disagree, or a chain the mesh cannot read, deny everything: fail closed.
    pub fn inbound_policy(&self, addr: SocketAddr) -> Option<InboundPolicy> {
        let port = u32::from(addr.port());
        let for_addr = |c: &&SidecarChain| {
            addr.ip().is_unspecified()
                || c.prefix_ranges.is_empty()
                || c.prefix_ranges
                    .iter()
                    .any(|(net, len)| in_range(addr.ip(), *net, *len))
        };
        let mut chains: Vec<&SidecarChain> = self
            .chains
            .iter()
            .filter(|c| c.destination_port == Some(port))
            .filter(for_addr)
            .collect();
        if chains.is_empty() {
            chains = self
                .chains
                .iter()
                .filter(|c| c.destination_port.is_none())
                .filter(for_addr)
                .collect();
        }
        let first = chains.first()?;
        let deny_all = || Authorization::new(vec![RbacEngine::new(RbacAction::Allow, vec![])]);
        let Some(mode) = super::listener::tls_mode(chains.iter().map(|c| c.tls)) else {
            // TLS without client certificates: no peer identity to authorize.
            return Some(InboundPolicy::new(TlsMode::Strict).with_authorization(deny_all()));
        };
        let rbac_of = |c: &SidecarChain| match &c.kind {
            ChainKind::Http { rbac, .. } | ChainKind::Tcp { rbac, .. } => Some(rbac.clone()),
            ChainKind::Unusable(_) => None,
        };
        // HTTP chains decide; TCP chains only when there is no HTTP chain.
        let http: Vec<&&SidecarChain> = chains
            .iter()
            .filter(|c| matches!(c.kind, ChainKind::Http { .. }))
            .collect();
        let deciding: Vec<&SidecarChain> = if http.is_empty() {
            chains.clone()
        } else {
            http.into_iter().copied().collect()
        };
        let first_rbac = rbac_of(deciding.first().copied().unwrap_or(first));
        let authorization = match first_rbac {
            Some(rbac) if deciding.iter().all(|c| rbac_of(c).as_ref() == Some(&rbac)) => {
                Authorization::new(rbac)
            }
            _ => deny_all(),
        };
        Some(InboundPolicy::new(mode).with_authorization(authorization))
    }

    /// The certificate provider instances its chains name.
    pub fn providers(&self) -> impl Iterator<Item = &str> {
        self.chains
            .iter()
            .flat_map(|c| c.providers.iter().map(String::as_str))
    }
}

/// Whether `ip` is in `net/len`.
fn in_range(ip: IpAddr, net: IpAddr, len: u32) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let len = len.min(32);
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let len = len.min(128);
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// Reads a listener of the sidecar output. Never fails: what cannot be read is kept as an
/// [`ChainKind::Unusable`] chain and listed in [`SidecarListener::skipped`].
pub fn sidecar_listener(listener: &Listener) -> SidecarListener {
    let inbound = listener.traffic_direction == TrafficDirection::Inbound as i32
        || listener.name == "virtualInbound";
    let address = super::listener::listener_address(listener).ok().flatten();
    let mut skipped = Skipped::new();
    let mut chains = Vec::with_capacity(listener.filter_chains.len() + 1);
    let all = listener
        .filter_chains
        .iter()
        .enumerate()
        .map(|(i, c)| (format!("filter_chains[{i}]"), c))
        .chain(
            listener
                .default_filter_chain
                .iter()
                .map(|c| ("default_filter_chain".to_owned(), c)),
        );
    for (at, chain) in all {
        let c = sidecar_chain(chain, &at, inbound, &mut skipped);
        if let ChainKind::Unusable(why) = &c.kind {
            skipped.push(format!("{at} ({}): {why}", c.name));
        }
        chains.push(c);
    }
    SidecarListener {
        address,
        inbound,
        chains,
        skipped,
    }
}

fn sidecar_chain(
    chain: &FilterChain,
    at: &str,
    inbound: bool,
    skipped: &mut Skipped,
) -> SidecarChain {
    let name = if chain.name.is_empty() {
        at.to_owned()
    } else {
        chain.name.clone()
    };
    let destination_port = chain
        .filter_chain_match
        .as_ref()
        .and_then(|m| m.destination_port.as_ref())
        .map(|p| p.value);
    let prefix_ranges = chain
        .filter_chain_match
        .iter()
        .flat_map(|m| &m.prefix_ranges)
        .filter_map(|r| {
            let ip: IpAddr = r.address_prefix.parse().ok()?;
            Some((ip, r.prefix_len.as_ref().map_or(0, |l| l.value)))
        })
        .collect();
    let mut out = SidecarChain {
        name,
        destination_port,
        prefix_ranges,
        tls: None,
        providers: Vec::new(),
        kind: ChainKind::Unusable(String::new()),
    };
    match chain
        .transport_socket
        .as_ref()
        .and_then(|t| t.config_type.as_ref())
    {
        None => {}
        Some(SocketConfig::TypedConfig(any)) if any.type_url == RawBuffer::type_url() => {}
        Some(SocketConfig::TypedConfig(any)) => {
            let tls = normalize_downstream_tls(any, skipped, at)
                .and_then(|any| downstream_tls(&any).map_err(|e| e.to_string()));
            match tls {
                Ok(tls) => {
                    out.tls = Some(tls.require_client_certificate);
                    out.providers = tls.providers;
                }
                Err(why) => {
                    out.tls = Some(true);
                    out.kind = ChainKind::Unusable(format!("transport_socket: {why}"));
                    return out;
                }
            }
        }
    }
    out.kind = chain_kind(chain, at, inbound, skipped);
    out
}

fn chain_kind(chain: &FilterChain, at: &str, inbound: bool, skipped: &mut Skipped) -> ChainKind {
    let mut rbac = Vec::new();
    for (i, filter) in chain.filters.iter().enumerate() {
        let Some(FilterConfigType::TypedConfig(any)) = &filter.config_type else {
            return ChainKind::Unusable(format!("filters[{i}] ({}): no typed_config", filter.name));
        };
        if any.type_url == HttpConnectionManager::type_url() {
            let Ok(mut hcm) = HttpConnectionManager::decode(any.value.as_slice()) else {
                return ChainKind::Unusable(format!("filters[{i}]: cannot decode"));
            };
            let here = format!("{at}.filters[{i}]");
            if let Err(why) = normalize_hcm(&mut hcm, inbound, &here, skipped) {
                return ChainKind::Unusable(why);
            }
            return http_chain(&hcm, inbound, rbac);
        }
        if any.type_url == TcpProxy::type_url() {
            let cluster = TcpProxy::decode(any.value.as_slice()).ok().and_then(|t| {
                match t.cluster_specifier {
                    Some(ClusterSpecifier::Cluster(c)) => Some(c),
                    _ => None,
                }
            });
            return ChainKind::Tcp { cluster, rbac };
        }
        if any.type_url == NetworkRbac::type_url() {
            let engine = NetworkRbac::decode(any.value.as_slice())
                .map_err(|e| e.to_string())
                .and_then(|r| match (&r.rules, &r.matcher) {
                    (Some(rules), _) => rbac_rules(rules).map_err(|e| e.to_string()),
                    (None, Some(_)) => Ok(Some(RbacEngine::new(RbacAction::Allow, vec![]))),
                    (None, None) => Ok(None),
                });
            match engine {
                Ok(e) => rbac.extend(e),
                Err(why) => {
                    return ChainKind::Unusable(format!("filters[{i}] ({}): {why}", filter.name))
                }
            }
            continue;
        }
        // Istio's own network filters (metadata exchange, istio_authn, stats): they
        // observe and label, they do not decide.
        skipped.push(format!("{at}.filters[{i}] ({}): not applied", filter.name));
    }
    ChainKind::Unusable("no HttpConnectionManager or TCP proxy".to_owned())
}

fn http_chain(hcm: &HttpConnectionManager, inbound: bool, mut rbac: Vec<RbacEngine>) -> ChainKind {
    if inbound {
        let filters = match http_filters(hcm, Side::Server) {
            Ok(f) => f,
            Err(e) => return ChainKind::Unusable(format!("http_connection_manager.{e}")),
        };
        if let Some(RouteSpecifier::RouteConfig(rc)) = &hcm.route_specifier {
            // Per-route RBAC would make one authorization per port wrong: refuse.
            if let Err(e) = route_config_parts(rc) {
                return ChainKind::Unusable(format!("http_connection_manager.route_config.{e}"));
            }
        }
        rbac.extend(filters.rbac);
        return ChainKind::Http { client: None, rbac };
    }
    match client_listener(hcm, "sidecar") {
        Ok(client) => ChainKind::Http {
            client: Some(Box::new(client)),
            rbac,
        },
        Err(e) => ChainKind::Unusable(format!("http_connection_manager.{e}")),
    }
}

/// Marks every HTTP filter the mesh does not implement optional (so it is skipped), and
/// normalizes an inline route configuration.
///
/// On the inbound side a filter that may refuse requests (external authorization — what a
/// CUSTOM AuthorizationPolicy becomes —, JWT validation, external processing, Wasm, Lua, a
/// filter config from ECDS) cannot be skipped without opening access: the chain is refused
/// (`Err`, and the port denies everything), as the mesh does for CUSTOM policies itself.
/// Filters named alike (istiod names its DENY and ALLOW RBAC filters the same) are renamed
/// apart.
pub(crate) fn normalize_hcm(
    hcm: &mut HttpConnectionManager,
    inbound: bool,
    at: &str,
    skipped: &mut Skipped,
) -> Result<(), String> {
    // What each side implements: fault injection on the client, RBAC on the server.
    let own = if inbound {
        Rbac::type_url()
    } else {
        HttpFault::type_url()
    };
    let known = [Router::type_url(), own];
    let mut names = std::collections::HashSet::new();
    for (i, filter) in hcm.http_filters.iter_mut().enumerate() {
        if !names.insert(filter.name.clone()) {
            filter.name = format!("{}#{i}", filter.name);
            names.insert(filter.name.clone());
        }
        let url = match &filter.config_type {
            Some(ConfigType::TypedConfig(any)) => typed_struct_url(any),
            Some(ConfigType::ConfigDiscovery(_)) => "ECDS".to_owned(),
            None => String::new(),
        };
        if inbound && !filter.is_optional && (url == "ECDS" || GATEKEEPERS.contains(&url.as_str()))
        {
            return Err(format!(
                "http_filters[{i}] ({}, {url}) may refuse requests and is not supported: every request to this port is denied",
                filter.name
            ));
        }
        if !known.contains(&url) && !filter.is_optional {
            filter.is_optional = true;
            skipped.push(format!(
                "{at}.http_filters[{i}] ({}): not applied",
                filter.name
            ));
        }
    }
    if let Some(RouteSpecifier::RouteConfig(rc)) = &mut hcm.route_specifier {
        normalize_route_config(rc, &format!("{at}.route_config"), skipped);
    }
    Ok(())
}

/// HTTP filters that decide whether a request is served.
const GATEKEEPERS: [&str; 7] = [
    "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
    "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
    "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor",
    "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
    "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
    "type.googleapis.com/envoy.extensions.filters.http.oauth2.v3.OAuth2",
    "type.googleapis.com/envoy.extensions.filters.http.basic_auth.v3.BasicAuth",
];

/// The part of `udpa.type.v1.TypedStruct` / `xds.type.v3.TypedStruct` read here.
#[derive(Clone, PartialEq, prost::Message)]
struct TypedStructMsg {
    #[prost(string, tag = "1")]
    type_url: String,
}

/// A filter config's type URL, seen through a `TypedStruct`.
fn typed_struct_url(any: &Any) -> String {
    const TYPED_STRUCTS: [&str; 2] = [
        "type.googleapis.com/udpa.type.v1.TypedStruct",
        "type.googleapis.com/xds.type.v3.TypedStruct",
    ];
    if TYPED_STRUCTS.contains(&any.type_url.as_str()) {
        if let Ok(ts) = TypedStructMsg::decode(any.value.as_slice()) {
            return ts.type_url;
        }
    }
    any.type_url.clone()
}

/// Marks route-level overrides of filters the mesh does not implement optional.
pub(crate) fn normalize_route_config(rc: &mut RouteConfiguration, at: &str, skipped: &mut Skipped) {
    let mut mark = |map: &mut std::collections::HashMap<String, Any>, here: String| {
        for (name, any) in map.iter_mut() {
            if any.type_url == HttpFault::type_url() {
                continue;
            }
            if any.type_url == FilterConfig::type_url() {
                let Ok(mut fc) = FilterConfig::decode(any.value.as_slice()) else {
                    continue;
                };
                let inner_fault = fc
                    .config
                    .as_ref()
                    .is_some_and(|c| c.type_url == HttpFault::type_url());
                if inner_fault || fc.is_optional {
                    continue;
                }
                fc.is_optional = true;
                *any = crate::resource::to_any(&fc);
            } else {
                let wrapped = FilterConfig {
                    config: Some(any.clone()),
                    is_optional: true,
                    disabled: false,
                };
                *any = crate::resource::to_any(&wrapped);
            }
            skipped.push(format!(
                "{here}.typed_per_filter_config[{name}]: not applied"
            ));
        }
    };
    for (v, vh) in rc.virtual_hosts.iter_mut().enumerate() {
        let vat = format!("{at}.virtual_hosts[{v}]");
        mark(&mut vh.typed_per_filter_config, vat.clone());
        for (r, route) in vh.routes.iter_mut().enumerate() {
            mark(
                &mut route.typed_per_filter_config,
                format!("{vat}.routes[{r}]"),
            );
        }
    }
}

/// A sidecar cluster, made readable by the proxyless translation, or why the mesh cannot
/// use it (a discovery type other than EDS and LOGICAL_DNS, a TLS context naming other
/// secrets).
pub(crate) fn normalize_cluster(c: &mut Cluster, skipped: &mut Skipped) -> Result<(), String> {
    let kind = match &c.cluster_discovery_type {
        Some(ClusterDiscoveryType::Type(t)) => DiscoveryType::try_from(*t).ok(),
        Some(ClusterDiscoveryType::ClusterType(custom)) => {
            return Err(format!("custom cluster type `{}`", custom.name))
        }
        None => Some(DiscoveryType::Static),
    };
    match kind {
        Some(DiscoveryType::Eds | DiscoveryType::LogicalDns) => {}
        Some(other) => return Err(format!("type {} is not supported", other.as_str_name())),
        None => return Err("unknown discovery type".to_owned()),
    }
    if !c.filters.is_empty() {
        let names: Vec<&str> = c.filters.iter().map(|f| f.name.as_str()).collect();
        skipped.push(format!("filters ({}): not applied", names.join(", ")));
        c.filters.clear();
    }
    if c.transport_socket.is_none() && !c.transport_socket_matches.is_empty() {
        let tls_match = c
            .transport_socket_matches
            .iter()
            .find(|m| m.name == "tlsMode-istio")
            .or_else(|| {
                c.transport_socket_matches.iter().find(|m| {
                    m.transport_socket.as_ref().is_some_and(|t| {
                        matches!(&t.config_type, Some(SocketConfig::TypedConfig(a)) if a.type_url == UpstreamTlsContext::type_url())
                    })
                })
            });
        if let Some(m) = tls_match {
            skipped.push(format!(
                "transport_socket_matches: `{}` used for every endpoint",
                m.name
            ));
            c.transport_socket = m.transport_socket.clone();
        }
        c.transport_socket_matches.clear();
    }
    if let Some(TransportSocket {
        config_type: Some(SocketConfig::TypedConfig(any)),
        ..
    }) = &mut c.transport_socket
    {
        if any.type_url == UpstreamTlsContext::type_url() {
            let mut ctx = UpstreamTlsContext::decode(any.value.as_slice())
                .map_err(|e| format!("transport_socket: cannot decode: {e}"))?;
            if let Some(common) = ctx.common_tls_context.as_mut() {
                sds_to_provider(common).map_err(|e| format!("transport_socket: {e}"))?;
            }
            *any = crate::resource::to_any(&ctx);
        }
    }
    Ok(())
}

fn normalize_downstream_tls(any: &Any, _skipped: &mut Skipped, _at: &str) -> Result<Any, String> {
    if any.type_url != DownstreamTlsContext::type_url() {
        return Ok(any.clone());
    }
    let mut ctx = DownstreamTlsContext::decode(any.value.as_slice())
        .map_err(|e| format!("cannot decode: {e}"))?;
    if let Some(common) = ctx.common_tls_context.as_mut() {
        sds_to_provider(common)?;
    }
    Ok(crate::resource::to_any(&ctx))
}

/// SDS secrets `default` and `ROOTCA` -> the certificate provider instance `default`.
/// Other secret names (a DestinationRule's `credentialName`) cannot be fetched here.
fn sds_to_provider(common: &mut CommonTlsContext) -> Result<(), String> {
    let instance = |name: &str| CertificateProviderPluginInstance {
        instance_name: SDS_PROVIDER_INSTANCE.to_owned(),
        certificate_name: name.to_owned(),
    };
    if !common.tls_certificate_sds_secret_configs.is_empty() {
        let [secret] = common.tls_certificate_sds_secret_configs.as_slice() else {
            return Err("more than one SDS certificate".to_owned());
        };
        if !SDS_SECRETS.contains(&secret.name.as_str()) {
            return Err(format!(
                "SDS secret `{}` is not Istio's workload certificate",
                secret.name
            ));
        }
        common.tls_certificate_provider_instance = Some(instance(&secret.name));
        common.tls_certificate_sds_secret_configs.clear();
    }
    match &mut common.validation_context_type {
        Some(ValidationContextType::CombinedValidationContext(combined)) => {
            if let Some(secret) = combined.validation_context_sds_secret_config.take() {
                if !SDS_SECRETS.contains(&secret.name.as_str()) {
                    return Err(format!(
                        "SDS secret `{}` is not Istio's root certificate",
                        secret.name
                    ));
                }
                let v = combined
                    .default_validation_context
                    .get_or_insert_with(Default::default);
                v.ca_certificate_provider_instance = Some(instance(&secret.name));
            }
        }
        Some(ValidationContextType::ValidationContextSdsSecretConfig(secret)) => {
            if !SDS_SECRETS.contains(&secret.name.as_str()) {
                return Err(format!(
                    "SDS secret `{}` is not Istio's root certificate",
                    secret.name
                ));
            }
            let name = secret.name.clone();
            #[allow(deprecated)] // the current field of the same meaning
            {
                common.validation_context_type = Some(
                    ValidationContextType::ValidationContextCertificateProviderInstance(
                        CertificateProviderInstance {
                            instance_name: SDS_PROVIDER_INSTANCE.to_owned(),
                            certificate_name: name,
                        },
                    ),
                );
            }
        }
        _ => {}
    }
    Ok(())
}
