//! Cluster -> [`mesh_core::cluster::Cluster`]: discovery (EDS, LOGICAL_DNS), load
//! balancing (`lb_policy` and gRFC A52's `load_balancing_policy`, ring hash per A42),
//! circuit breakers (A32's `max_requests` and Envoy's other three thresholds, the retry
//! budget), outlier detection (A50, with Envoy's consecutive-failure detectors),
//! the upstream protocol and TLS (A29).

use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3 as pb;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{LbConfig, LbPolicy as PbLbPolicy};
use envoy_types::pb::envoy::config::core::v3::address::Address as AddressKind;
use envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;
use envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType as SocketConfig;
use envoy_types::pb::envoy::config::core::v3::RoutingPriority;
use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
use envoy_types::pb::envoy::extensions::load_balancing_policies as lbp;
use envoy_types::pb::envoy::extensions::transport_sockets::raw_buffer::v3::RawBuffer;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::http_protocol_options::explicit_http_config::ProtocolConfig;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::http_protocol_options::UpstreamProtocolOptions;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions;
use envoy_types::pb::google::protobuf::{Any, UInt32Value};
use mesh_core::breaker::Thresholds;
use mesh_core::cluster::{Cluster, Discovery, UpstreamProtocol};
use mesh_core::lb::LbPolicy;
use mesh_core::outlier::OutlierConfig;
use mesh_core::retry::RetryBudgetConfig;
use prost::{Message, Name};

use super::duration;
use super::route_policy::hash_policies;
use super::tls::upstream_tls;
use crate::resource::FieldError;

/// Envoy's default `connect_timeout`.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const HTTP_OPTIONS_KEY: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// Translates a cluster already checked by [`crate::resource::ClusterResource`]'s
/// validation (its discovery type is EDS or LOGICAL_DNS).
pub fn cluster(c: &pb::Cluster, eds_service_name: Option<&str>) -> Result<Cluster, FieldError> {
    let mut out = Cluster::new(c.name.clone());
    out.discovery = match eds_service_name {
        Some(name) => Discovery::Eds {
            service_name: Some(name.to_owned()).filter(|n| *n != c.name),
        },
        None => logical_dns(c)?,
    };
    out.connect_timeout = match &c.connect_timeout {
        // Envoy requires a positive timeout: zero would fail every connection.
        Some(d) => Some(duration(d, "connect_timeout")?)
            .filter(|d| !d.is_zero())
            .ok_or_else(|| FieldError::new("connect_timeout", "must be above zero"))?,
        None => DEFAULT_CONNECT_TIMEOUT,
    };
    out.lb = lb_policy(c)?;
    if let Some(cb) = &c.circuit_breakers {
        let (thresholds, budget) = circuit_breakers(cb).map_err(|e| e.under("circuit_breakers"))?;
        out.circuit_breakers = thresholds;
        out.retry_budget = budget;
    }
    if let Some(od) = &c.outlier_detection {
        out.outlier_detection =
            Some(outlier_detection(od).map_err(|e| e.under("outlier_detection"))?);
    }
    protocol(c, &mut out)?;
    if let Some(ts) = &c.transport_socket {
        out.tls = match &ts.config_type {
            Some(SocketConfig::TypedConfig(any)) if any.type_url == RawBuffer::type_url() => None,
            Some(SocketConfig::TypedConfig(any)) => {
                Some(upstream_tls(any).map_err(|e| e.under("transport_socket.typed_config"))?)
            }
            None => return Err(FieldError::new("transport_socket.typed_config", "missing")),
        };
    }
    // Istio names clusters `outbound|port|subset|host`: keep the service and subset for
    // metrics and display.
    let mut parts = c.name.split('|');
    if let (Some("outbound"), Some(_), Some(subset), Some(host)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    {
        out.service = Some(host.to_owned());
        out.subset = Some(subset.to_owned()).filter(|s| !s.is_empty());
    }
    Ok(out)
}

fn logical_dns(c: &pb::Cluster) -> Result<Discovery, FieldError> {
    let at = "load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address";
    let sa = c
        .load_assignment
        .as_ref()
        .and_then(|la| la.endpoints.first())
        .and_then(|l| l.lb_endpoints.first())
        .and_then(|e| match &e.host_identifier {
            Some(HostIdentifier::Endpoint(ep)) => ep.address.as_ref(),
            _ => None,
        })
        .and_then(|a| match &a.address {
            Some(AddressKind::SocketAddress(sa)) => Some(sa),
            _ => None,
        })
        .ok_or_else(|| FieldError::new(at, "missing"))?;
    let port = match sa.port_specifier {
        Some(PortSpecifier::PortValue(p)) => u16::try_from(p).ok(),
        _ => None,
    }
    .ok_or_else(|| FieldError::new(format!("{at}.port_value"), "missing or not a port"))?;
    if sa.address.is_empty() {
        return Err(FieldError::new(format!("{at}.address"), "empty"));
    }
    Ok(Discovery::LogicalDns {
        host: sa.address.clone(),
        port,
    })
}

fn u64_of(v: Option<&envoy_types::pb::google::protobuf::UInt64Value>, default: u64) -> u64 {
    v.map_or(default, |v| v.value)
}

fn ring_hash(min: u64, max: u64, field: &str) -> Result<LbPolicy, FieldError> {
    let policy = LbPolicy::RingHash {
        min_ring_size: min,
        max_ring_size: max,
    };
    policy
        .validate()
        .map_err(|e| FieldError::new(field, e.to_string()))?;
    Ok(policy)
}

fn least_request(choice_count: Option<&UInt32Value>, field: &str) -> Result<LbPolicy, FieldError> {
    let policy = LbPolicy::LeastRequest {
        choice_count: choice_count.map_or(2, |c| c.value),
    };
    policy
        .validate()
        .map_err(|e| FieldError::new(field, e.to_string()))?;
    Ok(policy)
}

fn lb_policy(c: &pb::Cluster) -> Result<LbPolicy, FieldError> {
    if let Some(lbp) = &c.load_balancing_policy {
        // gRFC A52: the first policy this client supports wins; none supported is an error.
        for (i, p) in lbp.policies.iter().enumerate() {
            let at =
                format!("load_balancing_policy.policies[{i}].typed_extension_config.typed_config");
            if let Some(any) = p
                .typed_extension_config
                .as_ref()
                .and_then(|t| t.typed_config.as_ref())
            {
                if let Some(policy) = lb_extension(any, &at, 0)? {
                    return Ok(policy);
                }
            }
        }
        return Err(FieldError::new(
            "load_balancing_policy.policies",
            "no supported policy",
        ));
    }
    match PbLbPolicy::try_from(c.lb_policy) {
        Ok(PbLbPolicy::RoundRobin) => Ok(LbPolicy::RoundRobin),
        Ok(PbLbPolicy::Random) => Ok(LbPolicy::Random),
        Ok(PbLbPolicy::LeastRequest) => match &c.lb_config {
            Some(LbConfig::LeastRequestLbConfig(l)) => least_request(
                l.choice_count.as_ref(),
                "least_request_lb_config.choice_count",
            ),
            _ => Ok(LbPolicy::least_request()),
        },
        Ok(PbLbPolicy::RingHash) => match &c.lb_config {
            Some(LbConfig::RingHashLbConfig(r)) => {
                // gRFC A42: only the xxHash function is supported.
                if r.hash_function != 0 {
                    return Err(FieldError::new(
                        "ring_hash_lb_config.hash_function",
                        "only XX_HASH is supported",
                    ));
                }
                ring_hash(
                    u64_of(r.minimum_ring_size.as_ref(), 1024),
                    u64_of(r.maximum_ring_size.as_ref(), 8 * 1024 * 1024),
                    "ring_hash_lb_config",
                )
            }
            _ => Ok(LbPolicy::ring_hash()),
        },
        Ok(other) => Err(FieldError::new(
            "lb_policy",
            format!("{} is not supported", other.as_str_name()),
        )),
        Err(_) => Err(FieldError::new(
            "lb_policy",
            format!("unknown value {}", c.lb_policy),
        )),
    }
}

fn decode<M: Message + Default>(any: &Any, field: &str) -> Result<M, FieldError> {
    M::decode(any.value.as_slice())
        .map_err(|e| FieldError::new(field, format!("cannot decode: {e}")))
}

/// One `load_balancing_policy` entry; `None` when the type is not supported (the next one
/// is tried). `wrr_locality` is looked through to its endpoint-picking policy.
fn lb_extension(any: &Any, at: &str, depth: u32) -> Result<Option<LbPolicy>, FieldError> {
    let url = any.type_url.as_str();
    if url == lbp::round_robin::v3::RoundRobin::type_url() {
        Ok(Some(LbPolicy::RoundRobin))
    } else if url == lbp::random::v3::Random::type_url() {
        Ok(Some(LbPolicy::Random))
    } else if url == lbp::least_request::v3::LeastRequest::type_url() {
        let l: lbp::least_request::v3::LeastRequest = decode(any, at)?;
        least_request(l.choice_count.as_ref(), &format!("{at}.choice_count")).map(Some)
    } else if url == lbp::ring_hash::v3::RingHash::type_url() {
        let r: lbp::ring_hash::v3::RingHash = decode(any, at)?;
        if r.hash_function != 0 {
            return Err(FieldError::new(
                format!("{at}.hash_function"),
                "only XX_HASH is supported",
            ));
        }
        ring_hash(
            u64_of(r.minimum_ring_size.as_ref(), 1024),
            u64_of(r.maximum_ring_size.as_ref(), 8 * 1024 * 1024),
            at,
        )
        .map(Some)
    } else if url == lbp::wrr_locality::v3::WrrLocality::type_url() && depth < 8 {
        let w: lbp::wrr_locality::v3::WrrLocality = decode(any, at)?;
        let child = format!("{at}.endpoint_picking_policy");
        for (i, p) in w
            .endpoint_picking_policy
            .iter()
            .flat_map(|p| &p.policies)
            .enumerate()
        {
            if let Some(inner) = p
                .typed_extension_config
                .as_ref()
                .and_then(|t| t.typed_config.as_ref())
            {
                let at = format!("{child}.policies[{i}].typed_extension_config.typed_config");
                if let Some(policy) = lb_extension(inner, &at, depth + 1)? {
                    return Ok(Some(policy));
                }
            }
        }
        Err(FieldError::new(child, "no supported policy"))
    } else {
        Ok(None)
    }
}

fn circuit_breakers(
    cb: &pb::CircuitBreakers,
) -> Result<(Thresholds, Option<RetryBudgetConfig>), FieldError> {
    // Only the DEFAULT priority exists for a client without request priorities.
    let Some((i, t)) = cb
        .thresholds
        .iter()
        .enumerate()
        .find(|(_, t)| t.priority == RoutingPriority::Default as i32)
    else {
        return Ok((Thresholds::default(), None));
    };
    let d = Thresholds::default();
    let value = |v: &Option<UInt32Value>, default: u32| v.as_ref().map_or(default, |v| v.value);
    let thresholds = Thresholds::new(
        value(&t.max_connections, d.max_connections),
        value(&t.max_pending_requests, d.max_pending_requests),
        value(&t.max_requests, d.max_requests),
        value(&t.max_retries, d.max_retries),
    );
    let budget = match &t.retry_budget {
        None => None,
        Some(b) => {
            let defaults = RetryBudgetConfig::default();
            let percent = b
                .budget_percent
                .as_ref()
                .map_or(defaults.budget_percent, |p| p.value);
            if !(0.0..=100.0).contains(&percent) {
                return Err(FieldError::new(
                    format!("thresholds[{i}].retry_budget.budget_percent"),
                    format!("{percent} is not in [0, 100]"),
                ));
            }
            Some(RetryBudgetConfig::new(
                percent,
                b.min_retry_concurrency
                    .as_ref()
                    .map_or(defaults.min_retry_concurrency, |m| m.value),
            ))
        }
    };
    Ok((thresholds, budget))
}

fn outlier_detection(od: &pb::OutlierDetection) -> Result<OutlierConfig, FieldError> {
    let d = OutlierConfig::default();
    let num = |v: &Option<UInt32Value>, default: u32| v.as_ref().map_or(default, |v| v.value);
    // gRFC A50: every percentage above 100 rejects the cluster.
    let pct = |v: &Option<UInt32Value>, default: u32, field: &str| -> Result<u32, FieldError> {
        let value = num(v, default);
        if value > 100 {
            return Err(FieldError::new(field, format!("{value} is above 100")));
        }
        Ok(value)
    };
    let dur =
        |v: &Option<envoy_types::pb::google::protobuf::Duration>,
         default: Duration,
         field: &str| { v.as_ref().map_or(Ok(default), |v| duration(v, field)) };
    let base = dur(
        &od.base_ejection_time,
        d.base_ejection_time,
        "base_ejection_time",
    )?;
    let max = dur(
        &od.max_ejection_time,
        d.max_ejection_time.max(base),
        "max_ejection_time",
    )?;
    let interval = dur(&od.interval, d.interval, "interval")?;
    if interval.is_zero() {
        return Err(FieldError::new("interval", "must be above zero"));
    }
    Ok(OutlierConfig::new()
        .with_interval(interval)
        .with_ejection_time(base, max)
        .with_max_ejection_percent(pct(
            &od.max_ejection_percent,
            d.max_ejection_percent,
            "max_ejection_percent",
        )?)
        .with_consecutive_5xx(
            num(&od.consecutive_5xx, d.consecutive_5xx),
            pct(
                &od.enforcing_consecutive_5xx,
                d.enforcing_consecutive_5xx,
                "enforcing_consecutive_5xx",
            )?,
        )
        .with_consecutive_gateway_failure(
            num(
                &od.consecutive_gateway_failure,
                d.consecutive_gateway_failure,
            ),
            pct(
                &od.enforcing_consecutive_gateway_failure,
                d.enforcing_consecutive_gateway_failure,
                "enforcing_consecutive_gateway_failure",
            )?,
        )
        .with_success_rate(
            num(&od.success_rate_minimum_hosts, d.success_rate_minimum_hosts),
            num(
                &od.success_rate_request_volume,
                d.success_rate_request_volume,
            ),
            num(&od.success_rate_stdev_factor, d.success_rate_stdev_factor),
            pct(
                &od.enforcing_success_rate,
                d.enforcing_success_rate,
                "enforcing_success_rate",
            )?,
        )
        .with_failure_percentage(
            pct(
                &od.failure_percentage_threshold,
                d.failure_percentage_threshold,
                "failure_percentage_threshold",
            )?,
            num(
                &od.failure_percentage_minimum_hosts,
                d.failure_percentage_minimum_hosts,
            ),
            num(
                &od.failure_percentage_request_volume,
                d.failure_percentage_request_volume,
            ),
            pct(
                &od.enforcing_failure_percentage,
                d.enforcing_failure_percentage,
                "enforcing_failure_percentage",
            )?,
        ))
}

/// The HTTP version, `max_requests_per_connection` and cluster-level hash policies, from
/// `typed_extension_protocol_options` or the deprecated cluster fields.
#[allow(deprecated)] // older control planes still send the cluster-level fields
fn protocol(c: &pb::Cluster, out: &mut Cluster) -> Result<(), FieldError> {
    if c.http2_protocol_options.is_some() {
        out.protocol = UpstreamProtocol::Http2;
    }
    out.max_requests_per_connection = c.max_requests_per_connection.as_ref().map(|m| m.value);
    let Some(any) = c.typed_extension_protocol_options.get(HTTP_OPTIONS_KEY) else {
        return Ok(());
    };
    let at = format!("typed_extension_protocol_options[{HTTP_OPTIONS_KEY}]");
    if any.type_url != HttpProtocolOptions::type_url() {
        return Err(FieldError::new(
            at,
            format!("type {} is not HttpProtocolOptions", any.type_url),
        ));
    }
    let opts: HttpProtocolOptions = decode(any, &at)?;
    out.protocol = match &opts.upstream_protocol_options {
        Some(UpstreamProtocolOptions::ExplicitHttpConfig(e)) => match &e.protocol_config {
            Some(ProtocolConfig::Http2ProtocolOptions(_)) => UpstreamProtocol::Http2,
            Some(ProtocolConfig::HttpProtocolOptions(_)) => UpstreamProtocol::Http1,
            Some(ProtocolConfig::Http3ProtocolOptions(_)) => {
                return Err(FieldError::new(
                    format!("{at}.explicit_http_config.http3_protocol_options"),
                    "HTTP/3 is not supported",
                ))
            }
            None => out.protocol,
        },
        Some(UpstreamProtocolOptions::UseDownstreamProtocolConfig(_)) => UpstreamProtocol::Auto,
        Some(UpstreamProtocolOptions::AutoConfig(_)) => UpstreamProtocol::Auto,
        None => out.protocol,
    };
    if let Some(m) = opts
        .common_http_protocol_options
        .as_ref()
        .and_then(|o| o.max_requests_per_connection.as_ref())
    {
        out.max_requests_per_connection = Some(m.value);
    }
    out.hash_policies = hash_policies(&opts.hash_policy);
    Ok(())
}
