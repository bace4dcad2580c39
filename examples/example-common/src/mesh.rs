use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use mesh_tower::admin::{AdminHandle, AdminServer};
use mesh_tower::inbound::InboundConfig;
use mesh_tower::metrics::WorkloadLabels;
use mesh_tower::Mesh;

/// The mesh flags shared by every example service; flatten it into the service's parser
/// with `#[command(flatten)]`.
///
/// All three are optional: with none of them a service runs on the mesh's built-in
/// defaults (every target dialed by DNS, no TLS, no authorization).
#[derive(Debug, Clone, Default, clap::Args)]
#[non_exhaustive]
pub struct MeshArgs {
    /// xDS bootstrap file (the one the Istio agent writes), for a control-plane-driven mesh.
    #[arg(long, value_name = "FILE", env = "GRPC_XDS_BOOTSTRAP")]
    pub bootstrap: Option<PathBuf>,

    /// Static mesh policy file, for a mesh without a control plane.
    #[arg(long, value_name = "FILE", env = "MESH_POLICY")]
    pub policy: Option<PathBuf>,

    /// Address of the mesh admin server (`/`, `/metrics`, `/config_dump`, `/clusters`,
    /// `/ready`); off when unset. Use a loopback address unless the port is protected.
    #[arg(long, value_name = "IP:PORT", env = "MESH_ADMIN")]
    pub admin: Option<SocketAddr>,

    /// Seconds a connection may have nothing in flight before it is closed (default 300).
    #[arg(long, value_name = "SECS", env = "MESH_IDLE_TIMEOUT")]
    pub idle_timeout: Option<f64>,

    /// Seconds an HTTP/1.1 client has to send a request's headers, including between
    /// requests on a keep-alive connection (default 30).
    #[arg(long, value_name = "SECS", env = "MESH_HEADER_READ_TIMEOUT")]
    pub header_read_timeout: Option<f64>,

    /// Most inbound connections open at once; at the limit the longest-idle one is closed
    /// to make room (default 10000).
    #[arg(long, value_name = "N", env = "MESH_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,

    /// Most inbound connections open at once from one peer address (default 4096).
    #[arg(long, value_name = "N", env = "MESH_MAX_CONNECTIONS_PER_PEER")]
    pub max_connections_per_peer: Option<usize>,

    /// A mesh built in code (tests, the demo); when set, the flags above are not read.
    #[arg(skip)]
    pub prebuilt: Option<Mesh>,
}

/// Why the mesh could not be set up from the flags.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MeshSetupError {
    /// The policy file is unreadable or invalid (the message names file, line and field).
    #[error("mesh policy: {0}")]
    Policy(#[from] mesh_tower::mesh::MeshBuildError),
    /// A flag's value is out of range.
    #[error("{flag}: {reason}")]
    BadFlag {
        /// The flag.
        flag: &'static str,
        /// What is wrong with its value.
        reason: String,
    },
    /// The admin server could not bind its address.
    #[error("admin server on {addr}: {source}")]
    Admin {
        /// The `--admin` address.
        addr: SocketAddr,
        /// Why binding failed.
        #[source]
        source: std::io::Error,
    },
}

impl MeshArgs {
    /// No mesh flag given.
    pub fn is_empty(&self) -> bool {
        self.bootstrap.is_none() && self.policy.is_none() && self.admin.is_none()
    }

    /// Uses a mesh built in code instead of the flags.
    #[must_use]
    pub fn with_mesh(mut self, mesh: Mesh) -> Self {
        self.prebuilt = Some(mesh);
        self
    }

    /// Builds the mesh the flags describe: `--bootstrap` (xDS), else `--policy` (a static
    /// file, reloaded when it changes), else the built-in defaults.
    pub fn build(&self) -> Result<Mesh, MeshSetupError> {
        self.build_named("unknown")
    }

    /// As [`MeshArgs::build`], labelling the metrics as workload `service` (Istio's
    /// environment variables and `OTEL_SERVICE_NAME` take precedence).
    pub fn build_named(&self, service: &str) -> Result<Mesh, MeshSetupError> {
        if let Some(mesh) = &self.prebuilt {
            return Ok(mesh.clone());
        }
        let builder = Mesh::builder()
            .workload(WorkloadLabels::from_env(service))
            .inbound_config(self.inbound_config()?);
        let mesh = match (&self.bootstrap, &self.policy) {
            (Some(bootstrap), _) => builder.bootstrap(bootstrap).build()?,
            (None, Some(path)) => builder.policy_file(path).build()?,
            (None, None) => builder.build()?,
        };
        Ok(mesh)
    }

    /// The inbound connection settings the flags give (defaults for those not given).
    pub fn inbound_config(&self) -> Result<InboundConfig, MeshSetupError> {
        let secs =
            |flag: &'static str, v: Option<f64>| -> Result<Option<Duration>, MeshSetupError> {
                v.map(|s| {
                    Duration::try_from_secs_f64(s)
                        .ok()
                        .filter(|d| !d.is_zero())
                        .ok_or(MeshSetupError::BadFlag {
                            flag,
                            reason: format!("{s}: not a positive number of seconds"),
                        })
                })
                .transpose()
            };
        let mut config = InboundConfig::default();
        if let Some(d) = secs("--idle-timeout", self.idle_timeout)? {
            config = config.with_idle_timeout(d);
        }
        if let Some(d) = secs("--header-read-timeout", self.header_read_timeout)? {
            config = config.with_header_read_timeout(d);
        }
        if let Some(n) = self.max_connections {
            config = config.with_max_connections(n);
        }
        if let Some(n) = self.max_connections_per_peer {
            config = config.with_max_connections_per_peer(n);
        }
        Ok(config)
    }

    /// Starts the admin server on `--admin` for `mesh` (nothing when unset); it runs until
    /// the handle is dropped.
    pub async fn start_admin(&self, mesh: &Mesh) -> Result<Option<AdminHandle>, MeshSetupError> {
        let Some(addr) = self.admin else {
            return Ok(None);
        };
        let handle = AdminServer::new(mesh.clone())
            .spawn(addr)
            .await
            .map_err(|source| MeshSetupError::Admin { addr, source })?;
        tracing::info!(admin = %format!("http://{}/", handle.local_addr()), "mesh admin server listening");
        Ok(Some(handle))
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
