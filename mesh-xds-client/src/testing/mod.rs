//! Helpers for tests of this crate and of the crates built on it (enabled by the `testing`
//! feature): resource fixtures, waiting for a client's view, and the [`AdsServer`] under
//! the name the tests have always used.

mod client;
pub mod fixtures;

pub use client::wait_for_view;

pub use crate::server::{
    AdsServer, AdsServer as TestAdsServer, HeaderTiming, RecordedDeltaRequest, RecordedRequest,
    VariantSelector, WildcardFilter,
};
