//! Listeners: a client listener's HttpConnectionManager (gRFC A27, A39) and a server
//! listener's filter chains (gRFC A36) -> the TLS mode and authorization of an inbound
//! address.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::address::Address as AddressKind;
use envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;
use envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType as SocketConfig;
use envoy_types::pb::envoy::config::listener::v3::filter::ConfigType as FilterConfigType;
use envoy_types::pb::envoy::config::listener::v3::{FilterChain, Listener};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, HttpConnectionManager,
};
use envoy_types::pb::envoy::extensions::transport_sockets::raw_buffer::v3::RawBuffer;
use mesh_core::inbound::{InboundPolicy, TlsMode};
use mesh_core::rbac::{Authorization, RbacAction, RbacEngine};
use mesh_core::route::RouteConfig;
use prost::{Message, Name};

use super::duration;
use super::filters::{http_filters, HttpFilterChain, Side};
use super::route::{route_config_parts, RouteFaultOverrides};
use super::tls::downstream_tls;
use crate::resource::FieldError;

/// Where a client listener's routes are.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ClientRoutes {
    /// In the RDS resource of this name.
    Rds(String),
    /// Inline, translated, with the routes' fault overrides.
    Inline(Arc<RouteConfig>, Arc<RouteFaultOverrides>),
}

/// A client listener, translated.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientListener {
    /// Its routes.
    pub routes: ClientRoutes,
    /// Its HTTP filters.
    pub filters: HttpFilterChain,
    /// The HttpConnectionManager's `max_stream_duration`, used by routes without their own
    /// (gRFC A31).
    pub max_stream_duration: Option<Duration>,
}

/// A server listener, translated.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerListener {
    /// The address it serves (`None` when the listener names none: it then applies as
    /// the workload's default).
    pub address: Option<SocketAddr>,
    /// The TLS mode and authorization.
    pub policy: Arc<InboundPolicy>,
    /// The certificate provider instances its TLS contexts name.
    pub certificate_providers: BTreeSet<String>,
}

/// Translates a client listener's HttpConnectionManager (field paths from the HCM). An
/// inline route configuration is renamed `<listener>#inline`, so it never collides with an
/// RDS resource in the snapshot.
pub(crate) fn client_listener(
    hcm: &HttpConnectionManager,
    listener_name: &str,
) -> Result<ClientListener, FieldError> {
    let filters = http_filters(hcm, Side::Client)?;
    let routes = match &hcm.route_specifier {
        Some(RouteSpecifier::Rds(rds)) => ClientRoutes::Rds(rds.route_config_name.clone()),
        Some(RouteSpecifier::RouteConfig(rc)) => {
            let (rc, faults) = route_config_parts(rc).map_err(|e| e.under("route_config"))?;
            let rc = RouteConfig::new(
                format!("{listener_name}#inline"),
                rc.virtual_hosts().to_vec(),
            );
            ClientRoutes::Inline(Arc::new(rc), Arc::new(faults))
        }
        _ => {
            return Err(FieldError::new(
                "route_specifier",
                "neither rds nor route_config",
            ))
        }
    };
    let max_stream_duration = hcm
        .common_http_protocol_options
        .as_ref()
        .and_then(|o| o.max_stream_duration.as_ref())
        .map(|d| duration(d, "common_http_protocol_options.max_stream_duration"))
        .transpose()?
        .filter(|d| !d.is_zero());
    Ok(ClientListener {
        routes,
        filters,
        max_stream_duration,
    })
}

/// What one server filter chain says.
struct ChainView {
    tls: Option<bool>,
    rbac: Vec<RbacEngine>,
    providers: Vec<String>,
}

/// Translates a server listener (gRFC A36). TLS modes: every chain mutual TLS -> STRICT,
/// none with TLS -> DISABLE, chains with and without TLS -> PERMISSIVE. The chains must
/// agree on their RBAC filters, since one address has one authorization; anything the
/// model cannot say rejects the listener rather than opening access.
pub(crate) fn server_listener(listener: &Listener) -> Result<ServerListener, FieldError> {
    // The address, or the `IP:PORT` the Istio template puts at the end of the name.
    let address = listener_address(listener)?.or_else(|| {
        let (_, tail) = listener.name.rsplit_once('/')?;
        tail.parse().ok()
    });
    let mut chains = Vec::new();
    let mut restricted = None;
    for (i, chain) in listener.filter_chains.iter().enumerate() {
        let m = chain.filter_chain_match.clone().unwrap_or_default();
        // gRFC A36: chains that need SNI or ALPN inspection never match a proxyless server.
        let protocol_ok = matches!(m.transport_protocol.as_str(), "" | "raw_buffer" | "tls");
        if !m.server_names.is_empty() || !m.application_protocols.is_empty() || !protocol_ok {
            continue;
        }
        let view = filter_chain(chain).map_err(|e| e.under(&format!("filter_chains[{i}]")))?;
        let by_connection = m.destination_port.is_some()
            || !m.prefix_ranges.is_empty()
            || !m.source_prefix_ranges.is_empty()
            || !m.direct_source_prefix_ranges.is_empty()
            || !m.source_ports.is_empty()
            || m.source_type != 0;
        if by_connection {
            restricted = Some((i, view.tls));
        }
        chains.push(view);
    }
    // Chains picked by addresses or ports cannot be told apart here: harmless when every
    // chain has the same TLS settings, unsafe otherwise.
    if let Some((i, tls)) = restricted {
        if chains.iter().any(|c| c.tls != tls) {
            return Err(FieldError::new(
                format!("filter_chains[{i}].filter_chain_match"),
                "chains chosen by address or port with different TLS settings are not supported",
            ));
        }
    }
    if let Some(chain) = &listener.default_filter_chain {
        chains.push(filter_chain(chain).map_err(|e| e.under("default_filter_chain"))?);
    }
    let Some(first) = chains.first() else {
        // No chain accepts anything: refuse every request.
        let deny_all = Authorization::new(vec![RbacEngine::new(RbacAction::Allow, vec![])]);
        return Ok(ServerListener {
            address,
            policy: Arc::new(InboundPolicy::new(TlsMode::Strict).with_authorization(deny_all)),
            certificate_providers: BTreeSet::new(),
        });
    };
    if let Some(i) = chains.iter().position(|c| c.rbac != first.rbac) {
        return Err(FieldError::new(
            format!("filter_chains[{i}]"),
            "filter chains with different RBAC filters are not supported",
        ));
    }
    let Some(mode) = tls_mode(chains.iter().map(|c| c.tls)) else {
        return Err(FieldError::new(
            "filter_chains",
            "TLS without client certificates is not supported (only mutual TLS, plaintext, or both)",
        ));
    };
    let authorization = Authorization::new(first.rbac.clone());
    let certificate_providers = chains
        .iter()
        .flat_map(|c| c.providers.iter().cloned())
        .collect();
    Ok(ServerListener {
        address,
        policy: Arc::new(InboundPolicy::new(mode).with_authorization(authorization)),
        certificate_providers,
    })
}

/// The TLS mode of an address from its filter chains' TLS (`None`: plaintext;
/// `Some(require_client_certificate)`): every chain mutual TLS -> STRICT, none with TLS ->
/// DISABLE, both -> PERMISSIVE; `None` when some chain is TLS without client certificates
/// (no peer identity to authorize).
pub(crate) fn tls_mode(chains: impl Iterator<Item = Option<bool>> + Clone) -> Option<TlsMode> {
    let total = chains.clone().count();
    let with_tls = chains.clone().filter(Option::is_some).count();
    if with_tls == 0 {
        Some(TlsMode::Disable)
    } else if with_tls < total {
        Some(TlsMode::Permissive)
    } else if chains.into_iter().all(|t| t == Some(true)) {
        Some(TlsMode::Strict)
    } else {
        None
    }
}

pub(crate) fn listener_address(listener: &Listener) -> Result<Option<SocketAddr>, FieldError> {
    let Some(AddressKind::SocketAddress(sa)) =
        listener.address.as_ref().and_then(|a| a.address.as_ref())
    else {
        return Ok(None);
    };
    let at = "address.socket_address";
    let ip: IpAddr = sa.address.parse().map_err(|_| {
        FieldError::new(
            format!("{at}.address"),
            format!("`{}` is not an IP address", sa.address),
        )
    })?;
    let port = match sa.port_specifier {
        Some(PortSpecifier::PortValue(p)) => u16::try_from(p).ok(),
        _ => None,
    }
    .ok_or_else(|| FieldError::new(format!("{at}.port_value"), "missing or not a port"))?;
    Ok(Some(SocketAddr::new(ip, port)))
}

fn filter_chain(chain: &FilterChain) -> Result<ChainView, FieldError> {
    let mut providers = Vec::new();
    let tls = match chain
        .transport_socket
        .as_ref()
        .and_then(|t| t.config_type.as_ref())
    {
        None => None,
        Some(SocketConfig::TypedConfig(any)) if any.type_url == RawBuffer::type_url() => None,
        Some(SocketConfig::TypedConfig(any)) => {
            let tls = downstream_tls(any).map_err(|e| e.under("transport_socket.typed_config"))?;
            providers = tls.providers;
            Some(tls.require_client_certificate)
        }
    };
    // gRFC A36: exactly one network filter, the HttpConnectionManager.
    let [filter] = chain.filters.as_slice() else {
        return Err(FieldError::new(
            "filters",
            format!(
                "{} network filters; exactly one HttpConnectionManager is supported",
                chain.filters.len()
            ),
        ));
    };
    let any = match &filter.config_type {
        Some(FilterConfigType::TypedConfig(any)) => any,
        _ => return Err(FieldError::new("filters[0].typed_config", "missing")),
    };
    if any.type_url != HttpConnectionManager::type_url() {
        return Err(FieldError::new(
            "filters[0].typed_config",
            format!("type {} is not an HttpConnectionManager", any.type_url),
        ));
    }
    let at = "filters[0].typed_config";
    let hcm = HttpConnectionManager::decode(any.value.as_slice())
        .map_err(|e| FieldError::new(at, format!("cannot decode: {e}")))?;
    let filters = http_filters(&hcm, Side::Server).map_err(|e| e.under(at))?;
    match &hcm.route_specifier {
        // Checked for what would make it unsafe (per-route RBAC); server routes do not route.
        Some(RouteSpecifier::RouteConfig(rc)) => {
            route_config_parts(rc).map_err(|e| e.under(&format!("{at}.route_config")))?;
        }
        Some(RouteSpecifier::Rds(_)) => {}
        _ => {
            return Err(FieldError::new(
                format!("{at}.route_specifier"),
                "neither rds nor route_config",
            ))
        }
    }
    Ok(ChainView {
        tls,
        rbac: filters.rbac,
        providers,
    })
}
