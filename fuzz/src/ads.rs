//! The harness of the sans-I/O ADS client: a script of stream events and whole
//! `DiscoveryResponse` / `DeltaDiscoveryResponse` messages fed to one
//! [`AdsCore`], which must answer every step without panicking; after each step every
//! request and event is drained and a snapshot is assembled from the cache, as the
//! transport does.
//!
//! The input is a list of records, `op: u8, len: u16 (little-endian), payload[len]` (a
//! short last record takes what is left). `op & 0x0f` picks the step (the `OP_*`
//! constants); for responses, bit [`AUTO_TARGET`] first makes every listener the response
//! carries a target, so the cascade behind it is subscribed and reached.
//!
//! Shared by `fuzz_targets/ads_core.rs` and `mesh-xds-client/tests/fuzz_seeds.rs`.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryResponse, DiscoveryResponse};
use envoy_types::pb::google::protobuf::Any;
use mesh_xds_client::ads::{AdsConfig, AdsCore, Protocol};
use mesh_xds_client::bootstrap::NodeConfig;
use mesh_xds_client::resource::XdsType;
use mesh_xds_client::snapshot::SnapshotAssembler;
use prost::Message;

/// Payload: `DiscoveryResponse` bytes.
pub const OP_SOTW_RESPONSE: u8 = 0;
/// Payload: `DeltaDiscoveryResponse` bytes.
pub const OP_DELTA_RESPONSE: u8 = 1;
/// Payload: a listener name to watch.
pub const OP_ADD_TARGET: u8 = 2;
/// Payload: a listener name to stop watching.
pub const OP_REMOVE_TARGET: u8 = 3;
/// A new stream; payload byte 0, bit 0: speak delta on it.
pub const OP_RESTART_STREAM: u8 = 4;
/// Payload: seconds (u16 LE) passing before the timers are checked.
pub const OP_ADVANCE_TIME: u8 = 5;
/// Payload byte 0, bit 0: ignore resource deletion (gRFC A53).
pub const OP_IGNORE_DELETION: u8 = 6;
/// The stream closes.
pub const OP_CLOSE_STREAM: u8 = 7;
/// Flag on a response: watch every listener it carries first.
pub const AUTO_TARGET: u8 = 0x80;

const LISTENER_TEMPLATE: &str = "%s";

/// Splits the input into `(op, payload)` records.
fn records(mut data: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        let (&op, rest) = data.split_first()?;
        let (len, rest) = match rest {
            [a, b, rest @ ..] => (usize::from(u16::from_le_bytes([*a, *b])), rest),
            _ => (rest.len(), &[][..]),
        };
        let (payload, rest) = rest.split_at(len.min(rest.len()));
        data = rest;
        Some((op, payload))
    })
}

/// The listener names inside `Any`s of a listener response (bytes that do not decode are
/// the core's business, not the harness's).
fn listener_names<'a>(resources: impl Iterator<Item = &'a Any>) -> Vec<String> {
    resources
        .filter(|any| any.type_url == XdsType::Listener.type_url())
        .filter_map(|any| Listener::decode(any.value.as_slice()).ok())
        .map(|l| l.name)
        .filter(|n| !n.is_empty())
        .collect()
}

/// Runs the script in `data`.
pub fn ads_core(data: &[u8]) {
    let mut now = Instant::now();
    let providers: BTreeSet<String> = ["default".to_owned()].into();
    let config = AdsConfig::default().with_certificate_providers(Some(providers));
    let mut core = AdsCore::new(NodeConfig::new("fuzz").to_proto(), config);
    let mut assembler = SnapshotAssembler::new(LISTENER_TEMPLATE);
    core.on_stream_start(now);
    for (op, payload) in records(data) {
        let auto_target = op & AUTO_TARGET != 0;
        match op & 0x0f {
            OP_SOTW_RESPONSE => {
                let Ok(response) = DiscoveryResponse::decode(payload) else {
                    continue;
                };
                if auto_target && response.type_url == XdsType::Listener.type_url() {
                    for name in listener_names(response.resources.iter()) {
                        core.add_target(&name, now);
                    }
                }
                let _ = core.handle_response(response, now);
            }
            OP_DELTA_RESPONSE => {
                let Ok(response) = DeltaDiscoveryResponse::decode(payload) else {
                    continue;
                };
                if auto_target && response.type_url == XdsType::Listener.type_url() {
                    let carried = response
                        .resources
                        .iter()
                        .filter_map(|r| r.resource.as_ref());
                    for name in listener_names(carried) {
                        core.add_target(&name, now);
                    }
                }
                let _ = core.handle_delta_response(response, now);
            }
            OP_ADD_TARGET => core.add_target(&String::from_utf8_lossy(payload), now),
            OP_REMOVE_TARGET => core.remove_target(&String::from_utf8_lossy(payload), now),
            OP_RESTART_STREAM => {
                core.on_stream_closed();
                let delta = payload.first().is_some_and(|b| b & 1 == 1);
                core.set_protocol(if delta {
                    Protocol::Delta
                } else {
                    Protocol::StateOfTheWorld
                });
                core.on_stream_start(now);
            }
            OP_ADVANCE_TIME => {
                let secs = match payload {
                    [a, b, ..] => u16::from_le_bytes([*a, *b]),
                    [a] => u16::from(*a),
                    [] => 0,
                };
                now += Duration::from_secs(u64::from(secs));
                if core.poll_timeout().is_some_and(|at| at <= now) {
                    core.handle_timeout(now);
                }
            }
            OP_IGNORE_DELETION => {
                core.set_ignore_resource_deletion(payload.first().is_some_and(|b| b & 1 == 1));
            }
            OP_CLOSE_STREAM => core.on_stream_closed(),
            _ => continue,
        }
        drain(&mut core, &mut assembler);
    }
}

/// Sends nothing anywhere, but takes every request and event out as the transport would,
/// and assembles the snapshot a watcher would get.
fn drain(core: &mut AdsCore, assembler: &mut SnapshotAssembler) {
    while let Some(request) = core.poll_request() {
        let _ = request.encoded_len();
    }
    while let Some(request) = core.poll_delta_request() {
        let _ = request.encoded_len();
    }
    while core.poll_event().is_some() {}
    let _ = core.has_uncached();
    let version = core.version(XdsType::Listener).to_owned();
    let targets: Vec<String> = core.targets().map(str::to_owned).collect();
    if let Ok(snapshot) =
        assembler.assemble(targets.iter().map(String::as_str), core.cache(), &version)
    {
        let _ = snapshot.validate();
        for target in &targets {
            let _ = snapshot.outbound(assembler.target_of(target));
        }
    }
}
