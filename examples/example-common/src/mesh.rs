use std::net::SocketAddr;
use std::path::PathBuf;

/// The mesh flags shared by every example service; flatten it into the service's parser
/// with `#[command(flatten)]`.
///
/// All three are optional: with none of them a service runs without a mesh.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
#[non_exhaustive]
pub struct MeshArgs {
    /// xDS bootstrap file (the one the Istio agent writes), for a control-plane-driven mesh.
    #[arg(long, value_name = "FILE", env = "GRPC_XDS_BOOTSTRAP")]
    pub bootstrap: Option<PathBuf>,

    /// Static mesh policy file, for a mesh without a control plane.
    #[arg(long, value_name = "FILE", env = "MESH_POLICY")]
    pub policy: Option<PathBuf>,

    /// Address of the mesh admin endpoint (metrics, config dump).
    #[arg(long, value_name = "IP:PORT", env = "MESH_ADMIN")]
    pub admin: Option<SocketAddr>,
}

impl MeshArgs {
    /// No mesh flag given.
    pub fn is_empty(&self) -> bool {
        self.bootstrap.is_none() && self.policy.is_none() && self.admin.is_none()
    }

    /// Logs a warning when mesh flags were given: until the mesh is wired in they are
    /// accepted but have no effect, and a user should not be left thinking otherwise.
    pub fn warn_if_unused(&self) {
        if !self.is_empty() {
            tracing::warn!(mesh = ?self, "mesh flags given, but this build does not wire the mesh in yet; they are ignored");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        mesh: MeshArgs,
    }

    #[test]
    fn bad_admin_address_is_rejected_with_the_flag_name() {
        let err = match Cli::try_parse_from(["svc", "--admin", "localhost"]) {
            Ok(_) => panic!("a host without a port must be rejected"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("--admin"), "{err}");
    }

    #[test]
    fn all_flags_parse() {
        let cli = Cli::try_parse_from([
            "svc",
            "--bootstrap",
            "/etc/istio/proxy/grpc-bootstrap.json",
            "--policy",
            "policy.yaml",
            "--admin",
            "127.0.0.1:9901",
        ]);
        let mesh = match cli {
            Ok(c) => c.mesh,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(mesh.admin, Some(SocketAddr::from(([127, 0, 0, 1], 9901))));
        assert!(mesh.bootstrap.is_some() && mesh.policy.is_some());
    }
}
