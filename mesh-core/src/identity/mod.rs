//! SPIFFE identities: trust domains and SPIFFE IDs, parsed and validated as the SPIFFE ID
//! standard (`standards/SPIFFE-ID.md`) requires.
//!
//! A SPIFFE ID is `spiffe://<trust domain><path>`. The trust domain is lower-case letters,
//! digits, `.`, `-` and `_`; the path is zero or more `/segment`s of letters, digits, `.`,
//! `-` and `_`, with no empty, `.` or `..` segment and no trailing slash. Ports, user info,
//! queries, fragments and percent-encoding are rejected. This is stricter than a generic URI
//! parser on purpose: two spellings of one identity must never compare unequal.
//!
//! ```
//! use mesh_core::identity::SpiffeId;
//!
//! let id: SpiffeId = "spiffe://cluster.local/ns/default/sa/order-service".parse().unwrap();
//! assert_eq!(id.trust_domain().as_str(), "cluster.local");
//! assert_eq!(id.namespace(), Some("default"));
//! assert_eq!(id.service_account(), Some("order-service"));
//! assert!("spiffe://cluster.local/ns/default/".parse::<SpiffeId>().is_err());
//! ```

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// The only scheme a SPIFFE ID may have, with its `//`.
pub const SCHEME: &str = "spiffe://";
/// The longest SPIFFE ID accepted, in bytes.
pub const MAX_ID_LEN: usize = 2048;
/// The longest trust domain name accepted, in bytes.
pub const MAX_TRUST_DOMAIN_LEN: usize = 255;

/// Why a string is not a valid SPIFFE ID or trust domain.
///
/// Positions are byte offsets into the string that was parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpiffeIdError {
    /// The input is empty.
    #[error("SPIFFE ID is empty")]
    Empty,
    /// The input does not start with `spiffe://` (lower-case).
    #[error("SPIFFE ID must start with \"spiffe://\" (found {found:?})")]
    BadScheme {
        /// The start of the input, up to the length of the scheme.
        found: String,
    },
    /// The input is longer than [`MAX_ID_LEN`] bytes.
    #[error("SPIFFE ID is {len} bytes long, the limit is {max}")]
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Nothing between `spiffe://` and the path.
    #[error("trust domain is empty")]
    EmptyTrustDomain,
    /// The trust domain is longer than [`MAX_TRUST_DOMAIN_LEN`] bytes.
    #[error("trust domain is {len} bytes long, the limit is {max}")]
    TrustDomainTooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The authority has user info (`user@`).
    #[error("user info is not allowed (the '@' at byte {position})")]
    UserInfo {
        /// Where the `@` is.
        position: usize,
    },
    /// The authority has a port (`:`).
    #[error("a port is not allowed (the ':' at byte {position})")]
    Port {
        /// Where the `:` is.
        position: usize,
    },
    /// A query (`?`) is present.
    #[error("a query is not allowed (the '?' at byte {position})")]
    Query {
        /// Where the `?` is.
        position: usize,
    },
    /// A fragment (`#`) is present.
    #[error("a fragment is not allowed (the '#' at byte {position})")]
    Fragment {
        /// Where the `#` is.
        position: usize,
    },
    /// Percent-encoding (`%`) is present.
    #[error("percent-encoding is not allowed (the '%' at byte {position})")]
    PercentEncoded {
        /// Where the `%` is.
        position: usize,
    },
    /// An upper-case letter in the trust domain (trust domains are lower-case only).
    #[error("upper-case {character:?} at byte {position}: trust domains are lower-case")]
    UpperCaseTrustDomain {
        /// The letter.
        character: char,
        /// Where it is.
        position: usize,
    },
    /// A character outside `[a-z0-9.-_]` in the trust domain.
    #[error("character {character:?} at byte {position} is not allowed in a trust domain")]
    BadTrustDomainChar {
        /// The character.
        character: char,
        /// Where it is.
        position: usize,
    },
    /// A character outside `[a-zA-Z0-9.-_]` in the path.
    #[error("character {character:?} at byte {position} is not allowed in a path")]
    BadPathChar {
        /// The character.
        character: char,
        /// Where it is.
        position: usize,
    },
    /// An empty segment (`//`) in the path.
    #[error("empty path segment at byte {position}")]
    EmptySegment {
        /// Where the segment would start (just after its `/`).
        position: usize,
    },
    /// A `.` or `..` segment in the path.
    #[error("path segment {segment:?} at byte {position} is not allowed")]
    DotSegment {
        /// `.` or `..`.
        segment: String,
        /// Where it starts.
        position: usize,
    },
    /// The path ends with `/`.
    #[error("trailing slash at byte {position}")]
    TrailingSlash {
        /// Where the last `/` is.
        position: usize,
    },
    /// A path passed on its own does not start with `/`.
    #[error("path {path:?} must be empty or start with '/'")]
    PathWithoutLeadingSlash {
        /// The path.
        path: String,
    },
}

/// A SPIFFE trust domain name, such as `cluster.local`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TrustDomain {
    // Shared: identities are cloned onto every request they authenticate.
    name: Arc<str>,
}

impl TrustDomain {
    /// Parses a bare trust domain name (`cluster.local`, no scheme).
    pub fn new(name: &str) -> Result<Self, SpiffeIdError> {
        validate_trust_domain(name, 0)?;
        Ok(Self { name: name.into() })
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// The trust domain's own SPIFFE ID, `spiffe://<name>` (empty path).
    pub fn id(&self) -> SpiffeId {
        SpiffeId {
            full: format!("{SCHEME}{}", self.name).into(),
            td: self.clone(),
        }
    }
}

impl FromStr for TrustDomain {
    type Err = SpiffeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// A validated SPIFFE ID, such as `spiffe://cluster.local/ns/default/sa/order-service`.
///
/// `Display` writes the ID exactly as it was parsed, so parse and display round-trip.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpiffeId {
    // Shared: identities are cloned onto every request they authenticate.
    full: Arc<str>,
    td: TrustDomain,
}

impl SpiffeId {
    /// Parses and validates a SPIFFE ID.
    pub fn parse(s: &str) -> Result<Self, SpiffeIdError> {
        if s.is_empty() {
            return Err(SpiffeIdError::Empty);
        }
        if s.len() > MAX_ID_LEN {
            return Err(SpiffeIdError::TooLong {
                len: s.len(),
                max: MAX_ID_LEN,
            });
        }
        let Some(rest) = s.strip_prefix(SCHEME) else {
            let mut end = SCHEME.len().min(s.len());
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            return Err(SpiffeIdError::BadScheme {
                found: s[..end].to_owned(),
            });
        };
        let td_end = rest.find('/').unwrap_or(rest.len());
        let (td, path) = rest.split_at(td_end);
        validate_trust_domain(td, SCHEME.len())?;
        validate_path(path, SCHEME.len() + td_end)?;
        Ok(Self {
            full: s.into(),
            td: TrustDomain { name: td.into() },
        })
    }

    /// The ID made of `trust_domain` and `path` (empty, or `/seg/seg...`).
    pub fn from_parts(trust_domain: &TrustDomain, path: &str) -> Result<Self, SpiffeIdError> {
        if !path.is_empty() && !path.starts_with('/') {
            return Err(SpiffeIdError::PathWithoutLeadingSlash {
                path: path.to_owned(),
            });
        }
        Self::parse(&format!("{SCHEME}{}{path}", trust_domain.as_str()))
    }

    /// Istio's identity for a Kubernetes service account:
    /// `spiffe://<td>/ns/<namespace>/sa/<service_account>`.
    pub fn istio(
        trust_domain: &TrustDomain,
        namespace: &str,
        service_account: &str,
    ) -> Result<Self, SpiffeIdError> {
        // Each must be one segment, or the ID would name another namespace or account.
        let ns_at = SCHEME.len() + trust_domain.as_str().len() + "/ns/".len();
        let sa_at = ns_at + namespace.len() + "/sa/".len();
        for (value, at) in [(namespace, ns_at), (service_account, sa_at)] {
            if let Some(i) = value.find('/') {
                return Err(SpiffeIdError::BadPathChar {
                    character: '/',
                    position: at + i,
                });
            }
        }
        Self::from_parts(
            trust_domain,
            &format!("/ns/{namespace}/sa/{service_account}"),
        )
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.td
    }

    /// The path: empty, or `/` followed by segments.
    pub fn path(&self) -> &str {
        &self.full[SCHEME.len() + self.td.name.len()..]
    }

    /// The whole ID as a string.
    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// The namespace of an Istio identity (path `/ns/<namespace>/sa/<sa>`), else `None`.
    pub fn namespace(&self) -> Option<&str> {
        self.istio_parts().map(|(ns, _)| ns)
    }

    /// The service account of an Istio identity (path `/ns/<ns>/sa/<sa>`), else `None`.
    pub fn service_account(&self) -> Option<&str> {
        self.istio_parts().map(|(_, sa)| sa)
    }

    fn istio_parts(&self) -> Option<(&str, &str)> {
        let mut segments = self.path().strip_prefix('/')?.split('/');
        let (ns_key, ns, sa_key, sa) = (
            segments.next()?,
            segments.next()?,
            segments.next()?,
            segments.next()?,
        );
        (segments.next().is_none() && ns_key == "ns" && sa_key == "sa").then_some((ns, sa))
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

/// Reports a character that belongs to a URI part the spec forbids, if it is one.
fn forbidden_uri_part(c: char, position: usize) -> Option<SpiffeIdError> {
    match c {
        '?' => Some(SpiffeIdError::Query { position }),
        '#' => Some(SpiffeIdError::Fragment { position }),
        '%' => Some(SpiffeIdError::PercentEncoded { position }),
        _ => None,
    }
}

/// Validates a trust domain found at byte `offset` of the original input.
fn validate_trust_domain(td: &str, offset: usize) -> Result<(), SpiffeIdError> {
    // User info is reported first: in `user:pw@host` the ':' is not a port.
    if let Some(at) = td.find('@') {
        return Err(SpiffeIdError::UserInfo {
            position: offset + at,
        });
    }
    for (i, c) in td.char_indices() {
        let position = offset + i;
        match c {
            'a'..='z' | '0'..='9' | '.' | '-' | '_' => {}
            ':' => return Err(SpiffeIdError::Port { position }),
            'A'..='Z' => {
                return Err(SpiffeIdError::UpperCaseTrustDomain {
                    character: c,
                    position,
                })
            }
            _ => {
                return Err(forbidden_uri_part(c, position).unwrap_or(
                    SpiffeIdError::BadTrustDomainChar {
                        character: c,
                        position,
                    },
                ))
            }
        }
    }
    if td.is_empty() {
        return Err(SpiffeIdError::EmptyTrustDomain);
    }
    if td.len() > MAX_TRUST_DOMAIN_LEN {
        return Err(SpiffeIdError::TrustDomainTooLong {
            len: td.len(),
            max: MAX_TRUST_DOMAIN_LEN,
        });
    }
    Ok(())
}

/// Validates a path (empty or starting with `/`) found at byte `offset` of the input.
fn validate_path(path: &str, offset: usize) -> Result<(), SpiffeIdError> {
    let Some(segments) = path.strip_prefix('/') else {
        return Ok(()); // empty path
    };
    let mut start = offset + 1;
    let mut rest = segments;
    loop {
        let (segment, next) = match rest.find('/') {
            Some(i) => (&rest[..i], Some(&rest[i + 1..])),
            None => (rest, None),
        };
        for (i, c) in segment.char_indices() {
            match c {
                'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' | '_' => {}
                _ => {
                    let position = start + i;
                    return Err(forbidden_uri_part(c, position).unwrap_or(
                        SpiffeIdError::BadPathChar {
                            character: c,
                            position,
                        },
                    ));
                }
            }
        }
        match segment {
            "" if next.is_none() => {
                return Err(SpiffeIdError::TrailingSlash {
                    position: start - 1,
                })
            }
            "" => return Err(SpiffeIdError::EmptySegment { position: start }),
            "." | ".." => {
                return Err(SpiffeIdError::DotSegment {
                    segment: segment.to_owned(),
                    position: start,
                })
            }
            _ => {}
        }
        match next {
            Some(n) => {
                start += segment.len() + 1;
                rest = n;
            }
            None => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests;
