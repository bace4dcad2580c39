//! Tower layers, the inbound listener and the outbound client of the mesh.
#![forbid(unsafe_code)]

pub mod body;
pub mod identity;
pub mod inbound;
