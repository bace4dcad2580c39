//! Writes the seed corpora (`fuzz/seeds/<target>/`) from the project's test data:
//!
//! - every Listener, RouteConfiguration, Cluster and ClusterLoadAssignment inside Istio's
//!   config dumps (`shared/testdata/istio/*.json`, canonical proto3 JSON in
//!   `google.protobuf.Any`), as binary protos; plus the resources our control plane serves
//!   for the repo's YAML (`examples/control-plane/config`, `examples/policy`,
//!   `mesh-core/tests/data`), which form complete LDS -> RDS -> CDS -> EDS cascades;
//! - ADS scripts (`src/ads.rs`'s format) replaying those as state-of-the-world and delta;
//! - the bootstraps, the YAML files, SPIFFE IDs, trace headers, and certificates issued by
//!   a test CA.
//!
//! `cargo run --release --manifest-path fuzz/Cargo.toml --features seeds --bin make-seeds`
//! (stable is fine). Options: `--testdata DIR` (default `../shared/testdata/istio` next to
//! the repo, else `/work/shared/testdata/istio`), `--out DIR` (default `fuzz/seeds`).
//!
//! The Envoy protos are compiled in pure Rust (protox) from the copy envoy-types ships in
//! the cargo registry; `Any`s of types no public proto defines (Istio's private
//! extensions) are kept with their type URL and no bytes, as a control plane would send
//! them to a client that does not know them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryResponse, DiscoveryResponse, Resource,
};
use envoy_types::pb::google::protobuf::Any;
use mesh_fuzz::ads::{
    AUTO_TARGET, OP_ADD_TARGET, OP_ADVANCE_TIME, OP_CLOSE_STREAM, OP_DELTA_RESPONSE,
    OP_IGNORE_DELETION, OP_REMOVE_TARGET, OP_RESTART_STREAM, OP_SOTW_RESPONSE,
};
use mesh_tower::identity::testing::{SvidSpec, TestCa};
use mesh_xds_client::resource::XdsType;
use prost::Message;
use prost_reflect::{DescriptorPool, DeserializeOptions, DynamicMessage, ReflectMessage, Value};
use serde_json::{json, Value as Json};

type Error = Box<dyn std::error::Error>;

const TYPE_PREFIX: &str = "type.googleapis.com/";
const UNKNOWN_MARK: &str = "__unknown_any__:";

fn main() -> Result<(), Error> {
    let fuzz_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let repo = fuzz_dir.join("..");
    let mut args = std::env::args().skip(1);
    let mut testdata = None;
    let mut out = fuzz_dir.join("seeds");
    while let Some(a) = args.next() {
        match a.as_str() {
            "--testdata" => testdata = args.next().map(PathBuf::from),
            "--out" => out = args.next().map(PathBuf::from).ok_or("--out DIR")?,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let testdata = testdata.unwrap_or_else(|| {
        let beside = repo.join("../shared/testdata/istio");
        if beside.is_dir() {
            beside
        } else {
            PathBuf::from("/work/shared/testdata/istio")
        }
    });
    let mut seeds = Seeds::new(out)?;

    // Istio's config dumps and bootstraps.
    let pool = pool()?;
    let mut dumps: Vec<PathBuf> = std::fs::read_dir(&testdata)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    dumps.sort();
    for path in &dumps {
        let stem = stem(path);
        let text = std::fs::read_to_string(path)?;
        let json: Json = serde_json::from_str(&text)?;
        if json.get("configs").is_none() {
            seeds.put("bootstrap_json", &stem, text.as_bytes())?;
            continue;
        }
        let mut found = Vec::new();
        resources_in(&json, &mut found);
        let mut by_type: BTreeMap<XdsType, Vec<Any>> = BTreeMap::new();
        for (i, (t, object)) in found.into_iter().enumerate() {
            let any = to_any(&pool, t, object)?;
            seeds.put(target_of(t), &format!("{stem}-{i:03}"), &any.value)?;
            by_type.entry(t).or_default().push(any);
        }
        seeds.ads_scripts(&stem, &by_type)?;
    }

    // What our control plane serves for the repo's YAML: complete cascades.
    let yaml = [
        repo.join("examples/control-plane/config/payment-service.yaml"),
        repo.join("examples/control-plane/config/endpoints.yaml"),
        repo.join("examples/policy/local.yaml"),
        repo.join("mesh-core/tests/data/seed-guide-policy.yaml"),
        repo.join("examples/kubernetes/istio.yaml"),
        repo.join("examples/kubernetes/workloads.yaml"),
    ];
    for path in &yaml {
        let text = std::fs::read_to_string(path)?;
        seeds.put("istio_yaml", &stem(path), text.as_bytes())?;
        if mesh_core::policy_file::PolicyFile::parse(&text, "seed").is_ok() {
            seeds.put("policy_file", &stem(path), text.as_bytes())?;
        }
    }
    let config_dir = repo.join("examples/control-plane/config");
    let cases = [
        ("control-plane-config", vec![config_dir]),
        (
            "local-policy",
            vec![repo.join("examples/policy/local.yaml")],
        ),
        (
            "seed-guide-policy",
            vec![repo.join("mesh-core/tests/data/seed-guide-policy.yaml")],
        ),
    ];
    for (name, paths) in cases {
        let input = control_plane::input::load(&paths).map_err(|e| format!("{name}: {e}"))?;
        let resources = input.to_resources().map_err(|e| format!("{name}: {e}"))?;
        let mut by_type: BTreeMap<XdsType, Vec<Any>> = BTreeMap::new();
        for (t, named) in resources.by_type {
            for (i, any) in named.into_values().enumerate() {
                seeds.put(target_of(t), &format!("{name}-{i:03}"), &any.value)?;
                by_type.entry(t).or_default().push(any);
            }
        }
        seeds.ads_scripts(name, &by_type)?;
    }

    seeds.bootstraps()?;
    seeds.spiffe_ids()?;
    seeds.trace_headers()?;
    seeds.certificates()?;
    eprintln!("{} seeds, {} bytes", seeds.count, seeds.bytes);
    Ok(())
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn target_of(t: XdsType) -> &'static str {
    match t {
        XdsType::Listener => "xds_listener",
        XdsType::RouteConfiguration => "xds_route_configuration",
        XdsType::Cluster => "xds_cluster",
        XdsType::ClusterLoadAssignment => "xds_cluster_load_assignment",
    }
}

struct Seeds {
    out: PathBuf,
    count: usize,
    bytes: usize,
}

/// One ADS script record.
fn record(script: &mut Vec<u8>, op: u8, payload: &[u8]) -> Result<(), Error> {
    script.push(op);
    script.extend_from_slice(&u16::try_from(payload.len())?.to_le_bytes());
    script.extend_from_slice(payload);
    Ok(())
}

impl Seeds {
    fn new(out: PathBuf) -> Result<Self, Error> {
        std::fs::create_dir_all(&out)?;
        Ok(Self {
            out,
            count: 0,
            bytes: 0,
        })
    }

    fn put(&mut self, target: &str, name: &str, data: &[u8]) -> Result<(), Error> {
        let dir = self.out.join(target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(name), data)?;
        self.count += 1;
        self.bytes += data.len();
        Ok(())
    }

    /// State of the world, then the same over delta on a new stream, with a change, a
    /// removal and time passing; one script per flavour and one with both.
    fn ads_scripts(
        &mut self,
        name: &str,
        by_type: &BTreeMap<XdsType, Vec<Any>>,
    ) -> Result<(), Error> {
        let mut sotw = Vec::new();
        let mut delta = vec![];
        record(&mut delta, OP_RESTART_STREAM, &[1])?;
        for (n, t) in XdsType::ALL.into_iter().enumerate() {
            let resources = by_type.get(&t).cloned().unwrap_or_default();
            let flag = if t == XdsType::Listener {
                AUTO_TARGET
            } else {
                0
            };
            let response = DiscoveryResponse {
                version_info: "1".into(),
                type_url: t.type_url().into(),
                nonce: format!("n{n}"),
                resources: resources.clone(),
                ..Default::default()
            };
            record(
                &mut sotw,
                OP_SOTW_RESPONSE | flag,
                &response.encode_to_vec(),
            )?;
            let names = resource_names(t, &resources);
            let response = DeltaDiscoveryResponse {
                type_url: t.type_url().into(),
                nonce: format!("d{n}"),
                resources: resources
                    .into_iter()
                    .zip(names)
                    .map(|(any, name)| Resource {
                        name,
                        version: "1".into(),
                        resource: Some(any),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            };
            record(
                &mut delta,
                OP_DELTA_RESPONSE | flag,
                &response.encode_to_vec(),
            )?;
        }
        record(&mut sotw, OP_ADVANCE_TIME, &20u16.to_le_bytes())?;
        record(&mut sotw, OP_ADD_TARGET, b"missing-service:80")?;
        record(&mut sotw, OP_ADVANCE_TIME, &20u16.to_le_bytes())?;
        record(&mut sotw, OP_IGNORE_DELETION, &[1])?;
        let empty_lds = DiscoveryResponse {
            version_info: "2".into(),
            type_url: XdsType::Listener.type_url().into(),
            nonce: "n9".into(),
            ..Default::default()
        };
        record(&mut sotw, OP_SOTW_RESPONSE, &empty_lds.encode_to_vec())?;
        record(&mut sotw, OP_IGNORE_DELETION, &[0])?;
        record(&mut sotw, OP_SOTW_RESPONSE, &empty_lds.encode_to_vec())?;
        record(&mut sotw, OP_REMOVE_TARGET, b"missing-service:80")?;
        record(&mut sotw, OP_CLOSE_STREAM, &[])?;
        let removal = DeltaDiscoveryResponse {
            type_url: XdsType::Cluster.type_url().into(),
            nonce: "d9".into(),
            removed_resources: by_type
                .get(&XdsType::Cluster)
                .map(|c| resource_names(XdsType::Cluster, c))
                .unwrap_or_default(),
            ..Default::default()
        };
        record(&mut delta, OP_DELTA_RESPONSE, &removal.encode_to_vec())?;
        record(&mut delta, OP_ADVANCE_TIME, &30u16.to_le_bytes())?;
        let mut both = sotw.clone();
        both.extend_from_slice(&delta);
        self.put("ads_core", &format!("{name}-sotw"), &sotw)?;
        self.put("ads_core", &format!("{name}-delta"), &delta)?;
        self.put("ads_core", &format!("{name}-sotw-then-delta"), &both)
    }

    fn bootstraps(&mut self) -> Result<(), Error> {
        let files = [
            (
                "tls-and-authorities",
                json!({
                    "xds_servers": [
                        {"server_uri": "istiod.istio-system.svc:15012",
                         "channel_creds": [{"type": "tls", "config": {"ca_certificate_file": "/etc/ca.pem"}},
                                           {"type": "insecure"}],
                         "server_features": ["xds_v3", "ignore_resource_deletion"]},
                        {"server_uri": "dns:///backup:15010", "channel_creds": [{"type": "google_default"}]}
                    ],
                    "node": {"id": "n", "cluster": "c", "locality": {"region": "r", "zone": "z", "sub_zone": "s"},
                             "metadata": {"GENERATOR": "grpc", "LIST": [1, 2.5, true, null, {"a": "b"}]}},
                    "certificate_providers": {"default": {"plugin_name": "file_watcher",
                        "config": {"certificate_file": "c", "private_key_file": "k", "ca_certificate_file": "r",
                                   "refresh_interval": "1.5s"}}},
                    "authorities": {"xds.example.com": {
                        "client_listener_resource_name_template": "xdstp://xds.example.com/envoy.config.listener.v3.Listener/%s",
                        "xds_servers": [{"server_uri": "unix:///var/run/xds.sock", "channel_creds": [{"type": "insecure"}]}]}},
                    "client_default_listener_resource_name_template": "xds.istio.io/grpc/lds/outbound/%s",
                    "server_listener_resource_name_template": "xds.istio.io/grpc/lds/inbound/%s"
                }),
            ),
            (
                "minimal",
                json!({"xds_servers": [{"server_uri": "localhost:15010", "channel_creds": [{"type": "insecure"}]}]}),
            ),
        ];
        for (name, value) in files {
            self.put(
                "bootstrap_json",
                name,
                serde_json::to_string_pretty(&value)?.as_bytes(),
            )?;
        }
        Ok(())
    }

    fn spiffe_ids(&mut self) -> Result<(), Error> {
        let ids = [
            "spiffe://cluster.local/ns/default/sa/order-service",
            "spiffe://cluster.local/ns/istio-system/sa/istiod-service-account",
            "spiffe://example.org",
            "spiffe://example.org/workload-1/a.b-c_d",
            "spiffe://td/ns//sa/x",
            "spiffe://TD.example/x",
            "spiffe://example.org:8080/x",
            "spiffe://user@example.org/x",
            "spiffe://example.org/x/../y",
            "spiffe://example.org/%41",
            "spiffe://example.org/x/",
            "SPIFFE://example.org/x",
            "cluster.local",
        ];
        for (i, id) in ids.iter().enumerate() {
            self.put("spiffe_id", &format!("{i:02}"), id.as_bytes())?;
        }
        Ok(())
    }

    fn trace_headers(&mut self) -> Result<(), Error> {
        // The W3C Trace Context specification's examples, and what Envoy and Zipkin send.
        let w3c = [
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7",
            "rojo=00f067aa0ba902b7, congo=t61rcWkgMzE,,tenant@vendor=opaque value",
            "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\n\
             tracestate: congo=t61rcWkgMzE\ntracestate: rojo=00f067aa0ba902b7\n\
             x-request-id: 4f1c0d2a-7f1e-4c1b-9a2e-3d5b6c7d8e9f",
        ];
        let b3 = [
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90",
            "a3ce929d0e0e4736-00f067aa0ba902b7-d",
            "a3ce929d0e0e4736-00f067aa0ba902b7",
            "0",
            "d",
            "x-b3-traceid: 80f198ee56343ba864fe8b2a57d3eff7\nx-b3-spanid: e457b5a2e4d86bd1\n\
             x-b3-parentspanid: 05e3ac9a4f6e3b90\nx-b3-sampled: 1",
            "x-b3-traceid: a3ce929d0e0e4736\nx-b3-spanid: 00f067aa0ba902b7\nx-b3-flags: 1",
            "b3: 80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-0\nx-b3-sampled: true",
        ];
        for (i, h) in w3c.iter().enumerate() {
            self.put("trace_w3c", &format!("{i:02}"), h.as_bytes())?;
        }
        for (i, h) in b3.iter().enumerate() {
            self.put("trace_b3", &format!("{i:02}"), h.as_bytes())?;
        }
        Ok(())
    }

    fn certificates(&mut self) -> Result<(), Error> {
        let ca = TestCa::new()?;
        let specs = [
            (
                "svid",
                SvidSpec::istio("cluster.local", "default", "payment-service"),
            ),
            (
                "expired",
                SvidSpec::istio("cluster.local", "default", "a").expired(),
            ),
            (
                "no-digital-signature",
                SvidSpec::istio("cluster.local", "ns", "b").without_digital_signature(),
            ),
            (
                "dns-san",
                SvidSpec::new("spiffe://example.org/w").with_dns_name("w.example.org"),
            ),
            ("not-spiffe", SvidSpec::new("https://example.org/w")),
        ];
        for (name, spec) in specs {
            let issued = ca.issue(&spec)?;
            self.put("cert_der", name, issued.der.as_ref())?;
            let mut pem = issued.chain_pem.clone().into_bytes();
            pem.push(0);
            pem.extend_from_slice(issued.key_pem.as_bytes());
            self.put("cert_pem", name, &pem)?;
        }
        self.put("cert_der", "root", ca.root_der().as_ref())?;
        self.put("cert_pem", "root", ca.root_pem().as_bytes())?;
        Ok(())
    }
}

/// The names of `resources` of type `t`, as the delta wrapper carries them.
fn resource_names(t: XdsType, resources: &[Any]) -> Vec<String> {
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
    use envoy_types::pb::envoy::config::listener::v3::Listener;
    use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
    resources
        .iter()
        .map(|any| {
            let v = any.value.as_slice();
            match t {
                XdsType::Listener => Listener::decode(v).map(|m| m.name),
                XdsType::RouteConfiguration => RouteConfiguration::decode(v).map(|m| m.name),
                XdsType::Cluster => Cluster::decode(v).map(|m| m.name),
                XdsType::ClusterLoadAssignment => {
                    ClusterLoadAssignment::decode(v).map(|m| m.cluster_name)
                }
            }
            .unwrap_or_default()
        })
        .collect()
}

/// The `proto/` directory of envoy-types in the cargo registry.
fn envoy_protos() -> Result<PathBuf, Error> {
    if let Ok(dir) = std::env::var("ENVOY_TYPES_PROTO_DIR") {
        return Ok(dir.into());
    }
    let home = match std::env::var("CARGO_HOME") {
        Ok(h) => PathBuf::from(h),
        Err(_) => PathBuf::from(std::env::var("HOME")?).join(".cargo"),
    };
    let mut found = Vec::new();
    for index in std::fs::read_dir(home.join("registry/src"))?.flatten() {
        for krate in std::fs::read_dir(index.path())?.flatten() {
            let name = krate.file_name().to_string_lossy().into_owned();
            let proto = krate.path().join("proto");
            if name.starts_with("envoy-types-0.7.") && proto.is_dir() {
                found.push(proto);
            }
        }
    }
    found.sort();
    found
        .pop()
        .ok_or_else(|| "envoy-types' protos not found (set ENVOY_TYPES_PROTO_DIR)".into())
}

fn protos_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.is_dir() {
            protos_under(&p, out);
        } else if p.extension().is_some_and(|e| e == "proto") {
            out.push(p);
        }
    }
}

fn pool() -> Result<DescriptorPool, Error> {
    let root = envoy_protos()?;
    let api = root.join("data-plane-api");
    let includes = [
        "data-plane-api",
        "googleapis",
        "xds",
        "protoc-gen-validate",
        "cel-spec/proto",
        "opentelemetry-proto",
        "client_model",
    ]
    .map(|d| root.join(d));
    let mut compiler = protox::Compiler::new(includes)?;
    compiler.include_imports(true);
    let mut files = Vec::new();
    for dir in ["envoy/config", "envoy/extensions"] {
        protos_under(&api.join(dir), &mut files);
    }
    for f in &files {
        if let Ok(rel) = f.strip_prefix(&api) {
            // A few protos need imports envoy-types does not ship: skip those.
            let _ = compiler.open_file(rel);
        }
    }
    Ok(compiler.descriptor_pool())
}

/// Every resource object of the four types anywhere in a dump, in document order.
fn resources_in(v: &Json, out: &mut Vec<(XdsType, Json)>) {
    match v {
        Json::Object(map) => {
            if let Some(Json::String(url)) = map.get("@type") {
                if let Some(t) = XdsType::from_type_url(url) {
                    out.push((t, v.clone()));
                    return;
                }
            }
            map.values().for_each(|c| resources_in(c, out));
        }
        Json::Array(items) => items.iter().for_each(|c| resources_in(c, out)),
        _ => {}
    }
}

/// A resource's JSON as an `Any` of binary proto.
fn to_any(pool: &DescriptorPool, t: XdsType, mut json: Json) -> Result<Any, Error> {
    mark_unknown(&mut json, pool);
    if let Json::Object(map) = &mut json {
        map.remove("@type");
    }
    let type_name = t.type_url().trim_start_matches(TYPE_PREFIX);
    let desc = pool
        .get_message_by_name(type_name)
        .ok_or_else(|| format!("{type_name} not in the descriptor pool"))?;
    let options = DeserializeOptions::new().deny_unknown_fields(false);
    let mut message = DynamicMessage::deserialize_with_options(desc, json, &options)?;
    restore_unknown(&mut message);
    Ok(Any {
        type_url: t.type_url().into(),
        value: message.encode_to_vec(),
    })
}

/// Replaces each `Any` of a type the pool lacks by a `StringValue` carrying its type URL.
fn mark_unknown(v: &mut Json, pool: &DescriptorPool) {
    match v {
        Json::Object(map) => {
            if let Some(Json::String(url)) = map.get("@type") {
                let known = url
                    .strip_prefix(TYPE_PREFIX)
                    .is_some_and(|name| pool.get_message_by_name(name).is_some());
                if !known {
                    *v = json!({
                        "@type": format!("{TYPE_PREFIX}google.protobuf.StringValue"),
                        "value": format!("{UNKNOWN_MARK}{url}"),
                    });
                    return;
                }
            }
            map.values_mut().for_each(|c| mark_unknown(c, pool));
        }
        Json::Array(items) => items.iter_mut().for_each(|c| mark_unknown(c, pool)),
        _ => {}
    }
}

/// Turns the marked `Any`s back into their type URL with no bytes.
fn restore_unknown(m: &mut DynamicMessage) {
    if m.descriptor().full_name() == "google.protobuf.Any" {
        let marked = m
            .get_field_by_name("value")
            .and_then(|v| v.as_bytes().cloned())
            .and_then(|bytes| <String as Message>::decode(bytes.as_ref()).ok())
            .and_then(|s| s.strip_prefix(UNKNOWN_MARK).map(str::to_owned));
        if let Some(url) = marked {
            m.set_field_by_name("type_url", Value::String(url));
            m.set_field_by_name("value", Value::Bytes(Default::default()));
            return;
        }
    }
    for (_, value) in m.fields_mut() {
        restore_in(value);
    }
}

fn restore_in(v: &mut Value) {
    match v {
        Value::Message(m) => restore_unknown(m),
        Value::List(items) => items.iter_mut().for_each(restore_in),
        Value::Map(map) => map.values_mut().for_each(restore_in),
        _ => {}
    }
}
