//! IP address ranges in CIDR notation.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// Why a CIDR range could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CidrError {
    /// The address part is not an IPv4 or IPv6 address.
    #[error("{value:?} is not a valid IP address")]
    BadAddress {
        /// The address part as written.
        value: String,
    },
    /// The prefix length is not a number.
    #[error("prefix length {value:?} is not a number")]
    BadPrefixLength {
        /// The prefix length as written.
        value: String,
    },
    /// The prefix length is longer than the address.
    #[error("prefix length {len} is longer than the {max} bits of the address")]
    PrefixTooLong {
        /// The prefix length.
        len: u32,
        /// 32 for IPv4, 128 for IPv6.
        max: u32,
    },
}

/// An IPv4 or IPv6 address range, such as `10.0.0.0/8` or `2001:db8::/32`.
///
/// Host bits past the prefix are cleared when the range is built, as Envoy does, so
/// `10.1.2.3/8` is the same range as `10.0.0.0/8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix_len: u8,
}

impl Cidr {
    /// The range of `prefix_len` leading bits of `addr`.
    pub fn new(addr: IpAddr, prefix_len: u32) -> Result<Self, CidrError> {
        let max = max_len(addr);
        if prefix_len > max {
            return Err(CidrError::PrefixTooLong {
                len: prefix_len,
                max,
            });
        }
        // prefix_len <= 128 here.
        let prefix_len = prefix_len as u8;
        let addr = match addr {
            IpAddr::V4(a) => IpAddr::V4((u32::from(a) & mask_v4(prefix_len)).into()),
            IpAddr::V6(a) => IpAddr::V6((u128::from(a) & mask_v6(prefix_len)).into()),
        };
        Ok(Self { addr, prefix_len })
    }

    /// The range holding exactly `addr` (`/32` or `/128`).
    pub fn host(addr: IpAddr) -> Self {
        let prefix_len = max_len(addr) as u8;
        Self { addr, prefix_len }
    }

    /// The first address of the range.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// True when `ip` is in the range. An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`, as
    /// a dual-stack socket reports IPv4 peers) is treated as the IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                u32::from(ip) & mask_v4(self.prefix_len) == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                u128::from(ip) & mask_v6(self.prefix_len) == u128::from(net)
            }
            _ => false,
        }
    }
}

fn max_len(addr: IpAddr) -> u32 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn mask_v4(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

fn mask_v6(len: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

impl FromStr for Cidr {
    type Err = CidrError;

    /// Parses `addr/len`, or a bare address as a single-host range.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let ip: IpAddr = addr.trim().parse().map_err(|_| CidrError::BadAddress {
            value: addr.to_owned(),
        })?;
        match len {
            None => Ok(Self::host(ip)),
            Some(l) => {
                let l = l.trim();
                // Only plain decimal digits: `+8` or `0x8` are not prefix lengths.
                let len: u32 = if !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()) {
                    l.parse().ok()
                } else {
                    None
                }
                .ok_or_else(|| CidrError::BadPrefixLength {
                    value: l.to_owned(),
                })?;
                Self::new(ip, len)
            }
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}
