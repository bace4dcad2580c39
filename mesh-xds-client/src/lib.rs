//! The xDS side of the mesh: reads a gRPC-format bootstrap and (in later work) runs the ADS
//! stream and translates Envoy v3 resources into a [`mesh_core::Snapshot`].
#![forbid(unsafe_code)]
