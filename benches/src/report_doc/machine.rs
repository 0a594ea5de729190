//! What the numbers were measured on, read from `/proc` and the bench directory: the report
//! states it beside every table, since the same build gives 2× different numbers on another
//! disk or a busier machine.

use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};

/// `fdatasync`s one probe times: about 0.1 s on an idle disk here. The report probes before
/// and after the suites, since a disk shared with other work is fast or slow by the second
/// (samples here were either about 100 µs or about 4 ms while a build ran beside them).
const FSYNC_SAMPLES: usize = 500;
/// Bytes the probe writes before each `fdatasync`: one 256-byte event with its framing.
pub(super) const FSYNC_WRITE_BYTES: usize = 300;
/// The probe's file: written with zeroes and synced first, then overwritten in place, as the
/// engine's pre-zeroed segments are.
const FSYNC_FILE_BYTES: u64 = FSYNC_SAMPLES as u64 * 512;

/// The machine a report ran on. Every field that could not be read is `None`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Machine {
    /// `model name` of the first processor in `/proc/cpuinfo`.
    pub cpu: Option<String>,
    /// Processors the kernel lists.
    pub cores: usize,
    /// `MemTotal`, bytes.
    pub memory_bytes: Option<u64>,
    /// Kernel release (`/proc/sys/kernel/osrelease`).
    pub kernel: Option<String>,
    /// The mount holding the bench directory.
    pub mount: Option<Mount>,
    /// `fdatasync` after a [`FSYNC_WRITE_BYTES`] overwrite in the bench directory.
    pub fsync: Option<FsyncLatency>,
    /// Load average over the last minute when the run started and when it ended.
    pub load_start: Option<f64>,
    /// See `load_start`.
    pub load_end: Option<f64>,
    /// Whether this binary was built with optimizations (a debug build's numbers mean little).
    pub release_build: bool,
}

/// One line of `/proc/mounts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The device (or `tmpfs`, `overlay`…).
    pub device: String,
    /// Where it is mounted.
    pub point: PathBuf,
    /// Filesystem type, e.g. `ext4`.
    fs_type: String,
}

impl Mount {
    #[cfg(test)]
    pub(super) fn new(device: &str, point: &str, fs_type: &str) -> Mount {
        Mount {
            device: device.to_string(),
            point: point.into(),
            fs_type: fs_type.to_string(),
        }
    }

    /// Filesystem type, e.g. `ext4`.
    pub fn fs_type(&self) -> &str {
        &self.fs_type
    }
}

impl Machine {
    /// Reads the machine's facts, `dir` being the bench directory. Nothing here fails: a
    /// fact that cannot be read is `None`. `fsync` is left for the caller ([`fsync_samples`]).
    pub fn probe(dir: &Path) -> Machine {
        let read = |path: &str| std::fs::read_to_string(path).ok();
        let cpuinfo = read("/proc/cpuinfo").unwrap_or_default();
        let (cpu, cores) = parse_cpuinfo(&cpuinfo);
        let cores = if cores > 0 {
            cores
        } else {
            std::thread::available_parallelism().map_or(0, |n| n.get())
        };
        let mount = std::fs::canonicalize(dir)
            .ok()
            .and_then(|dir| mount_of(&read("/proc/mounts")?, &dir));
        Machine {
            cpu,
            cores,
            memory_bytes: read("/proc/meminfo").and_then(|m| parse_mem_total(&m)),
            kernel: read("/proc/sys/kernel/osrelease").map(|k| k.trim().to_string()),
            mount,
            fsync: None,
            load_start: load_average(),
            load_end: None,
            release_build: !cfg!(debug_assertions),
        }
    }
}

/// The one-minute load average, from `/proc/loadavg`.
pub(super) fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The first processor's model name and how many processors `/proc/cpuinfo` lists.
fn parse_cpuinfo(cpuinfo: &str) -> (Option<String>, usize) {
    let field = |line: &str, name: &str| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == name).then(|| value.trim().to_string())
    };
    let model = cpuinfo.lines().find_map(|l| field(l, "model name"));
    let cores = cpuinfo
        .lines()
        .filter(|l| field(l, "processor").is_some())
        .count();
    (model, cores)
}

/// `MemTotal` from `/proc/meminfo`, in bytes.
fn parse_mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut words = line["MemTotal:".len()..].split_whitespace();
    let kib: u64 = words.next()?.parse().ok()?;
    (words.next() == Some("kB")).then_some(kib * 1024)
}

/// The mount in `/proc/mounts` text holding `path` (absolute, symlinks resolved): the one
/// with the longest mount point that is an ancestor of it, the last such when mounts stack.
fn mount_of(mounts: &str, path: &Path) -> Option<Mount> {
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let device = unescape_mount_field(fields.next()?);
            let point = PathBuf::from(unescape_mount_field(fields.next()?));
            let fs_type = fields.next()?.to_string();
            path.starts_with(&point).then_some(Mount {
                device,
                point,
                fs_type,
            })
        })
        .fold(None, |best: Option<Mount>, m| match best {
            Some(b) if b.point.components().count() > m.point.components().count() => Some(b),
            _ => Some(m),
        })
}

/// `/proc/mounts` writes space, tab, newline and backslash as octal escapes (`\040`).
fn unescape_mount_field(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut rest = field;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let code = rest.get(at + 1..at + 4);
        match code.and_then(|c| u8::from_str_radix(c, 8).ok()) {
            Some(byte) => {
                out.push(char::from(byte));
                rest = &rest[at + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[at + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// How long an `fdatasync` took, over the samples of one or more probes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FsyncLatency {
    /// 10th percentile, µs.
    pub p10_us: f64,
    /// Median, µs: what DESIGN.md's single-event latency target adds its 150 µs to.
    pub p50_us: f64,
    /// 90th percentile, µs.
    pub p90_us: f64,
    /// How many syncs were timed.
    pub samples: usize,
}

impl FsyncLatency {
    /// The percentiles of `samples`; `None` if there is none.
    pub fn from_samples(mut samples: Vec<Duration>) -> Option<FsyncLatency> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let at = |q: f64| {
            let i = ((samples.len() - 1) as f64 * q).round() as usize;
            samples[i].as_nanos() as f64 / 1000.0
        };
        Some(FsyncLatency {
            p10_us: at(0.1),
            p50_us: at(0.5),
            p90_us: at(0.9),
            samples: samples.len(),
        })
    }
}

/// Times `fdatasync`s after overwriting [`FSYNC_WRITE_BYTES`] of a pre-zeroed, synced file in
/// `dir`: the cost the engine pays per durable append, which DESIGN.md's single-event latency
/// target is stated against. The file is deleted afterwards.
pub(super) fn fsync_samples(dir: &Path) -> Result<Vec<Duration>> {
    let probe = tempfile::Builder::new()
        .prefix("fsync-probe-")
        .tempfile_in(dir)
        .with_context(|| format!("creating a file in {}", dir.display()))?;
    let file: &File = probe.as_file();
    file.write_all_at(&vec![0; FSYNC_FILE_BYTES as usize], 0)?;
    file.sync_all()?;
    let data = [0x5a_u8; FSYNC_WRITE_BYTES];
    let mut samples = Vec::with_capacity(FSYNC_SAMPLES);
    for i in 0..FSYNC_SAMPLES as u64 {
        file.write_all_at(&data, i * 512)?;
        let began = Instant::now();
        file.sync_data()?;
        samples.push(began.elapsed());
    }
    ensure!(samples.len() == FSYNC_SAMPLES, "{} samples", samples.len());
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuinfo_gives_the_model_and_the_processor_count() {
        let cpuinfo = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n\n\
                       processor\t: 1\nmodel name\t: AMD EPYC 7B13\n";
        assert_eq!(
            parse_cpuinfo(cpuinfo),
            (Some("AMD EPYC 7B13".to_string()), 2)
        );
        assert_eq!(parse_cpuinfo(""), (None, 0));
    }

    #[test]
    fn meminfo_gives_bytes() {
        let meminfo = "MemTotal:       24598712 kB\nMemFree:          123 kB\n";
        assert_eq!(parse_mem_total(meminfo), Some(24_598_712 * 1024));
        assert_eq!(parse_mem_total("MemFree: 1 kB\n"), None);
    }

    #[test]
    fn the_deepest_mount_holding_the_directory_wins() {
        let mounts = "overlay / overlay rw 0 0\n\
                      /dev/vda1 /work ext4 rw,relatime 0 0\n\
                      tmpfs /work/tmp\\040dir tmpfs rw 0 0\n\
                      /dev/vdb /workspace xfs rw 0 0\n";
        let at = |p: &str| mount_of(mounts, Path::new(p)).map(|m| (m.device, m.fs_type));
        assert_eq!(at("/work/bench"), Some(("/dev/vda1".into(), "ext4".into())));
        assert_eq!(
            at("/work/tmp dir/x"),
            Some(("tmpfs".into(), "tmpfs".into()))
        );
        // A sibling whose name merely starts like a mount point is not under it.
        assert_eq!(
            at("/workspace2"),
            Some(("overlay".into(), "overlay".into()))
        );
        assert_eq!(at("/workspace/b"), Some(("/dev/vdb".into(), "xfs".into())));
    }

    #[test]
    fn fsync_probe_measures_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let samples = fsync_samples(dir.path()).unwrap();
        assert_eq!(samples.len(), FSYNC_SAMPLES);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn fsync_percentiles_come_from_all_samples() {
        let us = |n: u64| Duration::from_micros(n);
        // Bimodal, as on a disk shared with a build: the median falls where most samples are.
        let mut samples: Vec<Duration> = (0..60).map(|i| us(100 + i)).collect();
        samples.extend((0..41).map(|i| us(4_000 + i)));
        let f = FsyncLatency::from_samples(samples).unwrap();
        assert_eq!(
            (f.p10_us, f.p50_us, f.p90_us, f.samples),
            (110.0, 150.0, 4_030.0, 101)
        );
        assert_eq!(FsyncLatency::from_samples(vec![]), None);
    }
}
