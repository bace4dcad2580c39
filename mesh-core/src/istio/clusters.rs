//! DestinationRule traffic policy and subsets -> clusters and their endpoints.

use crate::breaker::Thresholds;
use crate::cluster::{
    CertificateInstance, Cluster, ClusterLoadAssignment, Endpoint, HealthStatus, Locality,
    LocalityEndpoints, UpstreamProtocol, UpstreamTls,
};
use crate::lb::LbPolicy;
use crate::matcher::StringMatcher;
use crate::outlier::OutlierConfig;
use crate::route::{HashPolicy, HashPolicyKind};

use super::networking::{self as net, TrafficPolicy};
use super::routes::duration;
use super::services::{EndpointHealth, Service, ServicePort};
use super::{cluster_name, Index, IstioError, IstioErrorKind as Kind, Path};

/// The policy fields that apply to one cluster, after merging service, port and subset
/// levels (each level replaces whole settings, as Istio does).
#[derive(Default)]
struct Effective<'a> {
    lb: Option<(&'a net::LoadBalancerSettings, Path)>,
    pool: Option<(&'a net::ConnectionPoolSettings, Path)>,
    outlier: Option<(&'a net::OutlierDetection, Path)>,
    tls: Option<(&'a net::ClientTlsSettings, Path)>,
}

impl<'a> Effective<'a> {
    fn overlay(&mut self, tp: &'a TrafficPolicy, path: &Path, port: u16) {
        if let Some(v) = &tp.load_balancer {
            self.lb = Some((v, path.field("loadBalancer")));
        }
        if let Some(v) = &tp.connection_pool {
            self.pool = Some((v, path.field("connectionPool")));
        }
        if let Some(v) = &tp.outlier_detection {
            self.outlier = Some((v, path.field("outlierDetection")));
        }
        if let Some(v) = &tp.tls {
            self.tls = Some((v, path.field("tls")));
        }
        for (i, pl) in tp.port_level_settings.iter().enumerate() {
            if pl.port.is_some_and(|p| p.number == u32::from(port)) {
                let path = path.field("portLevelSettings").index(i);
                if let Some(v) = &pl.load_balancer {
                    self.lb = Some((v, path.field("loadBalancer")));
                }
                if let Some(v) = &pl.connection_pool {
                    self.pool = Some((v, path.field("connectionPool")));
                }
                if let Some(v) = &pl.outlier_detection {
                    self.outlier = Some((v, path.field("outlierDetection")));
                }
                if let Some(v) = &pl.tls {
                    self.tls = Some((v, path.field("tls")));
                }
            }
        }
    }
}

pub(super) fn clusters_for_port(
    index: &Index<'_>,
    service: &Service,
    port: &ServicePort,
    fqdn: &str,
) -> Result<(Vec<Cluster>, Vec<ClusterLoadAssignment>), Vec<IstioError>> {
    let mut errors = Vec::new();
    let mut clusters = Vec::new();
    let mut endpoints = Vec::new();
    let dr = index.rules.get(fqdn).map(|&i| {
        (
            &index.inputs.destination_rules[i],
            Path::root("destinationRules").index(i).field("spec"),
        )
    });

    let mut base = Effective::default();
    if let Some((dr, path)) = &dr {
        if let Some(tp) = &dr.spec.traffic_policy {
            base.overlay(tp, &path.field("trafficPolicy"), port.port);
        }
    }
    let mut variants: Vec<(Option<&net::Subset>, Effective<'_>)> = Vec::new();
    if let Some((dr, path)) = &dr {
        for (i, subset) in dr.spec.subsets.iter().enumerate() {
            let mut eff = Effective { ..copy(&base) };
            if let Some(tp) = &subset.traffic_policy {
                eff.overlay(
                    tp,
                    &path.field("subsets").index(i).field("trafficPolicy"),
                    port.port,
                );
            }
            variants.push((Some(subset), eff));
        }
    }
    variants.insert(0, (None, base));

    for (subset, eff) in variants {
        let name = cluster_name(port.port, subset.map(|s| s.name.as_str()), fqdn);
        match build_cluster(index, service, port, fqdn, &name, subset, &eff) {
            Ok(c) => clusters.push(c),
            Err(e) => errors.push(e),
        }
        endpoints.push(assignment(service, port, &name, subset));
    }
    if errors.is_empty() {
        Ok((clusters, endpoints))
    } else {
        Err(errors)
    }
}

fn copy<'a>(e: &Effective<'a>) -> Effective<'a> {
    Effective {
        lb: e.lb.clone(),
        pool: e.pool.clone(),
        outlier: e.outlier.clone(),
        tls: e.tls.clone(),
    }
}

fn build_cluster(
    index: &Index<'_>,
    service: &Service,
    port: &ServicePort,
    fqdn: &str,
    name: &str,
    subset: Option<&net::Subset>,
    eff: &Effective<'_>,
) -> Result<Cluster, IstioError> {
    let mut cluster = Cluster::new(name);
    cluster.service = Some(fqdn.to_owned());
    cluster.subset = subset.map(|s| s.name.clone());
    cluster.protocol = if port.is_http2() {
        UpstreamProtocol::Http2
    } else {
        UpstreamProtocol::Auto
    };
    if let Some((lb, path)) = &eff.lb {
        cluster.lb = lb_policy(lb, path)?;
        if let Some(ch) = &lb.consistent_hash {
            if let Some(name) = &ch.http_header_name {
                cluster.hash_policies.push(HashPolicy {
                    kind: HashPolicyKind::Header {
                        name: name.to_ascii_lowercase(),
                    },
                    terminal: false,
                });
            }
            if ch.use_source_ip == Some(true) {
                cluster.hash_policies.push(HashPolicy {
                    kind: HashPolicyKind::SourceIp,
                    terminal: false,
                });
            }
        }
    }
    // istiod's defaults: every threshold at 2^32-1 unless the DestinationRule sets it
    // (Envoy's own defaults, 1024 and 3 retries, would cap a busy service).
    cluster.circuit_breakers = Thresholds::new(u32::MAX, u32::MAX, u32::MAX, u32::MAX);
    if let Some((pool, path)) = &eff.pool {
        let mut t = cluster.circuit_breakers.clone();
        if let Some(tcp) = &pool.tcp {
            if let Some(n) = tcp.max_connections {
                t = t.with_max_connections(n);
            }
            if let Some(ct) = &tcp.connect_timeout {
                cluster.connect_timeout = duration(ct, &path.field("tcp").field("connectTimeout"))?;
            }
        }
        if let Some(http) = &pool.http {
            if let Some(n) = http.http1_max_pending_requests {
                t = t.with_max_pending_requests(n);
            }
            if let Some(n) = http.http2_max_requests {
                t = t.with_max_requests(n);
            }
            if let Some(n) = http.max_retries {
                t = t.with_max_retries(n);
            }
            cluster.max_requests_per_connection =
                http.max_requests_per_connection.filter(|n| *n > 0);
            match http.h2_upgrade_policy.as_deref() {
                None | Some("DEFAULT") | Some("DO_NOT_UPGRADE") => {}
                Some("UPGRADE") => cluster.protocol = UpstreamProtocol::Http2,
                Some(other) => {
                    return Err(path.field("http").field("h2UpgradePolicy").err(
                        Kind::InvalidValue {
                            value: other.to_owned(),
                            expected: "DEFAULT, DO_NOT_UPGRADE or UPGRADE",
                        },
                    ))
                }
            }
        }
        cluster.circuit_breakers = t;
    }
    if let Some((od, path)) = &eff.outlier {
        cluster.outlier_detection = Some(outlier(od, path)?);
    }
    cluster.tls = upstream_tls(index, service, eff.tls.as_ref())?;
    Ok(cluster)
}

fn lb_policy(lb: &net::LoadBalancerSettings, path: &Path) -> Result<LbPolicy, IstioError> {
    if let Some(ch) = &lb.consistent_hash {
        let p = path.field("consistentHash");
        if ch.http_cookie.is_some() {
            return Err(p.field("httpCookie").err(Kind::Unsupported {
                feature: "cookie hashing",
            }));
        }
        if ch.http_query_parameter_name.is_some() {
            return Err(p.field("httpQueryParameterName").err(Kind::Unsupported {
                feature: "query parameter hashing",
            }));
        }
        if ch.maglev.is_some() {
            return Err(p
                .field("maglev")
                .err(Kind::Unsupported { feature: "maglev" }));
        }
        let min = ch
            .ring_hash
            .as_ref()
            .and_then(|r| r.minimum_ring_size)
            .or(ch.minimum_ring_size)
            .unwrap_or(1024);
        return Ok(LbPolicy::RingHash {
            min_ring_size: min,
            max_ring_size: min.max(8 * 1024 * 1024),
        });
    }
    Ok(match lb.simple.as_deref() {
        None | Some("UNSPECIFIED") | Some("ROUND_ROBIN") => LbPolicy::RoundRobin,
        Some("LEAST_REQUEST") | Some("LEAST_CONN") => LbPolicy::LeastRequest { choice_count: 2 },
        Some("RANDOM") => LbPolicy::Random,
        Some("PASSTHROUGH") => {
            return Err(path.field("simple").err(Kind::Unsupported {
                feature: "PASSTHROUGH load balancing",
            }))
        }
        Some(other) => {
            return Err(path.field("simple").err(Kind::InvalidValue {
                value: other.to_owned(),
                expected: "ROUND_ROBIN, LEAST_REQUEST, LEAST_CONN, RANDOM",
            }))
        }
    })
}

fn outlier(od: &net::OutlierDetection, path: &Path) -> Result<OutlierConfig, IstioError> {
    // Istio's translation: consecutive 5xx and gateway errors are enforced at 100%,
    // success-rate ejection is off.
    let mut c = OutlierConfig::new()
        .with_consecutive_5xx(od.consecutive_5xx_errors.unwrap_or(5), 100)
        .with_success_rate(5, 100, 1900, 0);
    if let Some(n) = od.consecutive_gateway_errors.or(od.consecutive_errors) {
        c = c.with_consecutive_gateway_failure(n, 100);
    }
    if od.consecutive_5xx_errors == Some(0) {
        c = c.with_consecutive_5xx(5, 0);
    }
    let interval = match &od.interval {
        Some(s) => duration(s, &path.field("interval"))?,
        None => std::time::Duration::from_secs(10),
    };
    let base = match &od.base_ejection_time {
        Some(s) => duration(s, &path.field("baseEjectionTime"))?,
        None => std::time::Duration::from_secs(30),
    };
    let max_percent = od.max_ejection_percent.unwrap_or(10);
    if max_percent > 100 {
        return Err(path.field("maxEjectionPercent").err(Kind::InvalidValue {
            value: max_percent.to_string(),
            expected: "a percentage between 0 and 100",
        }));
    }
    Ok(c.with_interval(interval)
        .with_ejection_time(base, base.max(std::time::Duration::from_secs(300)))
        .with_max_ejection_percent(max_percent))
}

fn upstream_tls(
    index: &Index<'_>,
    service: &Service,
    tls: Option<&(&net::ClientTlsSettings, Path)>,
) -> Result<Option<UpstreamTls>, IstioError> {
    let mode = match tls {
        Some((t, path)) => {
            if t.insecure_skip_verify == Some(true) {
                return Err(path.field("insecureSkipVerify").err(Kind::Unsupported {
                    feature: "skipping certificate verification",
                }));
            }
            match t.mode.as_deref() {
                None | Some("DISABLE") => return Ok(None),
                Some("ISTIO_MUTUAL") => "ISTIO_MUTUAL",
                Some(m @ ("SIMPLE" | "MUTUAL")) => {
                    return Err(path.field("mode").err(Kind::InvalidValue {
                        value: m.to_owned(),
                        expected: "ISTIO_MUTUAL or DISABLE (file-based upstream certificates are not supported yet)",
                    }))
                }
                Some(other) => {
                    return Err(path.field("mode").err(Kind::InvalidValue {
                        value: other.to_owned(),
                        expected: "DISABLE, SIMPLE, MUTUAL or ISTIO_MUTUAL",
                    }))
                }
            }
        }
        None if index.inputs.auto_mtls && !service.service_accounts.is_empty() => "ISTIO_MUTUAL",
        None => return Ok(None),
    };
    debug_assert_eq!(mode, "ISTIO_MUTUAL");
    let ns = service.namespace_or(index.inputs.default_namespace);
    let mut accepted: Vec<StringMatcher> = service
        .service_accounts
        .iter()
        .map(|sa| {
            StringMatcher::exact(format!(
                "spiffe://{}/ns/{ns}/sa/{sa}",
                index.inputs.trust_domain
            ))
        })
        .collect();
    if let Some((t, _)) = tls {
        accepted.extend(
            t.subject_alt_names
                .iter()
                .map(|s| StringMatcher::exact(s.clone())),
        );
    }
    Ok(Some(UpstreamTls {
        sni: tls.and_then(|(t, _)| t.sni.clone()),
        accepted_sans: accepted,
        identity: Some(CertificateInstance::new("default", "default")),
        roots: Some(CertificateInstance::new("default", "ROOTCA")),
    }))
}

fn assignment(
    service: &Service,
    port: &ServicePort,
    cluster: &str,
    subset: Option<&net::Subset>,
) -> ClusterLoadAssignment {
    let mut localities: Vec<LocalityEndpoints> = Vec::new();
    let first_port = service.ports.first().map(|p| p.port);
    for ep in &service.endpoints {
        if let Some(s) = subset {
            if !s.labels.iter().all(|(k, v)| ep.labels.get(k) == Some(v)) {
                continue;
            }
        }
        let target_port = match ep.ports.get(&port.port) {
            Some(p) => *p,
            None if Some(port.port) == first_port => ep.address.port(),
            // An endpoint that does not serve this port is not an endpoint of it.
            None => continue,
        };
        let mut addr = ep.address;
        addr.set_port(target_port);
        let mut e = Endpoint::new(addr);
        e.weight = ep.weight.unwrap_or(1).max(1);
        e.labels = ep.labels.clone();
        e.health = match ep.health {
            Some(EndpointHealth::Unhealthy) => HealthStatus::Unhealthy,
            Some(EndpointHealth::Draining) => HealthStatus::Draining,
            Some(EndpointHealth::Healthy) => HealthStatus::Healthy,
            None => HealthStatus::Unknown,
        };
        let locality = parse_locality(ep.locality.as_deref());
        match localities.iter_mut().find(|l| l.locality == locality) {
            Some(l) => l.endpoints.push(e),
            None => localities.push(LocalityEndpoints {
                locality,
                weight: 1,
                priority: 0,
                endpoints: vec![e],
            }),
        }
    }
    ClusterLoadAssignment::new(cluster, localities)
}

fn parse_locality(s: Option<&str>) -> Locality {
    let mut parts = s.unwrap_or("").splitn(3, '/');
    Locality {
        region: parts.next().unwrap_or("").to_owned(),
        zone: parts.next().unwrap_or("").to_owned(),
        sub_zone: parts.next().unwrap_or("").to_owned(),
    }
}
