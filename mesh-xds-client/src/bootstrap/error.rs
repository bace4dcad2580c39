//! What can go wrong while loading a bootstrap.

use std::fmt;
use std::path::PathBuf;

/// Where a bootstrap came from, so an error can point at it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BootstrapSource {
    /// A file (named by `GRPC_XDS_BOOTSTRAP`, or given directly).
    File(PathBuf),
    /// Inline JSON in this environment variable (`GRPC_XDS_BOOTSTRAP_CONFIG`).
    EnvVar(&'static str),
    /// JSON handed over by the application.
    Inline,
}

impl fmt::Display for BootstrapSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => write!(f, "bootstrap file {}", path.display()),
            Self::EnvVar(var) => write!(f, "bootstrap in ${var}"),
            Self::Inline => f.write_str("inline bootstrap"),
        }
    }
}

/// A bootstrap that could not be loaded. Each variant names the source and, where it
/// applies, the JSON path of the offending field (`xds_servers[0].channel_creds`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BootstrapError {
    /// Neither `GRPC_XDS_BOOTSTRAP` nor `GRPC_XDS_BOOTSTRAP_CONFIG` is set.
    #[error("no xDS bootstrap: set GRPC_XDS_BOOTSTRAP (a file path) or GRPC_XDS_BOOTSTRAP_CONFIG (JSON)")]
    NotConfigured,
    /// The file could not be read.
    #[error("cannot read bootstrap file {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        error: std::io::Error,
    },
    /// The text is not JSON of the bootstrap's shape.
    #[error("{origin}: invalid JSON at `{json_path}`: {message}")]
    Json {
        /// Where the text came from.
        origin: BootstrapSource,
        /// The JSON path of the error (`.` when it is the whole document).
        json_path: String,
        /// What the parser said.
        message: String,
    },
    /// The JSON is well formed but a value is not acceptable.
    #[error("{origin}: `{json_path}`: {reason}")]
    Invalid {
        /// Where the text came from.
        origin: BootstrapSource,
        /// The JSON path of the field.
        json_path: String,
        /// What is wrong with it.
        reason: String,
    },
}
