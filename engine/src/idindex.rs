//! The event-id index: the position of the event with a given id, which is how a retry is
//! recognised (DESIGN.md: retrying the same ids is idempotent, durably).
//!
//! Only the ids of segments not yet summarized are kept in memory ([`IdIndex::recent`], a
//! hash map per segment). A summarized segment's ids are in its id table on disk
//! (`idtable.rs`), and memory holds one filter over all of them (2 bytes per id) besides
//! each table's own header and filter: a new id, an append's usual case, costs one cache
//! miss in that filter and reads nothing; an id it says "maybe" for is looked up in the
//! tables, newest first (each table's filter, then a binary search of its entries). Memory
//! per event stays a few bytes however large the store grows.
//!
//! After an open the tables answer at once, each through its own filter, until the loader
//! (`ids.rs`) has taken the filter saved at the last clean close ([`SAVED_FILTER`]) or
//! built it from the tables.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use zerocopy::little_endian::U32;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::bloom::{self, SharedBlocked};
use crate::error::Corruption;
use crate::idtable::IdTable;

/// A summary loaded on open, with what its id table must be bound to (read with the summary
/// on open, not again).
#[derive(Debug, Clone)]
pub(crate) struct PendingIds {
    pub(crate) path: std::path::PathBuf,
    pub(crate) first_index: u64,
    /// The CRC32C of the summary's body.
    pub(crate) summary_crc: u32,
}

/// Event id → position, in memory. Ids come from clients, so the hasher is seeded per
/// process (foldhash), which keeps crafted ids from degrading the table. The id is kept as
/// two u64 words: a `u128` key is 16-byte aligned, which pads every entry to 32 bytes; as
/// words it takes 24.
#[derive(Debug, Default)]
pub(crate) struct IdMap(HashMap<[u64; 2], u64, foldhash::fast::RandomState>);

impl IdMap {
    fn key(id: u128) -> [u64; 2] {
        [(id >> 64) as u64, id as u64]
    }

    pub(crate) fn insert(&mut self, id: u128, position: u64) {
        self.0.insert(Self::key(id), position);
    }

    fn get(&self, id: u128) -> Option<u64> {
        self.0.get(&Self::key(id)).copied()
    }

    fn remove(&mut self, id: u128) {
        self.0.remove(&Self::key(id));
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    pub(crate) fn reserve(&mut self, n: usize) {
        self.0.reserve(n);
    }
}

/// The ids held in memory, a map per segment (by the Raft index of its first record), so
/// that a segment's ids leave memory in one move when its table takes them over. Ids are
/// added to the newest segment's; there are few segments here (those not yet summarized).
#[derive(Debug, Default)]
pub(crate) struct RecentIds(Vec<(u64, IdMap)>);

impl RecentIds {
    /// Adds `id` at `position`, stored in the segment starting at `segment`.
    pub(crate) fn insert(&mut self, segment: u64, id: u128, position: u64) {
        match self.0.last_mut() {
            Some((first, map)) if *first == segment => map.insert(id, position),
            _ => {
                let mut map = IdMap::default();
                map.insert(id, position);
                self.add(segment, map);
            }
        }
    }

    /// Adds the ids of the segment starting at `segment` (it has none here yet).
    pub(crate) fn add(&mut self, segment: u64, ids: IdMap) {
        let at = self.0.partition_point(|(first, _)| *first < segment);
        self.0.insert(at, (segment, ids));
    }

    /// Takes the ids of the segment starting at `segment` out (to be dropped outside the
    /// state lock).
    pub(crate) fn take(&mut self, segment: u64) -> Option<IdMap> {
        let at = self.0.iter().position(|(first, _)| *first == segment)?;
        Some(self.0.remove(at).1)
    }

    fn get(&self, id: u128) -> Option<u64> {
        self.0.iter().rev().find_map(|(_, map)| map.get(id))
    }

    /// Forgets `id` (a scavenge dropped its event).
    pub(crate) fn remove(&mut self, id: u128) {
        for (_, map) in &mut self.0 {
            map.remove(id);
        }
    }

    fn len(&self) -> usize {
        self.0.iter().map(|(_, map)| map.len()).sum()
    }
}

/// Bits per id of the store-wide filter, and its hashes: about 0.2 % false positives (each
/// costs a look at every table's own filter).
const FILTER_BITS_PER_ID: u64 = 16;
const FILTER_HASHES: u32 = 8;
/// Ids the smallest part of the filter is made for.
const FILTER_PART_MIN: u64 = 1 << 20;

/// A part of the filter, made for `capacity` ids of which `used` are reserved.
#[derive(Debug)]
struct Part {
    filter: Arc<SharedBlocked>,
    capacity: u64,
    used: u64,
}

/// The filter over every id in the tables. A full part is never added to: the next is as
/// large as all before it together, so a store of n ids asks O(log n) parts.
#[derive(Debug, Default)]
pub(crate) struct IdFilter {
    parts: Vec<Part>,
}

impl IdFilter {
    /// The part to add `n` ids to, with room reserved for them.
    pub(crate) fn reserve(&mut self, n: u64) -> Arc<SharedBlocked> {
        match self.parts.last_mut() {
            Some(p) if p.used + n <= p.capacity => {
                p.used += n;
                p.filter.clone()
            }
            _ => {
                let before: u64 = self.parts.iter().map(|p| p.capacity).sum();
                let capacity = n.max(before).max(FILTER_PART_MIN);
                let filter = Arc::new(SharedBlocked::new(
                    capacity,
                    FILTER_BITS_PER_ID,
                    FILTER_HASHES,
                ));
                self.parts.push(Part {
                    filter: filter.clone(),
                    capacity,
                    used: n,
                });
                filter
            }
        }
    }

    /// An empty part for `n` ids, to be filled by its owner alone and then added full
    /// ([`IdFilter::add_full`]): no atomic operations while it is filled.
    pub(crate) fn private(n: u64) -> SharedBlocked {
        SharedBlocked::new(n, FILTER_BITS_PER_ID, FILTER_HASHES)
    }

    /// Adds a part made by [`IdFilter::private`] that holds `n` ids.
    pub(crate) fn add_full(&mut self, filter: SharedBlocked, n: u64) {
        self.parts.push(Part {
            filter: Arc::new(filter),
            capacity: n,
            used: n,
        });
    }

    fn may_contain(&self, key: u64) -> bool {
        self.parts.iter().any(|p| p.filter.may_contain(key))
    }
}

/// File name of the store-wide filter saved at a clean close (`ids.rs`).
pub(crate) const SAVED_FILTER: &str = "ids.qflt";
/// First bytes of a saved filter.
const SAVED_MAGIC: [u8; 8] = *b"QUIVIDF\x01";
/// Bytes of a saved filter's header.
const SAVED_HEADER_BYTES: usize = 32;

/// A saved filter's header: magic | tables u32 | parts u32 | hashes u32 | reserved u32 |
/// body CRC32C u32 | CRC32C of the header's first 28 bytes u32; all little-endian.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct SavedHeader {
    magic: [u8; 8],
    tables: U32,
    parts: U32,
    hashes: U32,
    reserved: U32,
    body_crc: U32,
    header_crc: U32,
}

const _: () = assert!(std::mem::size_of::<SavedHeader>() == SAVED_HEADER_BYTES);

/// Why a lookup could not tell whether an id is stored.
#[derive(Debug)]
pub(crate) enum IdUnknown {
    /// Some summaries' ids are still being read, or a table is not checked yet: wait for the
    /// loader ([`IdIndex::loaded`]) and ask again.
    Loading,
    /// A checked table's entry no longer reads back: stored data is damaged.
    Damaged(Corruption),
}

/// What the id index holds, for tests and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IdIndexStats {
    /// Ids held in memory: those of segments not yet summarized (or whose table could not
    /// be used).
    pub in_memory: u64,
    /// Id tables in use, and the ids in them.
    pub tables: u64,
    /// Ids in the tables.
    pub in_tables: u64,
    /// Bytes of the store-wide filter over the tables' ids.
    pub filter_bytes: u64,
    /// The filter saved at the last clean close was taken, not rebuilt from the tables.
    pub filter_from_file: bool,
    /// Lookups that went to the tables since open (an id the filter did not rule out, or
    /// any id while there was no filter).
    pub table_lookups: u64,
    /// The loader is done: every table is checked and in the filter, and every summary
    /// without one has its ids in memory.
    pub loaded: bool,
}

/// The event-id index; see the module's comment.
#[derive(Debug)]
pub(crate) struct IdIndex {
    /// Ids of the records whose segment has no table in `tables`.
    pub(crate) recent: RecentIds,
    /// The id tables of summarized segments, by first index.
    pub(crate) tables: Vec<Arc<IdTable>>,
    pub(crate) filter: IdFilter,
    /// Every table's ids are in `filter`.
    pub(crate) filtered: bool,
    /// Every entry of every table passed the loader's check.
    pub(crate) checked: bool,
    /// The tables (first index, summary checksum) that the saved filter taken at open was
    /// bound to (empty if none was taken): while they are the ones in use, the file already
    /// holds this filter.
    saved_for: Vec<(u64, u32)>,
    /// Summaries whose ids are in neither `recent` nor `tables` yet: the loader reads them.
    pub(crate) untabled: Vec<PendingIds>,
    /// Lookups that went to the tables.
    table_lookups: AtomicU64,
}

impl Default for IdIndex {
    fn default() -> Self {
        IdIndex {
            recent: RecentIds::default(),
            tables: Vec::new(),
            filter: IdFilter::default(),
            filtered: true,
            checked: true,
            saved_for: Vec::new(),
            untabled: Vec::new(),
            table_lookups: AtomicU64::new(0),
        }
    }
}

impl IdIndex {
    /// The position of the stored event whose id is `id`, if any.
    pub(crate) fn position(&self, id: u128) -> Result<Option<u64>, IdUnknown> {
        if let Some(p) = self.recent.get(id) {
            return Ok(Some(p));
        }
        if !self.untabled.is_empty() {
            return Err(IdUnknown::Loading);
        }
        if self.filtered
            && (cfg!(feature = "mutation-id-filter-blind")
                || !self.filter.may_contain(bloom::id_key(id)))
        {
            return Ok(None);
        }
        if !self.tables.is_empty() {
            self.table_lookups.fetch_add(1, Ordering::Relaxed);
        }
        for t in self.tables.iter().rev() {
            let found = match t.lookup(id) {
                Err(_) if cfg!(feature = "mutation-id-table-guess") => None,
                Err(doubt) if self.checked => {
                    return Err(IdUnknown::Damaged(Corruption {
                        file: t.path().to_path_buf(),
                        offset: 0,
                        detail: doubt.0,
                    }))
                }
                // Not checked yet: the loader will find the damage and read the ids from
                // the summary instead.
                Err(_) => return Err(IdUnknown::Loading),
                Ok(found) => found,
            };
            if let Some(p) = found {
                return Ok(Some(p));
            }
        }
        Ok(None)
    }

    /// Whether every lookup can be answered now (none waits for the loader to read a
    /// summary without a table).
    pub(crate) fn answers(&self) -> bool {
        self.untabled.is_empty()
    }

    /// Whether the loader is done (see [`IdIndexStats::loaded`]).
    pub(crate) fn loaded(&self) -> bool {
        self.untabled.is_empty() && self.filtered && self.checked
    }

    pub(crate) fn stats(&self) -> IdIndexStats {
        IdIndexStats {
            in_memory: self.recent.len() as u64,
            tables: self.tables.len() as u64,
            in_tables: self.tables.iter().map(|t| t.len()).sum(),
            filter_bytes: self.filter.parts.iter().map(|p| p.filter.bytes()).sum(),
            filter_from_file: !self.saved_for.is_empty(),
            table_lookups: self.table_lookups.load(Ordering::Relaxed),
            loaded: self.loaded(),
        }
    }

    /// Right after the summaries are loaded: opens the id table of each of `summaries`. The
    /// tables answer at once; the ids of a summary without a usable one wait for the loader.
    /// Whether every summary had one.
    pub(crate) fn open_tables(&mut self, dir: &Path, summaries: &[PendingIds]) -> bool {
        for p in summaries {
            match IdTable::open(dir, p.first_index, p.summary_crc) {
                Some(t) => self.tables.push(Arc::new(t)),
                None => self.untabled.push(p.clone()),
            }
        }
        self.filtered = self.tables.is_empty();
        self.checked = self.tables.is_empty();
        self.untabled.is_empty()
    }

    /// The store-wide filter to save at a clean close, bound to the tables it covers (their
    /// first indexes and summary checksums); `None` unless the loader is done.
    pub(crate) fn saved(&self) -> Option<Vec<u8>> {
        if !self.loaded() || self.tables.is_empty() || self.binding() == self.saved_for {
            return None;
        }
        let mut body = Vec::new();
        for (first, crc) in self.binding() {
            body.extend_from_slice(&first.to_le_bytes());
            body.extend_from_slice(&crc.to_le_bytes());
        }
        for p in &self.filter.parts {
            for n in [p.capacity, p.used, p.filter.bytes()] {
                body.extend_from_slice(&n.to_le_bytes());
            }
        }
        for p in &self.filter.parts {
            p.filter.save(&mut body);
        }
        let mut h = SavedHeader {
            magic: SAVED_MAGIC,
            tables: U32::new(u32::try_from(self.tables.len()).ok()?),
            parts: U32::new(u32::try_from(self.filter.parts.len()).ok()?),
            hashes: U32::new(FILTER_HASHES),
            reserved: U32::new(0),
            body_crc: U32::new(crc32c::crc32c(&body)),
            header_crc: U32::new(0),
        };
        h.header_crc = U32::new(crc32c::crc32c(&h.as_bytes()[..28]));
        let mut out = h.as_bytes().to_vec();
        out.extend_from_slice(&body);
        Some(out)
    }

    /// The tables in use, as a saved filter is bound to them.
    fn binding(&self) -> Vec<(u64, u32)> {
        self.tables
            .iter()
            .map(|t| (t.first_index(), t.summary_crc()))
            .collect()
    }

    /// Right after open, before the loader checks the tables: takes the filter saved as
    /// `bytes` if it is intact and was saved for exactly the tables in use (so it holds
    /// every id in them), and no filter was built meanwhile. Whether it was taken.
    pub(crate) fn take_saved(&mut self, bytes: &[u8]) -> bool {
        if self.filtered || !self.filter.parts.is_empty() {
            return false;
        }
        match parse_saved(bytes, &self.tables) {
            Some(parts) => {
                self.filter.parts = parts;
                self.filtered = true;
                self.saved_for = self.binding();
                true
            }
            None => false,
        }
    }

    /// Adds a table whose ids are in the filter already, in its place by first index.
    pub(crate) fn insert_table(&mut self, table: Arc<IdTable>) {
        let at = self
            .tables
            .partition_point(|t| t.first_index() < table.first_index());
        if self
            .tables
            .get(at)
            .is_some_and(|t| t.first_index() == table.first_index())
        {
            self.tables[at] = table;
        } else {
            self.tables.insert(at, table);
        }
    }

    /// Stops using the table of the segment starting at `first_index` (its ids must be in
    /// `recent` by now).
    pub(crate) fn remove_table(&mut self, first_index: u64) {
        self.tables.retain(|t| t.first_index() != first_index);
    }
}

/// The parts of a saved filter, if it is intact and bound to exactly `tables`.
fn parse_saved(bytes: &[u8], tables: &[Arc<IdTable>]) -> Option<Vec<Part>> {
    let (h, body) = SavedHeader::read_from_prefix(bytes).ok()?;
    let sound = h.magic == SAVED_MAGIC
        && h.header_crc.get() == crc32c::crc32c(&h.as_bytes()[..28])
        && h.hashes.get() == FILTER_HASHES
        && h.body_crc.get() == crc32c::crc32c(body);
    let unbound = cfg!(feature = "mutation-id-filter-unbound");
    if !sound || (h.tables.get() as usize != tables.len() && !unbound) {
        return None;
    }
    let mut c = crate::format::Cursor::new(body, "saved id filter");
    for i in 0..h.tables.get() as usize {
        let (first, crc) = (c.u64().ok()?, c.u32().ok()?);
        let bound = tables
            .get(i)
            .is_some_and(|t| t.first_index() == first && t.summary_crc() == crc);
        if !bound && !unbound {
            return None;
        }
    }
    let mut sizes = Vec::new();
    for _ in 0..h.parts.get() {
        let (capacity, used, bytes) = (c.u64().ok()?, c.u64().ok()?, c.u64().ok()?);
        sizes.push((capacity, used, usize::try_from(bytes).ok()?));
    }
    let mut parts = Vec::with_capacity(sizes.len());
    for (capacity, used, n) in sizes {
        let filter = SharedBlocked::from_bytes(c.take(n).ok()?, FILTER_HASHES)?;
        parts.push(Part {
            filter: Arc::new(filter),
            capacity,
            used,
        });
    }
    (c.offset() == body.len()).then_some(parts)
}
