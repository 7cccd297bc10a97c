//! The sampler on fake `/proc` and `/sys` trees: the shipped unit's `ProcSubset=pid` (no
//! `/proc/meminfo`, no `/proc/stat`, the cgroup visible), nothing readable, and the cgroup
//! `max` cases.

use super::*;

const PID: &str = "4242";

/// A fake tree under `dir`: `proc/4242/{stat,statm,cgroup}` with `proc/self` → `4242`, and the
/// given files under `sys/fs/cgroup`.
pub(crate) struct Fake {
    dir: tempfile::TempDir,
}

impl Fake {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("proc").join(PID)).unwrap();
        std::os::unix::fs::symlink(PID, dir.path().join("proc/self")).unwrap();
        std::fs::create_dir_all(dir.path().join("sys")).unwrap();
        Self { dir }
    }

    pub(crate) fn sources(&self) -> SystemSources {
        SystemSources {
            proc: self.dir.path().join("proc"),
            sys: self.dir.path().join("sys"),
        }
    }

    fn write(&self, rel: &str, text: &str) -> &Self {
        let path = self.dir.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
        self
    }

    /// `/proc/self/stat` with these CPU ticks (the line of a real process, fields 14 and 15).
    fn stat(&self, utime: u64, stime: u64) -> &Self {
        self.write(
            &format!("proc/{PID}/stat"),
            &format!(
                "{PID} (tradebaas main) S 1 {PID} {PID} 0 -1 4194560 2511 0 0 0 {utime} {stime} 0 0 \
                 20 0 9 0 133770 3133440 411 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 \
                 0 0 0 0 0 0 0 0 0 0 0\n"
            ),
        )
    }

    /// `/proc/self/statm` with `resident` pages.
    fn statm(&self, resident: u64) -> &Self {
        self.write(
            &format!("proc/{PID}/statm"),
            &format!("100000 {resident} 400 5 0 9000 0\n"),
        )
    }

    fn cgroup(&self, text: &str) -> &Self {
        self.write(&format!("proc/{PID}/cgroup"), text)
    }
}

fn page() -> u64 {
    procfs::page_size()
}

/// The shipped unit: `ProcSubset=pid` leaves `/proc/self` and the cgroup tree; `MemoryMax=1G`
/// on the service's cgroup, no limit on the slice.
pub(crate) fn proc_subset_pid() -> Fake {
    let f = Fake::new();
    // 256 MiB resident.
    f.statm((256 << 20) / page())
        .stat(1000, 500)
        .cgroup("0::/system.slice/tradebaas.service\n")
        .write(
            "sys/fs/cgroup/system.slice/tradebaas.service/memory.max",
            "1073741824\n",
        )
        .write("sys/fs/cgroup/system.slice/memory.max", "max\n");
    f
}

#[test]
fn under_proc_subset_pid_memory_is_measured_against_the_cgroup_limit() {
    let f = proc_subset_pid();
    let mut s = Sampler::new(f.sources());
    let t0 = Instant::now();
    let first = s.sample(t0);
    assert_eq!(first.rss_bytes, Some(256 << 20));
    assert_eq!(first.memory_limit_bytes, Some(1 << 30));
    assert_eq!(first.memory_limit_source, Some(LimitSource::Cgroup));
    assert_eq!(first.total_memory_bytes, None, "no /proc/meminfo");
    let pct = first.memory_percent.expect("memory known from the cgroup");
    assert!((pct - 25.0).abs() < 0.01, "{first:?}");
    // CPU needs two samples: unknown (not 0) at first, and the reason is given.
    assert_eq!(first.cpu_percent, None);
    assert!(
        first.unknown.iter().any(|u| u.starts_with("cpu:")),
        "{first:?}"
    );

    // Half a core for two seconds: 1 s of CPU (in ticks) more.
    let tck = procfs::ticks_per_second();
    f.stat(1000 + tck / 2, 500 + tck / 2);
    let second = s.sample(t0 + Duration::from_secs(2));
    let cpu = second.cpu_percent.expect("cpu known after two samples");
    assert!((cpu - 50.0).abs() < 0.01, "{second:?}");
    assert!(second.unknown.is_empty(), "{second:?}");
    // A sample closer than MIN_CPU_INTERVAL repeats the figure rather than dividing by ~0.
    f.stat(1000 + tck, 500 + tck);
    let third = s.sample(t0 + Duration::from_secs(2) + Duration::from_millis(1));
    assert_eq!(third.cpu_percent, second.cpu_percent);
}

#[test]
fn nothing_readable_is_unknown_never_zero() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Sampler::new(SystemSources {
        proc: dir.path().join("proc"),
        sys: dir.path().join("sys"),
    });
    let t0 = Instant::now();
    for at in [t0, t0 + Duration::from_secs(5)] {
        let st = s.sample(at);
        assert_eq!(st.memory_percent, None, "{st:?}");
        assert_eq!(st.cpu_percent, None, "{st:?}");
        assert_eq!(st.rss_bytes, None, "{st:?}");
        assert_eq!(st.memory_limit_bytes, None, "{st:?}");
        assert!(
            st.unknown.iter().any(|u| u.starts_with("memory:"))
                && st.unknown.iter().any(|u| u.starts_with("cpu:")),
            "{st:?}"
        );
    }

    // RSS readable, but no limit anywhere (cgroup `max` at every level, no meminfo): the
    // percentage is unknown, not 0 % of nothing.
    let f = Fake::new();
    f.statm(1000)
        .stat(1, 1)
        .cgroup("0::/system.slice/tradebaas.service\n")
        .write(
            "sys/fs/cgroup/system.slice/tradebaas.service/memory.max",
            "max\n",
        )
        .write("sys/fs/cgroup/memory.max", "max\n");
    let st = Sampler::new(f.sources()).sample(t0);
    assert_eq!(st.rss_bytes, Some(1000 * page()));
    assert_eq!(st.memory_percent, None, "{st:?}");
    let why = st
        .unknown
        .iter()
        .find(|u| u.starts_with("memory:"))
        .unwrap();
    assert!(why.contains("sets no memory limit"), "{why}");
    assert!(why.contains("meminfo"), "{why}");
}

#[test]
fn cgroup_max_means_no_limit_at_that_level_and_the_smallest_limit_wins() {
    let sys = tempfile::tempdir().unwrap();
    let write = |rel: &str, text: &str| {
        let p = sys.path().join("fs/cgroup").join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    let v2 = |path: &str| vec![(0, vec![], path.to_string())];
    // `max` on the service, 512 MiB on the slice: the slice's limit applies.
    write("a.slice/b.service/memory.max", "max\n");
    write("a.slice/memory.max", "536870912\n");
    assert_eq!(
        cgroup_memory_limit(sys.path(), &v2("/a.slice/b.service")),
        Ok(Some(512 << 20))
    );
    // A tighter limit below wins.
    write("a.slice/b.service/memory.max", "268435456\n");
    assert_eq!(
        cgroup_memory_limit(sys.path(), &v2("/a.slice/b.service")),
        Ok(Some(256 << 20))
    );
    // `max` everywhere readable: no limit (known), not an error.
    write("c.slice/memory.max", "max\n");
    assert_eq!(cgroup_memory_limit(sys.path(), &v2("/c.slice")), Ok(None));
    // Nothing readable: an error naming the file.
    let e = cgroup_memory_limit(sys.path(), &v2("/nowhere")).unwrap_err();
    assert!(e.contains("nowhere/memory.max"), "{e}");
    assert!(cgroup_memory_limit(sys.path(), &[]).is_err());
    // A cgroup v1 memory hierarchy; its "unlimited" is a huge number.
    write(
        "memory/docker/abc/memory.limit_in_bytes",
        "9223372036854771712\n",
    );
    write("memory/docker/memory.limit_in_bytes", "2147483648\n");
    let v1 = vec![
        (4, vec!["memory".to_string()], "/docker/abc".to_string()),
        (3, vec!["cpu".to_string()], "/docker/abc".to_string()),
    ];
    assert_eq!(cgroup_memory_limit(sys.path(), &v1), Ok(Some(2 << 30)));

    // With /proc/meminfo readable, the machine caps a larger cgroup limit; with no cgroup
    // limit the machine is the limit.
    assert_eq!(
        memory_limit(Some(8 << 30), Some(4 << 30)),
        Some((4 << 30, LimitSource::Meminfo))
    );
    assert_eq!(
        memory_limit(Some(1 << 30), Some(4 << 30)),
        Some((1 << 30, LimitSource::Cgroup))
    );
    assert_eq!(
        memory_limit(None, Some(4 << 30)),
        Some((4 << 30, LimitSource::Meminfo))
    );
    assert_eq!(memory_limit(None, None), None);
}

#[test]
fn meminfo_is_the_limit_where_it_is_readable_and_no_cgroup_limits() {
    let f = Fake::new();
    f.statm((512 << 20) / page())
        .stat(1, 1)
        .cgroup("0::/\n")
        .write("sys/fs/cgroup/memory.max", "max\n")
        .write(
            "proc/meminfo",
            "MemTotal:        2097152 kB\nMemFree:          100000 kB\n",
        );
    let st = Sampler::new(f.sources()).sample(Instant::now());
    assert_eq!(st.total_memory_bytes, Some(2 << 30));
    assert_eq!(st.memory_limit_source, Some(LimitSource::Meminfo));
    assert!((st.memory_percent.unwrap() - 25.0).abs() < 0.01, "{st:?}");
}

#[test]
fn parsers() {
    assert_eq!(parse_memory_max("max\n"), Some(LevelLimit::Unlimited));
    assert_eq!(parse_memory_max("1024\n"), Some(LevelLimit::Bytes(1024)));
    assert_eq!(parse_memory_max("lots"), None);
    assert_eq!(
        parse_limit_in_bytes("9223372036854771712"),
        Some(LevelLimit::Unlimited)
    );
    assert_eq!(parse_limit_in_bytes("4096"), Some(LevelLimit::Bytes(4096)));
    assert_eq!(
        parse_mem_total("MemFree: 1 kB\nMemTotal: 3 kB\n"),
        Some(3072)
    );
    assert_eq!(parse_mem_total("MemFree: 1 kB\n"), None);
    let t = Instant::now();
    assert_eq!(
        cpu_percent((t, 0), (t + Duration::from_secs(1), 100), 100),
        Some(100.0)
    );
    assert_eq!(
        cpu_percent((t, 10), (t + Duration::from_secs(1), 5), 100),
        None
    );
    assert_eq!(cpu_percent((t, 0), (t, 5), 100), None);
}

/// The real `/proc` of this test process: RSS known and positive (whatever hides the rest).
#[test]
fn the_real_proc_gives_this_process_rss() {
    let st = Sampler::new(SystemSources::default()).sample(Instant::now());
    assert!(st.rss_bytes.is_some_and(|r| r > 0), "{st:?}");
    if let Some(p) = st.memory_percent {
        assert!(p > 0.0 && p <= 100.0, "{st:?}");
    }
}
