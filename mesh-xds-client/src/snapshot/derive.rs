//! A route configuration as one listener sees it: its fault filter (the filter-level
//! config, or each route's `typed_per_filter_config` override, gRFC A39) and its
//! HttpConnectionManager's `max_stream_duration` for routes without one (gRFC A31).

use std::sync::Arc;
use std::time::Duration;

use mesh_core::route::{FaultInjection, Route, RouteAction, RouteConfig, VirtualHost};

use super::SnapshotAssembler;
use crate::translate::{ClientListener, RouteFaultOverrides};

type FaultFilter = Option<(String, Option<FaultInjection>)>;

/// A derived route configuration and what it was derived from.
#[derive(Debug)]
pub(super) struct Derived {
    source: Arc<RouteConfig>,
    overrides: Arc<RouteFaultOverrides>,
    fault: FaultFilter,
    max_stream_duration: Option<Duration>,
    result: Arc<RouteConfig>,
}

impl SnapshotAssembler {
    /// `rc` with the listener's filters applied, under the name `<rc>@<listener>`; `None`
    /// when they change nothing (the shared `rc` is used as is). Cached per name and
    /// reused while the inputs stay the same `Arc`s and values.
    pub(super) fn derive(
        &mut self,
        listener_name: &str,
        rc: &Arc<RouteConfig>,
        overrides: &Arc<RouteFaultOverrides>,
        client: &ClientListener,
    ) -> Option<Arc<RouteConfig>> {
        let fault = &client.filters.fault;
        let msd = client.max_stream_duration;
        let needs_fault = fault.as_ref().is_some_and(|(name, base)| {
            base.is_some()
                || overrides
                    .iter()
                    .flatten()
                    .any(|o| matches!(o.get(name), Some(Some(_))))
        });
        let needs_msd = msd.is_some()
            && rc
                .virtual_hosts()
                .iter()
                .flat_map(VirtualHost::routes)
                .any(|r| matches!(r.action(), RouteAction::Forward(f) if f.max_stream_duration.max.is_none()));
        if !needs_fault && !needs_msd {
            return None;
        }
        let name = format!("{}@{listener_name}", rc.name());
        if let Some(d) = self.derived.get(&name) {
            if Arc::ptr_eq(&d.source, rc)
                && Arc::ptr_eq(&d.overrides, overrides)
                && d.fault == *fault
                && d.max_stream_duration == msd
            {
                return Some(d.result.clone());
            }
        }
        let result = Arc::new(apply(&name, rc, overrides, fault.as_ref(), msd));
        self.derived.insert(
            name,
            Derived {
                source: rc.clone(),
                overrides: overrides.clone(),
                fault: fault.clone(),
                max_stream_duration: msd,
                result: result.clone(),
            },
        );
        Some(result)
    }
}

fn apply(
    name: &str,
    rc: &RouteConfig,
    overrides: &RouteFaultOverrides,
    fault: Option<&(String, Option<FaultInjection>)>,
    msd: Option<Duration>,
) -> RouteConfig {
    let virtual_hosts = rc
        .virtual_hosts()
        .iter()
        .enumerate()
        .map(|(v, vh)| {
            let routes = vh
                .routes()
                .iter()
                .enumerate()
                .map(|(r, route)| {
                    let route_fault = fault.and_then(|(filter, base)| {
                        match overrides
                            .get(v)
                            .and_then(|o| o.get(r))
                            .and_then(|o| o.get(filter))
                        {
                            Some(over) => over.clone(),
                            None => base.clone(),
                        }
                    });
                    rebuild_route(route, route_fault, msd)
                })
                .collect();
            vh.with_routes(routes)
        })
        .collect();
    RouteConfig::new(name, virtual_hosts)
}

fn rebuild_route(route: &Route, fault: Option<FaultInjection>, msd: Option<Duration>) -> Route {
    let action = match (route.action(), msd) {
        (RouteAction::Forward(f), Some(max)) if f.max_stream_duration.max.is_none() => {
            let mut f = f.clone();
            f.max_stream_duration.max = Some(max);
            RouteAction::Forward(f)
        }
        (other, _) => other.clone(),
    };
    Route::new(route.name(), route.matcher().clone(), action)
        .with_headers(
            route.request_headers().clone(),
            route.response_headers().clone(),
        )
        .with_fault(fault)
}
