//! LDS: a client-side listener is an `api_listener` holding an HttpConnectionManager,
//! whose routes come inline or from RDS (gRFC A27).

use envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier;
use envoy_types::pb::envoy::config::core::v3::ConfigSource;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, HttpConnectionManager,
};
use prost::{Message, Name};

use super::route::{route_cluster_names, validate_route_configuration};
use super::{FieldError, Resource, ResourceType, XdsType};
use crate::shape::IstioShape;
use crate::translate::listener::{client_listener, server_listener};
use crate::translate::sidecar::{sidecar_listener, SidecarListener};
use crate::translate::{ClientListener, ServerListener};
use std::sync::Arc;

/// A listener in the model's terms.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ListenerModel {
    /// A client (outbound) listener.
    Client(ClientListener),
    /// A server (inbound) listener.
    Server(ServerListener),
    /// A listener of istiod's sidecar output (an outbound port, `virtualInbound`, ...).
    Sidecar(Arc<SidecarListener>),
}

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
    /// The listener translated.
    pub model: ListenerModel,
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
            let model = ListenerModel::Server(server_listener(&listener)?);
            return Ok(Self {
                listener,
                http_connection_manager: None,
                route: ListenerRoute::Server,
                model,
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
        let model =
            ListenerModel::Client(client_listener(&hcm, &listener.name).map_err(|e| e.under(at))?);
        Ok(Self {
            listener,
            http_connection_manager: Some(hcm),
            route,
            model,
        })
    }

    fn validate_as(listener: Listener, shape: IstioShape) -> Result<Self, FieldError> {
        if !shape.is_sidecar() {
            return Self::validate(listener);
        }
        if listener.api_listener.is_some() {
            return Self::validate(listener);
        }
        let model = sidecar_listener(&listener);
        for skipped in &model.skipped {
            tracing::debug!(listener = listener.name, "sidecar shape: {skipped}");
        }
        Ok(Self {
            listener,
            http_connection_manager: None,
            route: ListenerRoute::Server,
            model: ListenerModel::Sidecar(Arc::new(model)),
        })
    }

    fn references(&self) -> Vec<(XdsType, String)> {
        if let ListenerModel::Sidecar(s) = &self.model {
            return s
                .rds_names()
                .map(|n| (XdsType::RouteConfiguration, n.to_owned()))
                .collect();
        }
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

    fn message(&self) -> &Self::Message {
        &self.listener
    }

    fn from_resource(resource: &Resource) -> Option<&Self> {
        match resource {
            Resource::Listener(r) => Some(r),
            _ => None,
        }
    }
}
