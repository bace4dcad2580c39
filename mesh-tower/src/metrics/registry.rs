//! The storage behind the metrics: interned strings, series keyed by small copyable keys,
//! atomic cells. Reads are lock-free (an `ArcSwap` of an immutable map); a new string or
//! series takes a mutex and republishes the map, which happens once per distinct label
//! set, never per request.

use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;

/// Maps keyed per request (label strings, series keys): foldhash, several times faster than
/// SipHash on these short keys, seeded per process. Strings from outside are capped at
/// [`MAX_INTERNED`] per interner and series keys are built from their ids, so a crafted key
/// set cannot grow the maps without bound.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Most distinct strings per interner (peers, services, clusters): label values come from
/// outside (authorities, peer identities), so their number is bounded.
pub(crate) const MAX_INTERNED: usize = 4096;

/// The id of `unknown`, interned first by every interner: callers that know a label is
/// `unknown` use it without a lookup, and a string the full interner refuses gets it too
/// (so an overflow lands in the one `unknown` series, never in a second one that renders
/// the same).
pub(crate) const UNKNOWN: u32 = 0;

/// What an [`Interner`] holds: text (`str`) or bytes not yet read as text (`[u8]`: a
/// peer's metadata header, checked once when it is first seen rather than on every
/// request).
pub(crate) trait Interned: Eq + Hash + 'static {
    /// `unknown`, id [`UNKNOWN`] in every interner.
    const UNKNOWN: &'static Self;
    /// A shared copy.
    fn to_arc(&self) -> Arc<Self>;
    /// The bytes it is made of (what [`recent`] compares).
    fn bytes(&self) -> &[u8];
}

impl Interned for str {
    const UNKNOWN: &'static str = "unknown";
    fn to_arc(&self) -> Arc<str> {
        Arc::from(self)
    }
    fn bytes(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl Interned for [u8] {
    const UNKNOWN: &'static [u8] = b"unknown";
    fn to_arc(&self) -> Arc<[u8]> {
        Arc::from(self)
    }
    fn bytes(&self) -> &[u8] {
        self
    }
}

/// Each interner's (and series map's) own number, so that [`recent`] never answers one
/// interner with another's id.
static NEXT_SERIAL: AtomicU64 = AtomicU64::new(1);

/// Strings (or byte strings) to small ids, lock-free for the ones seen before.
#[derive(Debug)]
pub(crate) struct Interner<T: ?Sized + Interned = str> {
    ids: ArcSwap<HashMap<Arc<T>, u32>>,
    names: ArcSwap<Vec<Arc<T>>>,
    write: Mutex<()>,
    serial: u64,
}

impl<T: ?Sized + Interned> Default for Interner<T> {
    fn default() -> Self {
        let unknown = T::UNKNOWN.to_arc();
        let mut ids = HashMap::default();
        ids.insert(Arc::clone(&unknown), UNKNOWN);
        Self {
            ids: ArcSwap::from_pointee(ids),
            names: ArcSwap::from_pointee(vec![unknown]),
            write: Mutex::new(()),
            serial: NEXT_SERIAL.fetch_add(1, Ordering::Relaxed),
        }
    }
}

impl<T: ?Sized + Interned> Interner<T> {
    /// The id of `s` when it was interned before.
    pub(crate) fn get(&self, s: &T) -> Option<u32> {
        if let Some(id) = recent::find(self.serial, Key::Exact, s.bytes()) {
            return Some(id);
        }
        let id = self.ids.load().get(s).copied()?;
        recent::remember(self.serial, Key::Exact, s.bytes(), id);
        Some(id)
    }

    /// The id of `s`, adding it when new ([`UNKNOWN`] when full).
    pub(crate) fn intern(&self, s: &T) -> u32 {
        if let Some(id) = recent::find(self.serial, Key::Exact, s.bytes()) {
            return id;
        }
        let id = self.find_or_add(s);
        recent::remember(self.serial, Key::Exact, s.bytes(), id);
        id
    }

    /// The id of what `derive` makes of `raw` (the host of an authority, say), remembered
    /// per thread by `raw` itself: a repeated `raw` skips `derive` and the map.
    pub(crate) fn intern_derived(&self, raw: &T, derive: impl FnOnce(&T) -> &T) -> u32 {
        if let Some(id) = recent::find(self.serial, Key::Derived, raw.bytes()) {
            return id;
        }
        let id = self.find_or_add(derive(raw));
        recent::remember(self.serial, Key::Derived, raw.bytes(), id);
        id
    }

    /// This interner's serial (unique in the process).
    pub(crate) fn serial(&self) -> u64 {
        self.serial
    }

    fn find_or_add(&self, s: &T) -> u32 {
        if let Some(id) = self.ids.load().get(s) {
            return *id;
        }
        let _w = self.write.lock().unwrap_or_else(PoisonError::into_inner);
        let ids = self.ids.load_full();
        if let Some(id) = ids.get(s) {
            return *id;
        }
        if ids.len() >= MAX_INTERNED {
            return UNKNOWN;
        }
        let id = ids.len() as u32;
        let name = s.to_arc();
        let mut names = Vec::clone(&self.names.load_full());
        names.push(Arc::clone(&name));
        self.names.store(Arc::new(names));
        let mut next = HashMap::clone(&ids);
        next.insert(name, id);
        self.ids.store(Arc::new(next));
        id
    }

    /// The string of an id (`unknown` for an id it never gave).
    pub(crate) fn name(&self, id: u32) -> Arc<T> {
        self.names
            .load()
            .get(id as usize)
            .cloned()
            .unwrap_or_else(|| T::UNKNOWN.to_arc())
    }
}

/// Which lookups [`recent`] remembers: a key itself, or a raw value the key was derived
/// from (the two never answer each other).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Exact,
    Derived,
}

/// The last few ids this thread looked up, by interner. A connection's requests repeat
/// the same Host and the same peer metadata (a few hundred bytes of base64): a hit here
/// is one compare of the bytes instead of hashing them and probing the shared map. Ids
/// never change once given, so a remembered one stays right; the slots are reused in
/// turn, so many distinct keys only make it miss.
mod recent {
    use std::cell::RefCell;

    use super::Key;
    use crate::ring::{self, Ring};

    const SLOTS: usize = 8;
    /// Longer keys are not kept (the memory stays with the thread).
    const MAX_KEY: usize = 4096;

    struct Slot {
        interner: u64,
        key_kind: Key,
        id: u32,
        key: Vec<u8>,
    }

    thread_local! {
        static RECENT: RefCell<Ring<Slot, SLOTS>> = const {
            RefCell::new(Ring::new([const {
                Slot {
                    interner: 0,
                    key_kind: Key::Exact,
                    id: 0,
                    key: Vec::new(),
                }
            }; SLOTS]))
        };
    }

    pub(super) fn find(interner: u64, key_kind: Key, key: &[u8]) -> Option<u32> {
        ring::find(&RECENT, |s| {
            (s.interner == interner && s.key_kind == key_kind && s.key == key).then_some(s.id)
        })
    }

    pub(super) fn remember(interner: u64, key_kind: Key, key: &[u8], id: u32) {
        if key.len() > MAX_KEY {
            return;
        }
        ring::fill(&RECENT, |slot| {
            slot.interner = interner;
            slot.key_kind = key_kind;
            slot.id = id;
            slot.key.clear();
            slot.key.extend_from_slice(key);
        });
    }
}

/// Series by key; the value is created once, from the key, under the write lock.
#[derive(Debug)]
pub(crate) struct SeriesMap<K, V> {
    map: ArcSwap<HashMap<K, Arc<V>>>,
    write: Mutex<()>,
    serial: u64,
}

impl<K, V> Default for SeriesMap<K, V> {
    fn default() -> Self {
        Self {
            map: ArcSwap::from_pointee(HashMap::default()),
            write: Mutex::new(()),
            serial: NEXT_SERIAL.fetch_add(1, Ordering::Relaxed),
        }
    }
}

impl<K, V> SeriesMap<K, V> {
    /// This map's own number (shared with the interners'), for a cache of its series kept
    /// outside it to tell maps apart.
    pub(crate) fn serial(&self) -> u64 {
        self.serial
    }
}

impl<K: Hash + Eq + Copy, V> SeriesMap<K, V> {
    /// The series of `key`, made by `make` the first time.
    pub(crate) fn get_or_insert(&self, key: K, make: impl FnOnce() -> V) -> Arc<V> {
        if let Some(v) = self.map.load().get(&key) {
            return Arc::clone(v);
        }
        let _w = self.write.lock().unwrap_or_else(PoisonError::into_inner);
        let map = self.map.load_full();
        if let Some(v) = map.get(&key) {
            return Arc::clone(v);
        }
        let v = Arc::new(make());
        let mut next = HashMap::clone(&map);
        next.insert(key, Arc::clone(&v));
        self.map.store(Arc::new(next));
        v
    }

    /// Every key and series.
    pub(crate) fn entries(&self) -> Vec<(K, Arc<V>)> {
        self.map
            .load()
            .iter()
            .map(|(k, v)| (*k, Arc::clone(v)))
            .collect()
    }

    /// Every series, for rendering.
    pub(crate) fn all(&self) -> Vec<Arc<V>> {
        self.map.load().values().cloned().collect()
    }
}

/// A cumulative histogram over fixed bounds.
#[derive(Debug)]
pub(crate) struct Histogram {
    pub(crate) bounds: &'static [f64],
    /// One cell per bound plus `+Inf`; not cumulative (summed when rendered).
    pub(crate) counts: Box<[AtomicU64]>,
    /// The sum in units of `1 / sum_scale`.
    pub(crate) sum: AtomicU64,
    pub(crate) sum_scale: f64,
}

impl Histogram {
    pub(crate) fn new(bounds: &'static [f64], sum_scale: f64) -> Self {
        Self {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
            sum_scale,
        }
    }

    /// Records `value`, given in units of `1 / sum_scale` (microseconds for a histogram in
    /// milliseconds with scale 1000).
    pub(crate) fn observe(&self, scaled: u64) {
        let value = scaled as f64 / self.sum_scale;
        let i = self
            .bounds
            .iter()
            .position(|b| value <= *b)
            .unwrap_or(self.bounds.len());
        if let Some(c) = self.counts.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        self.sum.fetch_add(scaled, Ordering::Relaxed);
    }
}

/// A counter with its label set.
#[derive(Debug)]
pub(crate) struct Counter {
    pub(crate) labels: Box<str>,
    pub(crate) value: AtomicU64,
}

impl Counter {
    pub(crate) fn new(labels: String) -> Self {
        Self {
            labels: labels.into_boxed_str(),
            value: AtomicU64::new(0),
        }
    }

    pub(crate) fn inc(&self) {
        self.value.fetch_add(1, Ordering::Relaxed);
    }
}

/// Appends `name="value"` (escaped as the text format requires) to `out`.
pub(crate) fn push_label(out: &mut String, name: &str, value: &str) {
    if !out.is_empty() {
        out.push(',');
    }
    out.push_str(name);
    out.push_str("=\"");
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::host_of;

    #[test]
    fn interner_is_stable_and_bounded() {
        let i = Interner::default();
        assert_eq!(i.intern("unknown"), UNKNOWN);
        assert_eq!(&*i.name(UNKNOWN), "unknown");
        let a = i.intern("a");
        assert_eq!(i.intern("a"), a);
        assert_ne!(i.intern("b"), a);
        assert_eq!(&*i.name(a), "a");
        for n in 0..MAX_INTERNED + 5 {
            i.intern(&n.to_string());
        }
        assert_eq!(i.intern("one too many"), UNKNOWN);
        assert_eq!(&*i.name(u32::MAX), "unknown");
    }

    #[test]
    fn a_byte_interner_knows_what_it_was_given() {
        let i = Interner::<[u8]>::default();
        assert_eq!(i.get(b"unknown"), Some(UNKNOWN));
        assert_eq!(i.get(b"peer"), None);
        let id = i.intern(b"peer");
        assert_ne!(id, UNKNOWN);
        assert_eq!(i.get(b"peer"), Some(id));
        assert_eq!(&*i.name(id), b"peer");
        assert_eq!(&*i.name(u32::MAX), b"unknown");
    }

    #[test]
    fn remembered_ids_stay_with_their_interner_and_their_kind_of_key() {
        let a = Interner::default();
        let b = Interner::default();
        // The same text, different ids in different interners, on one thread.
        let _ = b.intern("x");
        let ax = a.intern("payment");
        let bx = b.intern("payment");
        assert_ne!(ax, bx);
        for _ in 0..3 {
            assert_eq!(a.intern("payment"), ax);
            assert_eq!(b.get("payment"), Some(bx));
        }
        // A derived key is found by its raw value, which is never taken for a key itself.
        assert_eq!(a.intern_derived("payment:8080", host_of), ax);
        assert_eq!(a.intern_derived("payment:8080", |_| "other"), ax);
        assert_eq!(a.get("payment:8080"), None);
        let raw = a.intern("payment:8080");
        assert_ne!(raw, ax);
        assert_eq!(a.intern_derived("payment:8080", host_of), ax);
        // More keys than the thread remembers: each still finds its own id.
        let ids: Vec<u32> = (0..40).map(|n| a.intern(&format!("svc-{n}"))).collect();
        for (n, id) in ids.iter().enumerate().rev() {
            assert_eq!(a.get(&format!("svc-{n}")), Some(*id));
            assert_eq!(&*a.name(*id), format!("svc-{n}"));
        }
        // Another thread has its own memory and the same ids.
        let a = std::sync::Arc::new(a);
        let other = std::sync::Arc::clone(&a);
        let from_there = std::thread::spawn(move || other.intern_derived("payment:9090", host_of))
            .join()
            .expect("thread");
        assert_eq!(from_there, ax);
    }

    #[test]
    fn histogram_buckets() {
        static B: [f64; 3] = [1.0, 10.0, 100.0];
        let h = Histogram::new(&B, 1000.0);
        h.observe(500); // 0.5
        h.observe(10_000); // 10
        h.observe(1_000_000); // 1000
        let counts: Vec<u64> = h.counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        assert_eq!(counts, [1, 1, 0, 1]);
        assert_eq!(h.sum.load(Ordering::Relaxed), 1_010_500);
    }

    #[test]
    fn labels_are_escaped() {
        let mut s = String::new();
        push_label(&mut s, "a", "x\"y\\z\n");
        push_label(&mut s, "b", "");
        assert_eq!(s, r#"a="x\"y\\z\n",b="""#);
    }
}
