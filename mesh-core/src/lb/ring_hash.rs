//! Consistent hashing on a ring (Envoy's and gRPC's `RING_HASH`).

use xxhash_rust::xxh64::xxh64;

use super::{LbHost, RING_SIZE_CAP};

/// A hash ring built once per host set.
///
/// Each host gets a share of the ring proportional to its weight. The ring size is the
/// smallest that gives the lightest host a whole entry at `min_ring_size` granularity,
/// bounded by `max_ring_size`; both bounds are first limited to [`RING_SIZE_CAP`]. The
/// `j`-th entry of a host sits at `xxh64("{key}_{j}", 0)`, so a host keeps its place on the
/// ring when other hosts come and go, and only about `1/n` of the keys move.
///
/// A pick takes the first entry at or after the request hash (wrapping) and walks on
/// past entries of unavailable hosts.
#[derive(Clone, Debug, Default)]
pub struct RingHash {
    ring: Vec<(u64, u32)>,
}

impl RingHash {
    /// Builds the ring from each host's stable key and weight, in host-index order.
    pub fn new<K: AsRef<[u8]>>(
        min_ring_size: u64,
        max_ring_size: u64,
        hosts: impl IntoIterator<Item = (K, u32)>,
    ) -> Self {
        let hosts: Vec<(K, u64)> = hosts
            .into_iter()
            .map(|(k, w)| (k, u64::from(w.max(1))))
            .collect();
        let total: u64 = hosts.iter().map(|(_, w)| w).sum();
        let Some(min_weight) = hosts.iter().map(|(_, w)| *w).min() else {
            return RingHash::default();
        };
        let max_size = max_ring_size.clamp(1, RING_SIZE_CAP) as f64;
        let min_size = (min_ring_size.clamp(1, RING_SIZE_CAP) as f64).min(max_size);
        let min_share = min_weight as f64 / total as f64;
        let scale = ((min_share * min_size).ceil() / min_share).min(max_size);

        let mut ring = Vec::with_capacity(scale as usize + hosts.len());
        let mut key_buf = Vec::new();
        let mut target = 0.0;
        let mut placed = 0u64;
        for (index, (key, weight)) in hosts.iter().enumerate() {
            target += scale * (*weight as f64 / total as f64);
            // At least one entry per host, so every host can be reached.
            let count = ((target.round() as u64).saturating_sub(placed)).max(1);
            placed += count;
            for j in 0..count {
                key_buf.clear();
                key_buf.extend_from_slice(key.as_ref());
                key_buf.push(b'_');
                key_buf.extend_from_slice(j.to_string().as_bytes());
                ring.push((xxh64(&key_buf, 0), index as u32));
            }
        }
        ring.sort_unstable();
        RingHash { ring }
    }

    /// Entries on the ring.
    pub fn len(&self) -> usize {
        self.ring.len()
    }

    /// Whether the ring is empty (no hosts).
    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }

    /// The host for `hash`: the first available host at or after it on the ring.
    pub fn pick<H: LbHost>(&self, hosts: &[H], hash: u64) -> Option<usize> {
        let len = self.ring.len();
        let start = self.ring.partition_point(|&(h, _)| h < hash);
        (0..len)
            .map(|k| self.ring[(start + k) % len].1 as usize)
            .find(|&i| hosts.get(i).is_some_and(LbHost::is_available))
    }
}
