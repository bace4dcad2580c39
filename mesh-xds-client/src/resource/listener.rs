//! LDS: a client-side listener is an `api_listener` holding an HttpConnectionManager,
//! whose routes come inline or from RDS (gRFC A27).

use envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier;
use envoy_types::pb::envoy::config::core::v3::ConfigSource;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, http_filter::ConfigType, HttpConnectionManager,
};
use prost::{Message, Name};

use super::route::{route_cluster_names, validate_route_configuration};
use super::{FieldError, Resource, ResourceType, XdsType};

const ROUTER_TYPE_URL: &str = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";

/// Where a listener's routes come from.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ListenerRoute {
    /// From RDS, under this name.
    Rds(String),
    /// Inline in the HttpConnectionManager.
    Inline(Box<RouteConfiguration>),
    /// A server-side (inbound) listener; its filter chains are not interpreted yet.
    Server,
}

/// An accepted listener.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerResource {
    /// The listener as received.
    pub listener: Listener,
    /// Its HttpConnectionManager, decoded (client-side listeners only).
    pub http_connection_manager: Option<HttpConnectionManager>,
    /// Where its routes come from.
    pub route: ListenerRoute,
}

impl ListenerResource {
    /// The RDS name, when the routes come from RDS.
    pub fn rds_name(&self) -> Option<&str> {
        match &self.route {
            ListenerRoute::Rds(name) => Some(name),
            _ => None,
        }
    }
}

/// gRPC accepts an RDS or EDS config source only when it points back at the ADS stream.
pub(super) fn check_config_source(source: Option<&ConfigSource>) -> Result<(), FieldError> {
    match source.and_then(|s| s.config_source_specifier.as_ref()) {
        Some(ConfigSourceSpecifier::Ads(_) | ConfigSourceSpecifier::Self_(_)) => Ok(()),
        Some(_) => Err(FieldError::new("", "must be `ads` or `self`")),
        None => Err(FieldError::new("", "missing")),
    }
}

impl ResourceType for ListenerResource {
    type Message = Listener;
    const TYPE: XdsType = XdsType::Listener;

    fn name(message: &Listener) -> &str {
        &message.name
    }

    fn validate(listener: Listener) -> Result<Self, FieldError> {
        let Some(api) = listener.api_listener.as_ref() else {
            return Ok(Self {
                listener,
                http_connection_manager: None,
                route: ListenerRoute::Server,
            });
        };
        let at = "api_listener.api_listener";
        let any = api
            .api_listener
            .as_ref()
            .ok_or_else(|| FieldError::new(at, "missing"))?;
        if any.type_url != HttpConnectionManager::type_url() {
            return Err(FieldError::new(
                at,
                format!("type {} is not an HttpConnectionManager", any.type_url),
            ));
        }
        let hcm = HttpConnectionManager::decode(any.value.as_slice())
            .map_err(|e| FieldError::new(at, format!("cannot decode: {e}")))?;
        check_http_filters(&hcm).map_err(|e| e.under(at))?;
        let route = match &hcm.route_specifier {
            Some(RouteSpecifier::Rds(rds)) => {
                check_config_source(rds.config_source.as_ref())
                    .map_err(|e| e.under(&format!("{at}.rds.config_source")))?;
                if rds.route_config_name.is_empty() {
                    return Err(FieldError::new(
                        format!("{at}.rds.route_config_name"),
                        "empty",
                    ));
                }
                ListenerRoute::Rds(rds.route_config_name.clone())
            }
            Some(RouteSpecifier::RouteConfig(rc)) => {
                validate_route_configuration(rc)
                    .map_err(|e| e.under(&format!("{at}.route_config")))?;
                ListenerRoute::Inline(Box::new(rc.clone()))
            }
            Some(RouteSpecifier::ScopedRoutes(_)) => {
                return Err(FieldError::new(
                    format!("{at}.scoped_routes"),
                    "scoped routes are not supported",
                ))
            }
            None => {
                return Err(FieldError::new(
                    format!("{at}.route_specifier"),
                    "neither rds nor route_config is set",
                ))
            }
        };
        Ok(Self {
            listener,
            http_connection_manager: Some(hcm),
            route,
        })
    }

    fn references(&self) -> Vec<(XdsType, String)> {
        match &self.route {
            ListenerRoute::Rds(name) => vec![(XdsType::RouteConfiguration, name.clone())],
            ListenerRoute::Inline(rc) => route_cluster_names(rc)
                .into_iter()
                .map(|c| (XdsType::Cluster, c))
                .collect(),
            ListenerRoute::Server => Vec::new(),
        }
    }

    fn into_resource(self) -> Resource {
        Resource::Listener(self.into())
    }
}

/// gRFC A39: filter names are unique, each has a config, and the router comes last.
fn check_http_filters(hcm: &HttpConnectionManager) -> Result<(), FieldError> {
    let filters = &hcm.http_filters;
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
        if filter.config_type.is_none() && !filter.is_optional {
            return Err(FieldError::new(format!("{at}.typed_config"), "missing"));
        }
    }
    match filters.last().and_then(|f| f.config_type.as_ref()) {
        Some(ConfigType::TypedConfig(any)) if any.type_url == ROUTER_TYPE_URL => Ok(()),
        _ if filters.is_empty() => Err(FieldError::new("http_filters", "empty: no router")),
        _ => Err(FieldError::new(
            format!("http_filters[{}]", filters.len() - 1),
            "the last filter must be the router",
        )),
    }
}
