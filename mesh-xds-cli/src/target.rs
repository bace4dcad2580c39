//! Targets as gRPC channels name them.

/// A target `mesh-xds` cannot look up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TargetError {
    /// Nothing after the scheme.
    #[error("target {0:?} names no service (expected xds:///service:port)")]
    Empty(String),
    /// `xds://authority/...`: federation (gRFC A47) is not supported by the mesh's client.
    #[error("target {0:?} names an xDS authority; only xds:/// (the bootstrap's default server) is supported")]
    Authority(String),
    /// Another scheme.
    #[error("target {0:?} has scheme {1:?}; expected xds:///service:port or service:port")]
    Scheme(String, String),
}

/// The service part of `xds:///payment-service:8080` (or of a bare `payment-service:8080`),
/// which the bootstrap's listener name template turns into a listener resource name.
pub fn listener_target(target: &str) -> Result<&str, TargetError> {
    let rest = if let Some(rest) = target.strip_prefix("xds:///") {
        rest
    } else if let Some(rest) = target.strip_prefix("xds://") {
        return Err(TargetError::Authority(format!("xds://{rest}")));
    } else if let Some((scheme, _)) = target.split_once("://") {
        return Err(TargetError::Scheme(target.to_owned(), scheme.to_owned()));
    } else {
        target
    };
    if rest.is_empty() {
        return Err(TargetError::Empty(target.to_owned()));
    }
    Ok(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_xds_and_bare_targets() {
        assert_eq!(listener_target("xds:///a:80"), Ok("a:80"));
        assert_eq!(listener_target("a.b.svc:80"), Ok("a.b.svc:80"));
    }

    #[test]
    fn rejects_what_it_cannot_look_up() {
        assert!(matches!(
            listener_target("xds:///"),
            Err(TargetError::Empty(_))
        ));
        assert!(matches!(
            listener_target("xds://auth.example/a:80"),
            Err(TargetError::Authority(_))
        ));
        assert!(matches!(
            listener_target("dns:///a:80"),
            Err(TargetError::Scheme(_, s)) if s == "dns"
        ));
    }
}
