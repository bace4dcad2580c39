//! Laws that hold for every input: backoff stays in bounds, and no response, however
//! malformed, panics the core or goes without an ACK or a NACK.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::time::{Duration, Instant};

use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
use envoy_types::pb::google::protobuf::Any;
use mesh_xds_client::ads::{AdsConfig, AdsCore};
use mesh_xds_client::bootstrap::NodeConfig;
use mesh_xds_client::resource::XdsType;
use mesh_xds_client::testing::fixtures::listener_rds;
use mesh_xds_client::transport::Backoff;
use proptest::prelude::*;

proptest! {
    #[test]
    fn backoff_stays_within_jitter_of_a_capped_exponential(
        randoms in proptest::collection::vec(0.0f64..1.0, 1..40),
        initial_ms in 1u64..5_000,
        max_ms in 1u64..200_000,
    ) {
        let initial = Duration::from_millis(initial_ms);
        let max = Duration::from_millis(max_ms);
        let mut backoff = Backoff::new(initial, max);
        let mut base = initial.min(max).as_secs_f64();
        for r in randoms {
            let d = backoff.next_delay(r).as_secs_f64();
            prop_assert!(d >= base * 0.8 - 1e-6 && d <= base * 1.2 + 1e-6, "{d} vs {base}");
            base = (base * 1.6).min(max.as_secs_f64());
        }
    }

    #[test]
    fn any_response_is_acked_or_nacked_without_panic(
        type_index in 0usize..4,
        blobs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..6),
        with_valid in any::<bool>(),
    ) {
        let t = XdsType::ALL[type_index];
        let now = Instant::now();
        let mut core = AdsCore::new(NodeConfig::new("n").to_proto(), AdsConfig::default());
        core.add_target("svc", now);
        core.on_stream_start(now);
        while core.poll_request().is_some() {}
        let mut resources: Vec<Any> = blobs
            .into_iter()
            .map(|value| Any { type_url: t.type_url().into(), value })
            .collect();
        if with_valid {
            resources.push(listener_rds("svc", "route"));
        }
        let response = DiscoveryResponse {
            version_info: "v".into(),
            resources,
            type_url: t.type_url().into(),
            nonce: "nonce".into(),
            ..DiscoveryResponse::default()
        };
        let outcome = core.handle_response(response, now).unwrap();
        let reply = core.poll_request().unwrap();
        prop_assert_eq!(reply.type_url.as_str(), t.type_url());
        prop_assert_eq!(reply.response_nonce.as_str(), "nonce");
        prop_assert_eq!(outcome.acked, reply.error_detail.is_none());
        if outcome.acked {
            prop_assert_eq!(reply.version_info.as_str(), "v");
        } else {
            prop_assert_eq!(reply.version_info.as_str(), "");
            prop_assert_eq!(reply.error_detail.unwrap().code, 3);
        }
    }
}
