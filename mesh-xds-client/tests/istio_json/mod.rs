//! Istio's config dumps (`../shared/testdata/istio/*.json`) as envoy-types messages.
//!
//! The dumps are proto3 JSON with resources as `google.protobuf.Any`. envoy-types has no
//! serde support, so this compiles the Envoy protos that envoy-types ships (in pure Rust,
//! with protox: no `protoc`), reads the JSON with prost-reflect, and transcodes to the
//! envoy-types messages. `Any`s whose type no public proto defines (Istio's private
//! extensions) are kept as an `Any` with their type URL and no bytes, which is what the
//! client would see from a control plane using them.
#![allow(dead_code)] // each test file uses part of it

use std::path::{Path, PathBuf};

use prost::Message;
use prost_reflect::{DescriptorPool, DeserializeOptions, DynamicMessage, ReflectMessage, Value};
use serde_json::{json, Value as Json};

/// The directory of Istio's real data.
pub fn testdata_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/testdata/istio");
    if dir.is_dir() {
        dir
    } else {
        PathBuf::from("/work/shared/testdata/istio")
    }
}

/// One dump file, parsed.
pub fn dump(file: &str) -> Json {
    let text = std::fs::read_to_string(testdata_dir().join(file)).unwrap();
    serde_json::from_str(&text).unwrap()
}

const TYPE_PREFIX: &str = "type.googleapis.com/";
const UNKNOWN: &str = "__unknown_type__:";

/// The `proto/` directory of the envoy-types crate in the cargo registry.
fn envoy_protos() -> PathBuf {
    if let Ok(dir) = std::env::var("ENVOY_TYPES_PROTO_DIR") {
        return dir.into();
    }
    let home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cargo"));
    let src = home.join("registry/src");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&src)
        .unwrap()
        .flatten()
        .flat_map(|index| {
            std::fs::read_dir(index.path())
                .into_iter()
                .flatten()
                .flatten()
        })
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("envoy-types-0.7."))
        })
        .map(|p| p.join("proto"))
        .filter(|p| p.is_dir())
        .collect();
    found.sort();
    found
        .pop()
        .expect("envoy-types' protos in the cargo registry (or set ENVOY_TYPES_PROTO_DIR)")
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

pub fn pool() -> DescriptorPool {
    let root = envoy_protos();
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
    let mut compiler = protox::Compiler::new(includes).unwrap();
    compiler.include_imports(true);
    let mut files = Vec::new();
    for dir in [
        "envoy/config/listener/v3",
        "envoy/config/route/v3",
        "envoy/config/cluster/v3",
        "envoy/config/endpoint/v3",
        "envoy/extensions/filters/http",
        "envoy/extensions/filters/network",
        "envoy/extensions/filters/listener",
        "envoy/extensions/transport_sockets",
        "envoy/extensions/upstreams/http/v3",
        "envoy/extensions/load_balancing_policies",
        "envoy/extensions/request_id",
        "envoy/extensions/matching/common_inputs",
    ] {
        protos_under(&api.join(dir), &mut files);
    }
    let mut compiled = 0;
    for f in &files {
        let rel = f.strip_prefix(&api).unwrap();
        if compiler.open_file(rel).is_ok() {
            compiled += 1;
        }
    }
    assert!(
        compiled > 100,
        "only {compiled} of {} protos compiled",
        files.len()
    );
    compiler.descriptor_pool()
}

/// Replaces every `Any` of a type the pool lacks with a marked `StringValue`, so the JSON
/// reader accepts it; [`restore_unknown`] puts the type URL back afterwards.
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
                        "value": format!("{UNKNOWN}{url}"),
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

fn restore_unknown(m: &mut DynamicMessage) {
    if m.descriptor().full_name() == "google.protobuf.Any" {
        let value = m
            .get_field_by_name("value")
            .and_then(|v| v.as_bytes().cloned());
        if let Some(bytes) = value {
            if let Ok(s) = <String as Message>::decode(bytes.as_ref()) {
                if let Some(url) = s.strip_prefix(UNKNOWN) {
                    m.set_field_by_name("type_url", Value::String(url.to_owned()));
                    m.set_field_by_name("value", Value::Bytes(Default::default()));
                    return;
                }
            }
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

/// Every resource object (by its `@type`) anywhere in a dump.
pub fn resources(v: &Json, out: &mut Vec<(String, Json)>) {
    match v {
        Json::Object(map) => {
            if let Some(Json::String(url)) = map.get("@type") {
                let name = url.trim_start_matches(TYPE_PREFIX);
                if [
                    "envoy.config.listener.v3.Listener",
                    "envoy.config.route.v3.RouteConfiguration",
                    "envoy.config.cluster.v3.Cluster",
                    "envoy.config.endpoint.v3.ClusterLoadAssignment",
                ]
                .contains(&name)
                {
                    out.push((name.to_owned(), v.clone()));
                    return;
                }
            }
            map.values().for_each(|c| resources(c, out));
        }
        Json::Array(items) => items.iter().for_each(|c| resources(c, out)),
        _ => {}
    }
}

pub fn decode<M: Message + Default>(pool: &DescriptorPool, type_name: &str, mut json: Json) -> M {
    mark_unknown(&mut json, pool);
    if let Json::Object(map) = &mut json {
        map.remove("@type");
    }
    let desc = pool.get_message_by_name(type_name).unwrap();
    let options = DeserializeOptions::new().deny_unknown_fields(false);
    let mut msg = DynamicMessage::deserialize_with_options(desc, json, &options)
        .unwrap_or_else(|e| panic!("{type_name}: {e}"));
    restore_unknown(&mut msg);
    msg.transcode_to::<M>().unwrap()
}
