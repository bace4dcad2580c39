//! HTTP filters (gRFC A39): the HttpConnectionManager's chain and the per-route
//! `typed_per_filter_config` overrides.
//!
//! Known filters: the router (last, required), fault injection (client side, gRFC A33) and
//! RBAC (server side, gRFC A41). Anything else — an unknown type, a `TypedStruct`, a filter
//! fetched through ECDS, a known filter on the wrong side — rejects the resource unless the
//! filter is marked `is_optional`, in which case it is skipped.

use std::collections::{BTreeMap, HashMap};

use envoy_types::pb::envoy::config::route::v3::FilterConfig;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::HttpFault;
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::{Rbac, RbacPerRoute};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_filter::ConfigType, HttpConnectionManager,
};
use envoy_types::pb::google::protobuf::Any;
use mesh_core::rbac::RbacEngine;
use mesh_core::route::FaultInjection;
use prost::{Message, Name};

use super::fault::http_fault;
use super::rbac::rbac_filter;
use crate::resource::FieldError;

/// Which side of a connection a listener serves; decides which filters are supported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// A client (outbound) listener: fault injection.
    Client,
    /// A server (inbound) listener: RBAC.
    Server,
}

/// What an HttpConnectionManager's filter chain does, in the model's terms.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HttpFilterChain {
    /// The fault filter: its instance name (the key of per-route overrides) and its
    /// filter-level config, applied to routes without an override. `None`: no fault filter.
    pub fault: Option<(String, Option<FaultInjection>)>,
    /// The RBAC engines, in filter order; a request must pass every one.
    pub rbac: Vec<RbacEngine>,
}

/// Per-route overrides of the fault filter, by filter instance name; `None` disables the
/// filter on the route. A route's own entries replace its virtual host's.
pub type FaultOverrides = BTreeMap<String, Option<FaultInjection>>;

const TYPED_STRUCTS: [&str; 2] = [
    "type.googleapis.com/udpa.type.v1.TypedStruct",
    "type.googleapis.com/xds.type.v3.TypedStruct",
];

fn decode<M: Message + Default>(any: &Any, field: &str) -> Result<M, FieldError> {
    M::decode(any.value.as_slice())
        .map_err(|e| FieldError::new(field, format!("cannot decode: {e}")))
}

/// Checks and translates an HttpConnectionManager's filters (field paths start at
/// `http_filters`).
pub(crate) fn http_filters(
    hcm: &HttpConnectionManager,
    side: Side,
) -> Result<HttpFilterChain, FieldError> {
    let filters = &hcm.http_filters;
    let mut chain = HttpFilterChain::default();
    let Some(last) = filters.len().checked_sub(1) else {
        return Err(FieldError::new("http_filters", "empty: no router"));
    };
    for (i, filter) in filters.iter().enumerate() {
        let at = format!("http_filters[{i}]");
        if filter.name.is_empty() {
            return Err(FieldError::new(format!("{at}.name"), "empty"));
        }
        if filters[..i].iter().any(|f| f.name == filter.name) {
            return Err(FieldError::new(
                format!("{at}.name"),
                format!("`{}` appears twice", filter.name),
            ));
        }
        let any = match &filter.config_type {
            Some(ConfigType::TypedConfig(any)) => any,
            Some(ConfigType::ConfigDiscovery(_)) if filter.is_optional => continue,
            Some(ConfigType::ConfigDiscovery(_)) => {
                return Err(FieldError::new(
                    format!("{at}.config_discovery"),
                    "filter configs from ECDS are not supported",
                ))
            }
            None if filter.is_optional => continue,
            None => return Err(FieldError::new(format!("{at}.typed_config"), "missing")),
        };
        let url = any.type_url.as_str();
        let typed = format!("{at}.typed_config");
        if url == Router::type_url() {
            if i != last {
                return Err(FieldError::new(at, "the router must be the last filter"));
            }
            return Ok(chain);
        }
        match (url, side) {
            (u, Side::Client) if u == HttpFault::type_url() => {
                let f =
                    http_fault(&decode::<HttpFault>(any, &typed)?).map_err(|e| e.under(&typed))?;
                // Disabled by default: only routes whose override enables it get faults.
                let base = (f != FaultInjection::default() && !filter.disabled).then_some(f);
                chain.fault = Some((filter.name.clone(), base));
            }
            (u, Side::Server) if u == Rbac::type_url() && filter.disabled => {
                // Enabled per route only, which the model cannot say: refuse, never open.
                return Err(FieldError::new(
                    format!("{at}.disabled"),
                    "an RBAC filter enabled per route is not supported",
                ));
            }
            (u, Side::Server) if u == Rbac::type_url() => {
                let rbac = decode::<Rbac>(any, &typed)?;
                if let Some(engine) = rbac_filter(&rbac).map_err(|e| e.under(&typed))? {
                    chain.rbac.push(engine);
                }
            }
            _ if filter.is_optional => {}
            (u, _) if TYPED_STRUCTS.contains(&u) => {
                return Err(FieldError::new(
                    typed,
                    "filter configs in a TypedStruct are not supported",
                ))
            }
            (u, side) => {
                return Err(FieldError::new(
                    typed,
                    format!("filter type {u} is not supported on the {side:?} side"),
                ))
            }
        }
    }
    Err(FieldError::new(
        format!("http_filters[{last}]"),
        "the last filter must be the router",
    ))
}

/// Reads a route's (or virtual host's) `typed_per_filter_config`: fault overrides are
/// returned; RBAC overrides are refused (one authorization per listener in the model, so
/// honouring them is not possible and ignoring them could open access); anything else is
/// rejected unless marked optional.
pub(crate) fn filter_overrides(map: &HashMap<String, Any>) -> Result<FaultOverrides, FieldError> {
    let mut names: Vec<&String> = map.keys().collect();
    names.sort();
    let mut out = FaultOverrides::new();
    for name in names {
        let at = format!("typed_per_filter_config[{name}]");
        let mut any = &map[name];
        let wrapper;
        let mut optional = false;
        if any.type_url == FilterConfig::type_url() {
            wrapper = decode::<FilterConfig>(any, &at)?;
            optional = wrapper.is_optional;
            if wrapper.disabled {
                out.insert(name.clone(), None);
                continue;
            }
            match &wrapper.config {
                Some(inner) => any = inner,
                None if optional => continue,
                None => return Err(FieldError::new(format!("{at}.config"), "missing")),
            }
        }
        let url = any.type_url.as_str();
        if url == HttpFault::type_url() {
            let f = http_fault(&decode::<HttpFault>(any, &at)?).map_err(|e| e.under(&at))?;
            out.insert(name.clone(), Some(f));
        } else if url == RbacPerRoute::type_url() {
            return Err(FieldError::new(
                at,
                "per-route RBAC overrides are not supported",
            ));
        } else if !optional {
            return Err(FieldError::new(
                at,
                format!("filter override type {url} is not supported"),
            ));
        }
    }
    Ok(out)
}
