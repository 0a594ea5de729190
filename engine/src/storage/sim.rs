//! [`SimDisk`]: a [`Storage`] over real files that also models what survives a power cut.
//!
//! The files are real, so the engine's memory maps and reads work unchanged and show what a
//! live process would see (the page cache). Beside them the simulator keeps, per inode, the
//! bytes as of its last successful `sync_data`, and for the data directory the entries as of
//! its last `sync_dir` plus the creations, renames and removals since. A power cut
//! ([`SimDisk::crash_image`]) then writes the directory a real disk could hold afterwards:
//!
//! - synced bytes and synced directory entries are kept exactly;
//! - of the operations on the directory since its last sync, any prefix is kept (each one
//!   atomic, as `rename` is);
//! - of each file's bytes written since its last sync, every 512-byte sector independently
//!   holds the old or the new contents (or, per file, all old or all new), and a size change
//!   is kept or lost.
//!
//! Faults: writes can fail with EIO or ENOSPC (after writing a random prefix), syncs with
//! EIO (the data stays in the "page cache" but is not durable: fsyncgate), and any call with
//! EINTR (no effect); [`SimDisk::power_cut_after`] makes the n-th mutating call and every
//! later one fail with EIO and no effect, as if the machine had stopped there.
//!
//! Everything random comes from one seed. The engine's background thread (summaries, spare
//! segments) interleaves with the writer by the OS scheduler, so a seed replays the same
//! faults and crash choices but not always the same interleaving.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

use super::{RealStorage, Storage};

/// Sector size for tearing.
const SECTOR: usize = 512;

/// A small, seedable generator (xorshift64*): the simulator must not depend on a crate's
/// stream staying the same across versions.
#[derive(Debug, Clone)]
pub struct SimRng(u64);

impl SimRng {
    /// A generator for `seed` (any value).
    pub fn new(seed: u64) -> SimRng {
        SimRng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        match n {
            0 => 0,
            n => self.next_u64() % n,
        }
    }

    /// True with probability `per_mille` / 1000.
    pub fn chance(&mut self, per_mille: u32) -> bool {
        self.below(1000) < per_mille as u64
    }
}

/// What faults to inject, in parts per thousand of calls.
#[derive(Debug, Clone, Copy, Default)]
pub struct SimFaults {
    /// Writes that fail with EIO after writing a random prefix.
    pub write_eio: u32,
    /// Writes that fail with ENOSPC after writing a random prefix.
    pub write_enospc: u32,
    /// File syncs that fail with EIO, leaving the data written but not durable.
    pub sync_eio: u32,
    /// Calls that fail with EINTR, having done nothing.
    pub eintr: u32,
}

#[derive(Debug)]
struct Tracked {
    /// Keeps the inode alive (so its number is never reused) and readable after unlink.
    handle: File,
    /// Its bytes as of the last successful sync (`None`: never synced).
    durable: Option<Vec<u8>>,
}

#[derive(Debug, Clone)]
enum DirOp {
    Link(String, u64),
    Rename(String, String),
    Unlink(String),
}

#[derive(Debug)]
struct State {
    rng: SimRng,
    faults: SimFaults,
    files: HashMap<u64, Tracked>,
    durable_dir: BTreeMap<String, u64>,
    dir_ops: Vec<DirOp>,
    ops: u64,
    cut_after: Option<u64>,
    dead: bool,
    injected: u64,
    full: bool,
}

/// The simulated disk under one data directory. Share it with the engine through
/// `EngineConfig::storage` (as an `Arc`).
#[derive(Debug)]
pub struct SimDisk {
    dir: PathBuf,
    state: Mutex<State>,
}

/// What [`SimDisk::crash_image`] chose, for a failing test to print.
#[derive(Debug, Clone, Default)]
pub struct CrashReport {
    /// Directory operations since the last directory sync, and how many were kept.
    pub dir_ops: usize,
    /// How many of them survived.
    pub dir_ops_kept: usize,
    /// Files whose contents differed from their synced bytes, and so were torn or mixed.
    pub files_torn: usize,
}

fn read_all(f: &File) -> io::Result<Vec<u8>> {
    let len = f.metadata()?.len() as usize;
    let mut buf = vec![0u8; len];
    let mut at = 0;
    while at < len {
        match f.read_at(&mut buf[at..], at as u64)? {
            0 => break,
            n => at += n,
        }
    }
    buf.truncate(at);
    Ok(buf)
}

fn ino(f: &File) -> io::Result<u64> {
    Ok(f.metadata()?.ino())
}

fn errno(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

impl SimDisk {
    /// A simulated disk for `dir` (created if missing). Whatever `dir` holds now counts as
    /// synced: a store reopened after a crash starts from its image.
    pub fn new(dir: &Path, seed: u64) -> io::Result<SimDisk> {
        fs::create_dir_all(dir)?;
        let disk = SimDisk {
            dir: dir.to_path_buf(),
            state: Mutex::new(State {
                rng: SimRng::new(seed),
                faults: SimFaults::default(),
                files: HashMap::new(),
                durable_dir: BTreeMap::new(),
                dir_ops: Vec::new(),
                ops: 0,
                cut_after: None,
                dead: false,
                injected: 0,
                full: false,
            }),
        };
        {
            let mut st = disk.state.lock();
            disk.snapshot_dir(&mut st, true)?;
        }
        Ok(disk)
    }

    /// Injects these faults from now on.
    pub fn set_faults(&self, faults: SimFaults) {
        self.state.lock().faults = faults;
    }

    /// The power goes off at the `n`-th mutating call from now (0: the next one): it and
    /// every later call fail with EIO and change nothing.
    pub fn power_cut_after(&self, n: u64) {
        let mut st = self.state.lock();
        st.cut_after = Some(st.ops + n);
    }

    /// A full disk: from now on a write or `set_len` that would make a file longer fails
    /// with ENOSPC (after writing what fits in the file's current length); overwriting
    /// allocated bytes still works, as on a real file system without copy-on-write.
    pub fn set_full(&self, full: bool) {
        self.state.lock().full = full;
    }

    /// Whether the power is off.
    pub fn is_cut(&self) -> bool {
        self.state.lock().dead
    }

    /// Mutating calls so far.
    pub fn ops(&self) -> u64 {
        self.state.lock().ops
    }

    /// Faults injected so far (not counting the power cut).
    pub fn faults_injected(&self) -> u64 {
        self.state.lock().injected
    }

    /// Writes into `to` (an empty directory) what the data directory could hold after a
    /// power cut now, choosing with the seed. The live files are left as they are.
    pub fn crash_image(&self, to: &Path) -> io::Result<CrashReport> {
        let mut guard = self.state.lock();
        let st = &mut *guard;
        st.dead = true;
        let mut report = CrashReport {
            dir_ops: st.dir_ops.len(),
            ..CrashReport::default()
        };
        let pending = st.dir_ops.len() as u64;
        let kept = st.rng.below(pending + 1) as usize;
        report.dir_ops_kept = kept;
        let mut names = st.durable_dir.clone();
        for op in &st.dir_ops[..kept] {
            match op {
                DirOp::Link(name, ino) => {
                    names.insert(name.clone(), *ino);
                }
                DirOp::Rename(from, to) => {
                    if let Some(ino) = names.remove(from) {
                        names.insert(to.clone(), ino);
                    }
                }
                DirOp::Unlink(name) => {
                    names.remove(name);
                }
            }
        }
        fs::create_dir_all(to)?;
        for (name, ino) in names {
            let Some(t) = st.files.get(&ino) else {
                continue;
            };
            let current = read_all(&t.handle)?;
            let old = t.durable.clone().unwrap_or_default();
            let bytes = if current == old {
                current
            } else {
                report.files_torn += 1;
                mix(&mut st.rng, &old, &current)
            };
            fs::write(to.join(&name), bytes)?;
        }
        Ok(report)
    }

    /// Counts a mutating call; fails it if the power is off or a fault is drawn.
    fn enter(&self, st: &mut State, write_like: bool, sync_like: bool) -> io::Result<Fault> {
        if st.dead {
            return Err(errno(libc::EIO));
        }
        if st.cut_after.is_some_and(|n| st.ops >= n) {
            st.dead = true;
            return Err(errno(libc::EIO));
        }
        st.ops += 1;
        let f = st.faults;
        if st.rng.chance(f.eintr) {
            st.injected += 1;
            return Err(errno(libc::EINTR));
        }
        if write_like && st.rng.chance(f.write_eio) {
            st.injected += 1;
            return Ok(Fault::Write(libc::EIO));
        }
        if write_like && st.rng.chance(f.write_enospc) {
            st.injected += 1;
            return Ok(Fault::Write(libc::ENOSPC));
        }
        if sync_like && st.rng.chance(f.sync_eio) {
            st.injected += 1;
            return Ok(Fault::Sync);
        }
        Ok(Fault::None)
    }

    /// The entry name of `path` if it lies in the data directory.
    fn name_of(&self, path: &Path) -> Option<String> {
        (path.parent()? == self.dir).then(|| path.file_name()?.to_str().map(str::to_string))?
    }

    fn track(&self, st: &mut State, f: &File) -> io::Result<u64> {
        let ino = ino(f)?;
        if let std::collections::hash_map::Entry::Vacant(v) = st.files.entry(ino) {
            v.insert(Tracked {
                handle: f.try_clone()?,
                durable: None,
            });
        }
        Ok(ino)
    }

    /// Makes the directory's current entries the durable ones (`all_synced`: and every
    /// file's current bytes, for a directory taken over as it is).
    fn snapshot_dir(&self, st: &mut State, all_synced: bool) -> io::Result<()> {
        let mut names = BTreeMap::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            if !entry.file_type()?.is_file() {
                continue;
            }
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let f = File::open(entry.path())?;
            let ino = self.track(st, &f)?;
            if all_synced {
                st.files.get_mut(&ino).expect("tracked").durable = Some(read_all(&f)?);
            }
            names.insert(name, ino);
        }
        st.durable_dir = names;
        st.dir_ops.clear();
        Ok(())
    }

    fn created(&self, path: &Path, f: io::Result<File>, existed: bool) -> io::Result<File> {
        let f = f?;
        let mut st = self.state.lock();
        let ino = self.track(&mut st, &f)?;
        if let (Some(name), false) = (self.name_of(path), existed) {
            st.dir_ops.push(DirOp::Link(name, ino));
        }
        Ok(f)
    }
}

/// What `enter` drew.
enum Fault {
    None,
    Write(i32),
    Sync,
}

/// The bytes a torn file could hold: `old` where the new bytes did not reach the disk.
fn mix(rng: &mut SimRng, old: &[u8], new: &[u8]) -> Vec<u8> {
    let len = match old.len() == new.len() || rng.chance(500) {
        true => new.len(),
        false => old.len(),
    };
    let mode = rng.below(3);
    let mut out = vec![0u8; len];
    for start in (0..len).step_by(SECTOR) {
        let end = (start + SECTOR).min(len);
        let keep_new = match mode {
            0 => true,
            1 => false,
            _ => rng.chance(500),
        };
        let src = if keep_new { new } else { old };
        for (i, b) in out[start..end].iter_mut().enumerate() {
            *b = src.get(start + i).copied().unwrap_or(0);
        }
    }
    out
}

impl Storage for SimDisk {
    fn create(&self, path: &Path) -> io::Result<File> {
        let existed = path.exists();
        self.enter(&mut self.state.lock(), false, false)?;
        self.created(path, RealStorage.create(path), existed)
    }

    fn create_new(&self, path: &Path) -> io::Result<File> {
        self.enter(&mut self.state.lock(), false, false)?;
        self.created(path, RealStorage.create_new(path), false)
    }

    fn write_at(&self, file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut st = self.state.lock();
        let fault = self.enter(&mut st, true, false)?;
        self.track(&mut st, file)?;
        match fault {
            Fault::Write(code) => {
                let part = st.rng.below(buf.len() as u64 + 1) as usize;
                file.write_all_at(&buf[..part], offset)?;
                Err(errno(code))
            }
            _ if st.full => {
                let room = file.metadata()?.len().saturating_sub(offset);
                let fits = (room as usize).min(buf.len());
                file.write_all_at(&buf[..fits], offset)?;
                match fits == buf.len() {
                    true => Ok(()),
                    false => Err(errno(libc::ENOSPC)),
                }
            }
            _ => file.write_all_at(buf, offset),
        }
    }

    fn set_len(&self, file: &File, len: u64) -> io::Result<()> {
        let mut st = self.state.lock();
        self.enter(&mut st, true, false)?;
        self.track(&mut st, file)?;
        if st.full && len > file.metadata()?.len() {
            return Err(errno(libc::ENOSPC));
        }
        file.set_len(len)
    }

    fn sync_data(&self, file: &File) -> io::Result<()> {
        let mut st = self.state.lock();
        let fault = self.enter(&mut st, false, true)?;
        let ino = self.track(&mut st, file)?;
        if let Fault::Sync = fault {
            // The pages stay in the cache, marked clean: not durable, and no retry will
            // write them (fsyncgate).
            return Err(errno(libc::EIO));
        }
        let bytes = read_all(file)?;
        st.files.get_mut(&ino).expect("tracked").durable = Some(bytes);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        let fault = self.enter(&mut st, false, true)?;
        if let Fault::Sync = fault {
            return Err(errno(libc::EIO));
        }
        if dir == self.dir {
            self.snapshot_dir(&mut st, false)?;
        }
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        self.enter(&mut st, false, false)?;
        let f = File::open(from)?;
        self.track(&mut st, &f)?;
        if let Ok(over) = File::open(to) {
            // The file renamed over lives on in the synced directory until the next sync.
            self.track(&mut st, &over)?;
        }
        fs::rename(from, to)?;
        if let (Some(a), Some(b)) = (self.name_of(from), self.name_of(to)) {
            st.dir_ops.push(DirOp::Rename(a, b));
        }
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        self.enter(&mut st, false, false)?;
        if let Ok(f) = File::open(path) {
            self.track(&mut st, &f)?;
        }
        fs::remove_file(path)?;
        if let Some(name) = self.name_of(path) {
            st.dir_ops.push(DirOp::Unlink(name));
        }
        Ok(())
    }
}
