//! RDS: route configurations, validated as gRPC's client does (gRFC A28).

use std::collections::BTreeSet;
use std::sync::Arc;

use envoy_types::pb::envoy::config::route::v3::header_matcher::HeaderMatchSpecifier;
use envoy_types::pb::envoy::config::route::v3::route::Action;
use envoy_types::pb::envoy::config::route::v3::route_action::ClusterSpecifier;
use envoy_types::pb::envoy::config::route::v3::route_match::PathSpecifier;
use envoy_types::pb::envoy::config::route::v3::{HeaderMatcher, Route, RouteConfiguration};

use super::{FieldError, Resource, ResourceType, XdsType};
use crate::translate::{route_config_parts, RouteFaultOverrides};

/// An accepted route configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfigurationResource {
    /// The route configuration as received.
    pub route_configuration: RouteConfiguration,
    /// The clusters its routes send to, sorted and without duplicates.
    pub cluster_names: Vec<String>,
    /// The route configuration translated (without per-route faults, which depend on the
    /// listener's filters).
    pub model: Arc<mesh_core::route::RouteConfig>,
    /// The per-route fault-filter overrides, aligned with `model`'s routes.
    pub fault_overrides: Arc<RouteFaultOverrides>,
}

impl ResourceType for RouteConfigurationResource {
    type Message = RouteConfiguration;
    const TYPE: XdsType = XdsType::RouteConfiguration;

    fn name(message: &RouteConfiguration) -> &str {
        &message.name
    }

    fn validate(route_configuration: RouteConfiguration) -> Result<Self, FieldError> {
        validate_route_configuration(&route_configuration)?;
        let cluster_names = route_cluster_names(&route_configuration);
        let (model, faults) = route_config_parts(&route_configuration)?;
        Ok(Self {
            route_configuration,
            cluster_names,
            model: Arc::new(model),
            fault_overrides: Arc::new(faults),
        })
    }

    fn validate_as(
        route_configuration: RouteConfiguration,
        shape: crate::shape::IstioShape,
    ) -> Result<Self, FieldError> {
        if !shape.is_sidecar() {
            return Self::validate(route_configuration);
        }
        let mut normalized = route_configuration.clone();
        let mut skipped = Vec::new();
        crate::translate::sidecar::normalize_route_config(&mut normalized, "", &mut skipped);
        for s in &skipped {
            tracing::debug!(route = route_configuration.name, "sidecar shape: {s}");
        }
        let mut valid = Self::validate(normalized)?;
        valid.route_configuration = route_configuration;
        Ok(valid)
    }

    fn references(&self) -> Vec<(XdsType, String)> {
        self.cluster_names
            .iter()
            .map(|c| (XdsType::Cluster, c.clone()))
            .collect()
    }

    fn into_resource(self) -> Resource {
        Resource::RouteConfiguration(self.into())
    }

    fn message(&self) -> &Self::Message {
        &self.route_configuration
    }

    fn from_resource(resource: &Resource) -> Option<&Self> {
        match resource {
            Resource::RouteConfiguration(r) => Some(r),
            _ => None,
        }
    }
}

/// Checks a route configuration (from RDS or inline in a listener).
pub(super) fn validate_route_configuration(rc: &RouteConfiguration) -> Result<(), FieldError> {
    for (v, vh) in rc.virtual_hosts.iter().enumerate() {
        let at = format!("virtual_hosts[{v}]");
        if vh.domains.is_empty() {
            return Err(FieldError::new(format!("{at}.domains"), "empty"));
        }
        for (d, domain) in vh.domains.iter().enumerate() {
            // Envoy and gRPC accept `*` only alone, as a whole prefix or as a whole suffix.
            let inner = domain.trim_start_matches('*').trim_end_matches('*');
            if domain.is_empty() || inner.contains('*') || domain.matches('*').count() > 1 {
                return Err(FieldError::new(
                    format!("{at}.domains[{d}]"),
                    format!("invalid domain pattern `{domain}`"),
                ));
            }
        }
        for (r, route) in vh.routes.iter().enumerate() {
            validate_route(route).map_err(|e| e.under(&format!("{at}.routes[{r}]")))?;
        }
    }
    Ok(())
}

fn validate_route(route: &Route) -> Result<(), FieldError> {
    let matcher = route
        .r#match
        .as_ref()
        .ok_or_else(|| FieldError::new("match", "missing"))?;
    match &matcher.path_specifier {
        Some(PathSpecifier::SafeRegex(re)) => check_regex(&re.regex, "match.safe_regex.regex")?,
        Some(PathSpecifier::Path(p)) if !p.is_empty() && !p.starts_with('/') => {
            return Err(FieldError::new("match.path", "must start with `/`"))
        }
        // Envoy's rule for the field: no `?` or `#`, at least two characters, no trailing `/`.
        Some(PathSpecifier::PathSeparatedPrefix(p))
            if p.len() < 2 || p.contains(['?', '#']) || p.ends_with('/') =>
        {
            return Err(FieldError::new(
                "match.path_separated_prefix",
                format!("`{p}`: must be at least two characters, without `?` or `#`, and not end in `/`"),
            ))
        }
        None => return Err(FieldError::new("match.path_specifier", "missing")),
        // Other kinds are ignored by gRPC's client (the route never matches).
        _ => {}
    }
    for (h, header) in matcher.headers.iter().enumerate() {
        check_header(header).map_err(|e| e.under(&format!("match.headers[{h}]")))?;
    }
    match &route.action {
        Some(Action::Route(action)) => match &action.cluster_specifier {
            Some(ClusterSpecifier::Cluster(name)) if name.is_empty() => {
                Err(FieldError::new("route.cluster", "empty"))
            }
            Some(ClusterSpecifier::WeightedClusters(wc)) => {
                let at = "route.weighted_clusters";
                if wc.clusters.is_empty() {
                    return Err(FieldError::new(format!("{at}.clusters"), "empty"));
                }
                let mut total: u64 = 0;
                for (c, cw) in wc.clusters.iter().enumerate() {
                    if cw.name.is_empty() {
                        return Err(FieldError::new(format!("{at}.clusters[{c}].name"), "empty"));
                    }
                    total += u64::from(cw.weight.as_ref().map_or(0, |w| w.value));
                }
                if total == 0 {
                    return Err(FieldError::new(at, "the weights sum to zero"));
                }
                if total > u64::from(u32::MAX) {
                    return Err(FieldError::new(
                        at,
                        format!("the weights sum to {total}, above 2^32-1"),
                    ));
                }
                Ok(())
            }
            Some(_) => Ok(()),
            None => Err(FieldError::new("route.cluster_specifier", "missing")),
        },
        Some(_) => Ok(()),
        None => Err(FieldError::new("action", "missing")),
    }
}

fn check_header(header: &HeaderMatcher) -> Result<(), FieldError> {
    use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
    if header.name.is_empty() {
        return Err(FieldError::new("name", "empty"));
    }
    #[allow(deprecated)]
    match &header.header_match_specifier {
        Some(HeaderMatchSpecifier::SafeRegexMatch(re)) => {
            check_regex(&re.regex, "safe_regex_match.regex")
        }
        Some(HeaderMatchSpecifier::RangeMatch(range)) if range.start > range.end => {
            Err(FieldError::new("range_match", "start is greater than end"))
        }
        Some(HeaderMatchSpecifier::StringMatch(sm)) => match &sm.match_pattern {
            Some(MatchPattern::SafeRegex(re)) => check_regex(&re.regex, "string_match.safe_regex"),
            None => Err(FieldError::new("string_match", "no pattern")),
            _ => Ok(()),
        },
        _ => Ok(()),
    }
}

fn check_regex(pattern: &str, field: &str) -> Result<(), FieldError> {
    mesh_core::matcher::Regex::new(pattern)
        .map(|_| ())
        .map_err(|e| FieldError::new(field, e.to_string()))
}

/// The clusters a route configuration's routes send to, sorted, without duplicates.
pub(super) fn route_cluster_names(rc: &RouteConfiguration) -> Vec<String> {
    let mut names = BTreeSet::new();
    for route in rc.virtual_hosts.iter().flat_map(|vh| &vh.routes) {
        if let Some(Action::Route(action)) = &route.action {
            match &action.cluster_specifier {
                Some(ClusterSpecifier::Cluster(name)) => {
                    names.insert(name.clone());
                }
                Some(ClusterSpecifier::WeightedClusters(wc)) => {
                    names.extend(wc.clusters.iter().map(|c| c.name.clone()));
                }
                _ => {}
            }
        }
    }
    names.into_iter().collect()
}
