//! Harnesses for mesh-core's outside input: the static policy file (YAML, Istio objects
//! inside) and SPIFFE IDs. Besides "no panic", the SPIFFE ID harness checks the laws the
//! module promises: parse and display round-trip, and the parts rebuild the same ID.
//!
//! Shared by `fuzz_targets/{policy_file,spiffe_id}.rs` and `mesh-core/tests/fuzz_seeds.rs`.

use mesh_core::identity::{SpiffeId, TrustDomain};
use mesh_core::policy_file::PolicyFile;

/// A policy file's YAML text, parsed and translated into a snapshot.
pub fn policy_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(file) = PolicyFile::parse(text, "fuzz.yaml") else {
        return;
    };
    if let Ok(snapshot) = file.to_snapshot("fuzz.yaml") {
        let _ = snapshot.validate();
    }
    let _ = file.inbound_policy();
}

/// A SPIFFE ID (or a bare trust domain) as text.
pub fn spiffe_id(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(id) = SpiffeId::parse(text) {
        assert_eq!(id.to_string(), text, "display differs from the parsed text");
        assert_eq!(id.as_str(), text);
        let rebuilt = SpiffeId::from_parts(id.trust_domain(), id.path());
        assert_eq!(rebuilt.as_ref(), Ok(&id), "from_parts(trust_domain, path)");
        if let (Some(ns), Some(sa)) = (id.namespace(), id.service_account()) {
            let istio = SpiffeId::istio(id.trust_domain(), ns, sa);
            assert_eq!(istio.as_ref(), Ok(&id), "istio(trust_domain, ns, sa)");
        }
    }
    if let Ok(td) = TrustDomain::new(text) {
        let id = td.id();
        assert_eq!(
            SpiffeId::parse(id.as_str()).as_ref(),
            Ok(&id),
            "trust domain's ID"
        );
    }
}
