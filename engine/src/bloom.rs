//! Bloom filters for the per-segment tables (event ids, stream names): a filter says "not
//! here" for certain and "maybe" otherwise, so a lookup skips most tables without reading
//! them. Keys are 64-bit hashes; a filter is stored as little-endian u64 words, bit `i` of
//! the filter being bit `i % 64` of word `i / 64`.
//!
//! Two layouts: [`Bloom`] spreads a key's bits over the whole filter (the id tables);
//! [`Blocked`] keeps them in one 64-byte block chosen by the key, so that asking costs one
//! cache miss per filter, not several (the stream tables, which a new stream's name is
//! checked against, every one of them). [`SharedBlocked`] is a [`Blocked`] that keys are
//! added to while others ask it (the store-wide filter of event ids, `ids.rs`).

use std::sync::atomic::{AtomicU64, Ordering};

/// A filter over 64-bit keys.
#[derive(Debug)]
pub(crate) struct Bloom {
    words: Vec<u64>,
    hashes: u32,
}

impl Bloom {
    /// A filter of `keys` with `bits_per_key` bits each (at least one word) and `hashes`
    /// hashes.
    pub(crate) fn with_keys(keys: &[u64], bits_per_key: u64, hashes: u32) -> Bloom {
        let n = (keys.len() as u64 * bits_per_key).div_ceil(64).max(1);
        let mut words = vec![0u64; n as usize];
        for key in keys {
            for bit in bits(*key, n * 64, hashes) {
                words[(bit / 64) as usize] |= 1 << (bit % 64);
            }
        }
        Bloom { words, hashes }
    }

    /// The filter stored as `bytes` (a whole number of words, at least one), or `None`.
    pub(crate) fn from_bytes(bytes: &[u8], hashes: u32) -> Option<Bloom> {
        let words = words_of(bytes, 1, hashes)?;
        Some(Bloom { words, hashes })
    }

    /// The filter as stored.
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        bytes_of(&self.words)
    }

    /// False when `key` was certainly not among the keys.
    pub(crate) fn may_contain(&self, key: u64) -> bool {
        let total = self.words.len() as u64 * 64;
        bits(key, total, self.hashes)
            .all(|bit| self.words[(bit / 64) as usize] & (1 << (bit % 64)) != 0)
    }
}

/// A filter whose keys each set their bits in one 512-bit block (a cache line).
#[derive(Debug)]
pub(crate) struct Blocked {
    words: Vec<u64>,
    hashes: u32,
}

/// Words in a block of [`Blocked`].
const BLOCK_WORDS: usize = 8;

impl Blocked {
    /// A filter of `keys` with about `bits_per_key` bits each (at least one block).
    pub(crate) fn with_keys(keys: &[u64], bits_per_key: u64, hashes: u32) -> Blocked {
        let mut filter = Blocked::empty(keys.len() as u64, bits_per_key, hashes);
        filter.insert_all(keys);
        filter
    }

    /// An empty filter for up to `keys` keys of about `bits_per_key` bits each.
    pub(crate) fn empty(keys: u64, bits_per_key: u64, hashes: u32) -> Blocked {
        let blocks = (keys * bits_per_key).div_ceil(512).max(1) as usize;
        Blocked {
            words: vec![0u64; blocks * BLOCK_WORDS],
            hashes,
        }
    }

    /// Adds `keys` (see [`insert_all`]).
    pub(crate) fn insert_all(&mut self, keys: &[u64]) {
        insert_all(&mut self.words, self.hashes, keys);
    }

    /// The filter stored as `bytes` (a whole number of blocks, at least one), or `None`.
    pub(crate) fn from_bytes(bytes: &[u8], hashes: u32) -> Option<Blocked> {
        let words = words_of(bytes, BLOCK_WORDS, hashes)?;
        Some(Blocked { words, hashes })
    }

    /// The filter as stored.
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        bytes_of(&self.words)
    }

    /// False when `key` was certainly not among the keys.
    pub(crate) fn may_contain(&self, key: u64) -> bool {
        let at = block_of(key, self.words.len() / BLOCK_WORDS) * BLOCK_WORDS;
        let block = &self.words[at..at + BLOCK_WORDS];
        block_bits(key, self.hashes).all(|bit| block[(bit / 64) as usize] & (1 << (bit % 64)) != 0)
    }
}

/// A [`Blocked`] filter of fixed size that keys are added to through `&self`, for a set
/// that grows while it is asked. Adding is a relaxed `fetch_or`: whoever must see a key
/// learns of it through the lock that publishes what the key stands for.
#[derive(Debug)]
pub(crate) struct SharedBlocked {
    words: Box<[AtomicU64]>,
    hashes: u32,
}

impl SharedBlocked {
    /// An empty filter for up to `keys` keys of about `bits_per_key` bits each.
    pub(crate) fn new(keys: u64, bits_per_key: u64, hashes: u32) -> SharedBlocked {
        let blocks = (keys * bits_per_key).div_ceil(512).max(1) as usize;
        let words = (0..blocks * BLOCK_WORDS)
            .map(|_| AtomicU64::new(0))
            .collect();
        SharedBlocked { words, hashes }
    }

    fn block(&self, key: u64) -> &[AtomicU64] {
        let at = block_of(key, self.words.len() / BLOCK_WORDS) * BLOCK_WORDS;
        &self.words[at..at + BLOCK_WORDS]
    }

    /// Adds `keys` while no one else has the filter: no atomic operations (see
    /// [`insert_all`]).
    pub(crate) fn insert_all(&mut self, keys: &[u64]) {
        insert_all(&mut self.words, self.hashes, keys);
    }

    /// Adds `key`: one atomic OR per word of its block that lacks one of its bits.
    pub(crate) fn insert(&self, key: u64) {
        let mut masks = [0u64; BLOCK_WORDS];
        for bit in block_bits(key, self.hashes) {
            masks[(bit / 64) as usize] |= 1 << (bit % 64);
        }
        for (word, mask) in self.block(key).iter().zip(masks) {
            if mask != 0 && word.load(Ordering::Relaxed) & mask != mask {
                word.fetch_or(mask, Ordering::Relaxed);
            }
        }
    }

    /// False when `key` was certainly not added.
    pub(crate) fn may_contain(&self, key: u64) -> bool {
        let block = self.block(key);
        block_bits(key, self.hashes)
            .all(|bit| block[(bit / 64) as usize].load(Ordering::Relaxed) & (1 << (bit % 64)) != 0)
    }

    /// Bytes it takes.
    pub(crate) fn bytes(&self) -> u64 {
        self.words.len() as u64 * 8
    }

    /// The filter's words, little-endian, appended to `out`.
    pub(crate) fn save(&self, out: &mut Vec<u8>) {
        for w in self.words.iter() {
            out.extend_from_slice(&w.load(Ordering::Relaxed).to_le_bytes());
        }
    }

    /// The filter saved as `bytes` (a whole number of blocks, at least one), or `None`.
    pub(crate) fn from_bytes(bytes: &[u8], hashes: u32) -> Option<SharedBlocked> {
        let AtomicWords(words) = words_of(bytes, BLOCK_WORDS, hashes)?;
        Some(SharedBlocked { words, hashes })
    }
}

/// A filter word that its owner can set bits in without atomic operations.
trait Word {
    fn word(&mut self) -> &mut u64;
}

impl Word for u64 {
    fn word(&mut self) -> &mut u64 {
        self
    }
}

impl Word for AtomicU64 {
    fn word(&mut self) -> &mut u64 {
        self.get_mut()
    }
}

/// Adds `keys` to the blocked filter `words` of `hashes` hashes. A filter larger than the
/// caches costs a miss per key, so a group of keys has its blocks read first, all at once
/// (the loads do not depend on each other, so their misses overlap), and only then its bits
/// set.
fn insert_all<W: Word>(words: &mut [W], hashes: u32, keys: &[u64]) {
    let blocks = words.len() / BLOCK_WORDS;
    for group in keys.chunks(16) {
        let touched = group.iter().fold(0, |acc, k| {
            acc ^ *words[block_of(*k, blocks) * BLOCK_WORDS].word()
        });
        std::hint::black_box(touched);
        for key in group {
            let at = block_of(*key, blocks) * BLOCK_WORDS;
            for bit in block_bits(*key, hashes) {
                *words[at + (bit / 64) as usize].word() |= 1 << (bit % 64);
            }
        }
    }
}

/// The words a filter of `hashes` hashes is stored as, if `bytes` are a whole number (at
/// least one) of `unit` words and `hashes` is not 0.
fn words_of<W: FromIterator<u64>>(bytes: &[u8], unit: usize, hashes: u32) -> Option<W> {
    if bytes.is_empty() || !bytes.len().is_multiple_of(unit * 8) || hashes == 0 {
        return None;
    }
    let words = bytes.chunks_exact(8);
    Some(
        words
            .map(|w| u64::from_le_bytes(w.try_into().expect("8 bytes")))
            .collect(),
    )
}

/// Words made atomic as they are collected, with no list of plain words in between.
struct AtomicWords(Box<[AtomicU64]>);

impl FromIterator<u64> for AtomicWords {
    fn from_iter<I: IntoIterator<Item = u64>>(words: I) -> Self {
        AtomicWords(words.into_iter().map(AtomicU64::new).collect())
    }
}

/// A filter's words as stored.
fn bytes_of(words: &[u64]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// The block of `key` among `blocks`: its high half, scaled (no division).
fn block_of(key: u64, blocks: usize) -> usize {
    (((key >> 32) * blocks as u64) >> 32) as usize
}

/// The bits of `key` inside its block: double hashing over its low half.
fn block_bits(key: u64, hashes: u32) -> impl Iterator<Item = u64> {
    let (h1, h2) = (key as u32 as u64, (mix(key) as u32 | 1) as u64);
    (0..u64::from(hashes)).map(move |i| h1.wrapping_add(i.wrapping_mul(h2)) % 512)
}

/// The filter bits of `key` in a filter of `total` bits: double hashing.
fn bits(key: u64, total: u64, hashes: u32) -> impl Iterator<Item = u64> {
    let (h1, h2) = (key, mix(key) | 1);
    (0..u64::from(hashes)).map(move |i| h1.wrapping_add(i.wrapping_mul(h2)) % total)
}

/// The key of an event id. Ids are chosen by clients, so they are mixed rather than taken as
/// they come (a crafted id only costs a false positive, never a wrong answer).
pub(crate) fn id_key(id: u128) -> u64 {
    mix(mix(id as u64) ^ (id >> 64) as u64)
}

/// The key of a stream name: FNV-1a over its bytes, mixed. Stable across processes and
/// versions, since it is stored.
pub(crate) fn name_key(name: &str) -> u64 {
    let h = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    mix(h)
}

/// SplitMix64's finalizer.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keys the filters of these tests hold.
    fn keys() -> Vec<u64> {
        (0..10_000u64).map(mix).collect()
    }

    /// Every one of [`keys`] is "maybe", and fewer than `max` of 100,000 others.
    fn keys_maybe_others_rarely(may_contain: impl Fn(u64) -> bool, max: usize) {
        assert!(keys().iter().all(|k| may_contain(*k)));
        let false_positives = (10_000..110_000u64)
            .filter(|i| may_contain(mix(*i)))
            .count();
        assert!(false_positives < max, "{false_positives} of 100,000");
    }

    #[test]
    fn every_key_is_maybe_and_few_others_are() {
        let b = Bloom::with_keys(&keys(), 10, 7);
        keys_maybe_others_rarely(|k| b.may_contain(k), 2_000);
        let back = Bloom::from_bytes(&b.to_bytes(), 7).unwrap();
        keys_maybe_others_rarely(|k| back.may_contain(k), 2_000);
    }

    #[test]
    fn a_blocked_filter_says_maybe_for_every_key_and_rarely_for_others() {
        let b = Blocked::with_keys(&keys(), 10, 7);
        keys_maybe_others_rarely(|k| b.may_contain(k), 3_000);
        let back = Blocked::from_bytes(&b.to_bytes(), 7).unwrap();
        keys_maybe_others_rarely(|k| back.may_contain(k), 3_000);
        assert!(
            Blocked::from_bytes(&[0; 56], 7).is_none(),
            "not a whole block"
        );
        let one = Blocked::with_keys(&[], 10, 7);
        assert!(!one.may_contain(mix(1)), "an empty filter says no");
    }

    #[test]
    fn a_shared_filter_says_maybe_for_every_key_added_and_rarely_for_others() {
        let b = SharedBlocked::new(10_000, 16, 8);
        assert!(!b.may_contain(mix(1)), "an empty filter says no");
        for k in keys() {
            b.insert(k);
        }
        // 16 bits and 8 hashes a key: well under 1 % (about 0.2 % measured).
        keys_maybe_others_rarely(|k| b.may_contain(k), 600);
        assert_eq!(b.bytes(), 20_032);
        // One filled by its owner alone first, the same.
        let mut shared = SharedBlocked::new(10_000, 16, 8);
        shared.insert_all(&keys());
        keys_maybe_others_rarely(|k| shared.may_contain(k), 600);
        assert_eq!(shared.bytes(), 20_032);
        // Saved and read back, the same.
        let mut saved = Vec::new();
        shared.save(&mut saved);
        let back = SharedBlocked::from_bytes(&saved, 8).unwrap();
        keys_maybe_others_rarely(|k| back.may_contain(k), 600);
        assert!(
            SharedBlocked::from_bytes(&saved[8..], 8).is_none(),
            "not whole blocks"
        );
    }

    /// The store-wide id filter's shape (16 bits, 8 hashes) full to its capacity: the rate
    /// of false positives the docs quote (`cargo test -p quiver-engine --lib
    /// false_positives -- --nocapture` prints it: 0.197 % when written).
    #[test]
    fn a_full_shared_filter_has_about_a_fifth_of_a_percent_false_positives() {
        let b = SharedBlocked::new(200_000, 16, 8);
        for i in 0..200_000u64 {
            b.insert(mix(i));
        }
        let others = 1_000_000u64;
        let fp = (200_000..200_000 + others)
            .filter(|i| b.may_contain(mix(*i)))
            .count();
        let rate = fp as f64 * 100.0 / others as f64;
        eprintln!("false positives: {fp} of {others} ({rate:.3} %)");
        assert!(rate < 0.3, "{rate} %");
    }

    #[test]
    fn stored_bytes_that_are_not_words_are_refused() {
        assert!(Bloom::from_bytes(&[], 7).is_none());
        assert!(Bloom::from_bytes(&[0; 12], 7).is_none());
        assert!(Bloom::from_bytes(&[0; 16], 0).is_none());
    }
}
