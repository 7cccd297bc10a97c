//! The heartbeat's system sampler: the process's memory and CPU, read from sources the shipped
//! systemd unit leaves visible. `ProcSubset=pid` hides `/proc/meminfo` and `/proc/stat` (and
//! `ProtectProc=invisible` every other process), so nothing here needs them:
//! - **RSS** from `/proc/self/statm` (resident pages × page size);
//! - the **memory limit** from the process's own cgroup: `/proc/self/cgroup` names it, and the
//!   smallest `memory.max` of it and its ancestors under `/sys/fs/cgroup` is the limit (cgroup v2;
//!   `max` means no limit at that level; on a v1 memory hierarchy `memory.limit_in_bytes`).
//!   When `/proc/meminfo` is readable its `MemTotal` caps the limit (a cgroup allowed more than
//!   the machine has is limited by the machine), and is the limit when no cgroup sets one;
//! - **CPU** from `/proc/self/stat` (`utime + stime`, clock ticks) between two samples over the
//!   wall time between them: percent of one core. The first sample only sets the baseline.
//!
//! A figure that cannot be read is `None` (`null` in `/health`) with a line in
//! [`SystemStats::unknown`] saying why: never 0 %. The roots (`/proc`, `/sys`) are
//! [`SystemSources`], so tests build fake trees in a temporary directory.
//!
//! The Prometheus process collector reads `/proc/self/stat` as well, so
//! `process_resident_memory_bytes` and `process_cpu_seconds_total` stay right under the unit;
//! its `process_start_time_seconds` needs the boot time from `/proc/stat` and reads 0 there.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use crate::protocol::heartbeat::{LimitSource, SystemStats};

/// Where the sampler reads: the `/proc` and `/sys` roots (replaced in tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemSources {
    /// `/proc`; the sampler reads `<proc>/self/{statm,stat,cgroup}` and `<proc>/meminfo`.
    pub proc: PathBuf,
    /// `/sys`; the sampler reads `<sys>/fs/cgroup/…`.
    pub sys: PathBuf,
}

impl Default for SystemSources {
    fn default() -> Self {
        Self {
            proc: PathBuf::from("/proc"),
            sys: PathBuf::from("/sys"),
        }
    }
}

/// The `memory.max` (or v1 `memory.limit_in_bytes`) of one cgroup level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LevelLimit {
    Unlimited,
    Bytes(u64),
}

/// Parses a cgroup v2 `memory.max`: `max` or a byte count.
pub fn parse_memory_max(text: &str) -> Option<LevelLimit> {
    match text.trim() {
        "max" => Some(LevelLimit::Unlimited),
        n => n.parse().ok().map(LevelLimit::Bytes),
    }
}

/// Parses a cgroup v1 `memory.limit_in_bytes`: a byte count, where anything from 2^62 up is
/// the kernel's "no limit" (`9223372036854771712` on 4 KiB pages).
pub fn parse_limit_in_bytes(text: &str) -> Option<LevelLimit> {
    let n: u64 = text.trim().parse().ok()?;
    Some(if n >= 1 << 62 {
        LevelLimit::Unlimited
    } else {
        LevelLimit::Bytes(n)
    })
}

/// Parses `MemTotal` (in kB) out of `/proc/meminfo`, in bytes.
pub fn parse_mem_total(meminfo: &str) -> Option<u64> {
    meminfo.lines().find_map(|l| {
        let rest = l.strip_prefix("MemTotal:")?;
        let kb: u64 = rest.split_whitespace().next()?.parse().ok()?;
        kb.checked_mul(1024)
    })
}

/// A cgroup path (`/system.slice/tradebaas.service`) and its ancestors up to `/`, leaf first,
/// relative to the hierarchy's mount point.
fn cgroup_levels(path: &str) -> Vec<PathBuf> {
    let mut levels = Vec::new();
    let mut p = PathBuf::from(path.trim_start_matches('/'));
    loop {
        levels.push(p.clone());
        if !p.pop() {
            break;
        }
    }
    levels
}

/// The process's cgroup memory limit: the smallest limit set on its cgroup or an ancestor.
/// `Ok(None)` when every level readable says no limit; `Err` when no level could be read.
/// `cgroups` is `/proc/self/cgroup` as (hierarchy id, controllers, path).
pub fn cgroup_memory_limit(
    sys: &Path,
    cgroups: &[(u32, Vec<String>, String)],
) -> Result<Option<u64>, String> {
    let mount = sys.join("fs/cgroup");
    let mut files = Vec::new();
    for (hierarchy, controllers, path) in cgroups {
        if *hierarchy == 0 && controllers.is_empty() {
            for level in cgroup_levels(path) {
                files.push((
                    mount.join(&level).join("memory.max"),
                    parse_memory_max as fn(&str) -> Option<LevelLimit>,
                ));
            }
        } else if controllers.iter().any(|c| c == "memory") {
            for level in cgroup_levels(path) {
                files.push((
                    mount
                        .join("memory")
                        .join(&level)
                        .join("memory.limit_in_bytes"),
                    parse_limit_in_bytes as fn(&str) -> Option<LevelLimit>,
                ));
            }
        }
    }
    let mut read_any = false;
    let mut limit: Option<u64> = None;
    for (file, parse) in &files {
        let Some(level) = std::fs::read_to_string(file).ok().and_then(|t| parse(&t)) else {
            continue;
        };
        read_any = true;
        if let LevelLimit::Bytes(n) = level {
            limit = Some(limit.map_or(n, |l| l.min(n)));
        }
    }
    if read_any {
        Ok(limit)
    } else if files.is_empty() {
        Err("no memory cgroup in /proc/self/cgroup".into())
    } else {
        Err(format!(
            "no readable cgroup memory limit ({} not readable)",
            files[0].0.display()
        ))
    }
}

/// The memory limit to measure RSS against, from the cgroup limit and `MemTotal` (either may be
/// unknown): the smaller of the two known ones.
pub fn memory_limit(cgroup: Option<u64>, mem_total: Option<u64>) -> Option<(u64, LimitSource)> {
    match (cgroup, mem_total) {
        (Some(c), Some(m)) if m < c => Some((m, LimitSource::Meminfo)),
        (Some(c), _) => Some((c, LimitSource::Cgroup)),
        (None, Some(m)) => Some((m, LimitSource::Meminfo)),
        (None, None) => None,
    }
}

/// CPU use between two readings of `utime + stime` (clock ticks), as % of one core. `None`
/// when no time passed or the counter went backwards.
pub fn cpu_percent(
    previous: (Instant, u64),
    now: (Instant, u64),
    ticks_per_second: u64,
) -> Option<f64> {
    let wall = now.0.checked_duration_since(previous.0)?;
    let ticks = now.1.checked_sub(previous.1)?;
    if wall.is_zero() || ticks_per_second == 0 {
        return None;
    }
    Some(ticks as f64 / ticks_per_second as f64 / wall.as_secs_f64() * 100.0)
}

/// What `/proc/self` gave: RSS in bytes, CPU ticks, the cgroup lines; each or why not.
struct SelfReading {
    rss: Result<u64, String>,
    cpu_ticks: Result<u64, String>,
    cgroups: Result<Vec<(u32, Vec<String>, String)>, String>,
}

#[cfg(target_os = "linux")]
fn read_self(proc: &Path) -> SelfReading {
    let root = proc.join("self");
    let p = match procfs::process::Process::new_with_root(root.clone()) {
        Ok(p) => p,
        Err(e) => {
            let why = format!("{} not readable: {e}", root.display());
            return SelfReading {
                rss: Err(why.clone()),
                cpu_ticks: Err(why.clone()),
                cgroups: Err(why),
            };
        }
    };
    let page = procfs::page_size();
    SelfReading {
        rss: p
            .statm()
            .map_err(|e| format!("{}/statm not readable: {e}", root.display()))
            .map(|s| s.resident.saturating_mul(page)),
        cpu_ticks: p
            .stat()
            .map_err(|e| format!("{}/stat not readable: {e}", root.display()))
            .map(|s| s.utime.saturating_add(s.stime)),
        cgroups: p
            .cgroups()
            .map_err(|e| format!("{}/cgroup not readable: {e}", root.display()))
            .map(|c| {
                c.0.into_iter()
                    .map(|g| (g.hierarchy, g.controllers, g.pathname))
                    .collect()
            }),
    }
}

#[cfg(not(target_os = "linux"))]
fn read_self(_proc: &Path) -> SelfReading {
    let why = || "process statistics are read from /proc, which only Linux has".to_string();
    SelfReading {
        rss: Err(why()),
        cpu_ticks: Err(why()),
        cgroups: Err(why()),
    }
}

#[cfg(target_os = "linux")]
fn ticks_per_second() -> u64 {
    procfs::ticks_per_second()
}

#[cfg(not(target_os = "linux"))]
fn ticks_per_second() -> u64 {
    0
}

/// Reads the process's numbers from [`SystemSources`]. Keeps the previous CPU reading, because
/// CPU use is measured between two samples.
#[derive(Debug)]
pub struct Sampler {
    sources: SystemSources,
    ticks_per_second: u64,
    previous_cpu: Option<(Instant, u64)>,
    /// The last CPU figure, repeated for samples closer than [`MIN_CPU_INTERVAL`] to it.
    last_cpu: Option<f64>,
}

impl Sampler {
    /// A sampler reading `sources`; its first [`Sampler::sample`] sets the CPU baseline.
    pub fn new(sources: SystemSources) -> Self {
        Self {
            sources,
            ticks_per_second: ticks_per_second(),
            previous_cpu: None,
            last_cpu: None,
        }
    }

    /// One sample at `now` (the wall clock the CPU interval is measured on). The error rate is
    /// the caller's (left at 0).
    pub fn sample(&mut self, now: Instant) -> SystemStats {
        let own = read_self(&self.sources.proc);
        let mut unknown = Vec::new();

        let meminfo = self.sources.proc.join("meminfo");
        let mem_total = match std::fs::read_to_string(&meminfo) {
            Ok(t) => parse_mem_total(&t),
            Err(_) => None,
        };
        let cgroup = own
            .cgroups
            .and_then(|c| cgroup_memory_limit(&self.sources.sys, &c));
        let limit = memory_limit(cgroup.as_ref().ok().copied().flatten(), mem_total);
        let rss = match own.rss {
            Ok(r) => Some(r),
            Err(e) => {
                unknown.push(format!("memory: RSS unknown: {e}"));
                None
            }
        };
        let memory_percent = match (rss, limit) {
            (Some(r), Some((l, _))) if l > 0 => Some(r as f64 / l as f64 * 100.0),
            (Some(_), _) => {
                let cgroup = match &cgroup {
                    Ok(None) => "the cgroup sets no memory limit".to_string(),
                    Ok(Some(_)) => "the cgroup memory limit is 0".to_string(),
                    Err(e) => e.clone(),
                };
                unknown.push(format!(
                    "memory: no memory limit to measure RSS against: {cgroup}, and {} is not \
                     readable (ProcSubset=pid hides it)",
                    meminfo.display()
                ));
                None
            }
            (None, _) => None,
        };

        let cpu_percent = match own.cpu_ticks {
            Ok(ticks) => {
                let too_soon = self
                    .previous_cpu
                    .is_some_and(|(at, _)| now.saturating_duration_since(at) < MIN_CPU_INTERVAL);
                let cpu = if too_soon {
                    self.last_cpu
                } else {
                    let cpu = self
                        .previous_cpu
                        .and_then(|prev| cpu_percent(prev, (now, ticks), self.ticks_per_second));
                    self.previous_cpu = Some((now, ticks));
                    self.last_cpu = cpu;
                    cpu
                };
                if self.ticks_per_second == 0 {
                    unknown.push("cpu: clock ticks per second unknown".into());
                } else if cpu.is_none() {
                    unknown.push(
                        "cpu: measured between two samples; known after the first heartbeat round"
                            .into(),
                    );
                }
                cpu
            }
            Err(e) => {
                self.previous_cpu = None;
                self.last_cpu = None;
                unknown.push(format!("cpu: {e}"));
                None
            }
        };

        SystemStats {
            memory_percent,
            cpu_percent,
            rss_bytes: rss,
            memory_limit_bytes: limit.map(|(l, _)| l),
            memory_limit_source: limit.map(|(_, s)| s),
            total_memory_bytes: mem_total,
            error_rate_per_minute: 0.0,
            unknown,
        }
    }
}

/// How far apart two samples must be for a new CPU figure (over shorter intervals the figure is
/// mostly the rounding of the tick counter); a closer sample repeats the last figure.
pub const MIN_CPU_INTERVAL: Duration = Duration::from_millis(50);

#[cfg(all(test, target_os = "linux"))]
#[path = "sampler_tests.rs"]
pub(crate) mod tests;
