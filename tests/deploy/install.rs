//! deploy/install.sh (staged with DESTDIR) and the systemd unit's `systemd-analyze` verify and
//! security score.

use super::*;

/// `deploy/install.sh ARGS` with `env`, from the repository root; (exit code, stdout+stderr).
fn install_sh(args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> (i32, String) {
    let out = Command::new("sh")
        .arg(root().join("deploy/install.sh"))
        .args(args)
        .env_remove("DESTDIR")
        .envs(env.iter().map(|(k, v)| (*k, *v)))
        .current_dir(root())
        .output()
        .expect("run deploy/install.sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn install_sh_stages_idempotently_and_uninstall_keeps_config_and_credentials() {
    let dest = tempfile::tempdir().unwrap();
    let env = [("DESTDIR", dest.path().as_os_str())];
    let args = ["--binary", BIN];
    let (code, text) = install_sh(&args, &env);
    assert_eq!(code, 0, "first install failed:\n{text}");
    assert!(text.contains("systemctl not called"), "{text}");

    let bin = dest.path().join("usr/local/bin/tradebaas");
    let unit = dest.path().join("etc/systemd/system/tradebaas.service");
    let config = dest.path().join("etc/tradebaas/config.toml");
    let credentials = dest.path().join("etc/tradebaas/credentials");
    let docs = dest.path().join("usr/local/share/doc/tradebaas");
    assert_eq!(mode(&bin), 0o755);
    assert_eq!(std::fs::read(&bin).unwrap(), std::fs::read(BIN).unwrap());
    assert_eq!(mode(&credentials), 0o600);
    assert_eq!(std::fs::read(&credentials).unwrap(), b"");
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        std::fs::read_to_string(root().join("config/production.example.toml")).unwrap()
    );
    for doc in ["README.md", "OPERATIONS.md", "ARCHITECTURE.md"] {
        assert!(docs.join(doc).is_file(), "{doc} not installed");
    }
    let unit_text = std::fs::read_to_string(&unit).unwrap();
    assert!(
        unit_text.contains(
            "\nExecStart=/usr/local/bin/tradebaas --log-format json run --config /etc/tradebaas/config.toml"
        ),
        "{unit_text}"
    );
    // Documentation= names the files where they were installed.
    let doc_line = unit_text
        .lines()
        .find(|l| l.starts_with("Documentation="))
        .unwrap();
    for url in doc_line["Documentation=".len()..].split_whitespace() {
        let path = url.strip_prefix("file://").expect("file:// URL");
        let staged = dest.path().join(path.trim_start_matches('/'));
        assert!(staged.is_file(), "{url} does not name an installed file");
    }
    systemd_analyze_verify(dest.path(), &unit_text);

    // An operator edits both files; a second run (an upgrade) keeps them.
    std::fs::write(
        &config,
        "# edited by the operator\n[server]\nlisten = \"127.0.0.1:3001\"\n",
    )
    .unwrap();
    std::fs::write(
        &credentials,
        "DERIBIT_CLIENT_ID=x\nDERIBIT_CLIENT_SECRET=y\n",
    )
    .unwrap();
    let (code, text) = install_sh(&args, &env);
    assert_eq!(code, 0, "second install failed:\n{text}");
    assert!(
        text.contains("kept the existing /etc/tradebaas/config.toml"),
        "{text}"
    );
    assert!(
        std::fs::read_to_string(&config)
            .unwrap()
            .starts_with("# edited by the operator")
    );
    assert_eq!(
        std::fs::read_to_string(&credentials).unwrap(),
        "DERIBIT_CLIENT_ID=x\nDERIBIT_CLIENT_SECRET=y\n"
    );
    assert_eq!(mode(&credentials), 0o600);
    assert_eq!(std::fs::read_to_string(&unit).unwrap(), unit_text);

    let (code, text) = install_sh(&["--uninstall"], &env);
    assert_eq!(code, 0, "uninstall failed:\n{text}");
    assert!(text.contains("kept /etc/tradebaas"), "{text}");
    assert!(text.contains("/var/lib/tradebaas"), "{text}");
    assert!(!bin.exists() && !unit.exists() && !docs.exists());
    assert!(config.is_file() && credentials.is_file());
    // Uninstall is idempotent as well.
    let (code, text) = install_sh(&["--uninstall"], &env);
    assert_eq!(code, 0, "second uninstall failed:\n{text}");
}

#[test]
fn install_sh_honours_prefix_and_config() {
    let dest = tempfile::tempdir().unwrap();
    let env = [("DESTDIR", dest.path().as_os_str())];
    let config = dest.path().join("mine.toml");
    std::fs::write(&config, "[server]\nlisten = \"127.0.0.1:3999\"\n").unwrap();
    let (code, text) = install_sh(
        &[
            "--prefix",
            "/opt/tb",
            "--config",
            config.to_str().unwrap(),
            "--binary",
            BIN,
        ],
        &env,
    );
    assert_eq!(code, 0, "{text}");
    assert_eq!(mode(&dest.path().join("opt/tb/bin/tradebaas")), 0o755);
    let unit =
        std::fs::read_to_string(dest.path().join("etc/systemd/system/tradebaas.service")).unwrap();
    assert!(
        unit.contains("\nExecStart=/opt/tb/bin/tradebaas "),
        "{unit}"
    );
    assert!(
        unit.contains("\nDocumentation=file:///opt/tb/share/doc/tradebaas/OPERATIONS.md "),
        "{unit}"
    );
    assert!(
        dest.path()
            .join("opt/tb/share/doc/tradebaas/README.md")
            .is_file()
    );
    assert_eq!(
        std::fs::read_to_string(dest.path().join("etc/tradebaas/config.toml")).unwrap(),
        "[server]\nlisten = \"127.0.0.1:3999\"\n"
    );

    // A configuration the daemon's parser rejects is refused (exit 2), naming check-config.
    let dest2 = tempfile::tempdir().unwrap();
    std::fs::write(&config, "[server]\nlisten = \"not an address\"\n").unwrap();
    let (code, text) = install_sh(
        &["--config", config.to_str().unwrap(), "--binary", BIN],
        &[("DESTDIR", dest2.path().as_os_str())],
    );
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("check-config"), "{text}");
}

#[test]
fn install_sh_refuses_without_systemd() {
    // A PATH with the shell tools but no systemctl, and no DESTDIR: a live install is refused.
    let tools = tempfile::tempdir().unwrap();
    for tool in [
        "sh", "sed", "id", "install", "mkdir", "rm", "rmdir", "chmod", "mv", "cmp", "grep", "cat",
        "pwd",
    ] {
        for dir in ["/usr/bin", "/bin"] {
            let p = Path::new(dir).join(tool);
            if p.exists() {
                let _ = std::os::unix::fs::symlink(&p, tools.path().join(tool));
                break;
            }
        }
    }
    let dest_probe = tempfile::tempdir().unwrap();
    // A missing --config and --binary: should the systemd check ever regress, the script still
    // refuses before it writes anything to this machine (the message then differs: a failure).
    let no_config = dest_probe.path().join("missing.toml");
    let no_config = no_config.to_str().unwrap();
    let prefix = dest_probe.path().to_str().unwrap();
    let install = [
        "--prefix",
        prefix,
        "--binary",
        "/nonexistent/tradebaas",
        "--config",
        no_config,
    ];
    for args in [&install[..], &["--prefix", prefix, "--uninstall"][..]] {
        let out = Command::new(tools.path().join("sh"))
            .arg(root().join("deploy/install.sh"))
            .args(args)
            .env_remove("DESTDIR")
            .env("PATH", tools.path())
            .env("HOME", dest_probe.path())
            .current_dir(root())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("systemd is required"), "{err}");
        assert!(
            err.contains("systemctl"),
            "the message names systemctl: {err}"
        );
        assert!(
            err.contains("DESTDIR"),
            "the message names the way out: {err}"
        );
    }
}

/// `systemd-analyze verify` on the staged unit (its ExecStart pointed at the staged binary, the
/// only path that differs from a live install), where systemd-analyze exists.
fn systemd_analyze_verify(dest: &Path, unit_text: &str) {
    let Some(tool) = systemd_analyze() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let staged_bin = dest.join("usr/local/bin/tradebaas");
    let text = unit_text.replace(
        "\nExecStart=/usr/local/bin/tradebaas ",
        &format!("\nExecStart={} ", staged_bin.display()),
    );
    let unit = dir.path().join("tradebaas.service");
    std::fs::write(&unit, text).unwrap();
    let out = Command::new(tool)
        .arg("verify")
        .arg(&unit)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // A container without systemd's own units cannot resolve the [Install]/After= targets: that
    // is the host, not the unit.
    if !out.status.success() && text.contains("Unit sysinit.target not found") {
        eprintln!("*** SKIP systemd-analyze verify: this host has no systemd units ***\n{text}");
        return;
    }
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{text}"
    );
}

/// `systemd-analyze`, or `None` with a loud message (TRADEBAAS_REQUIRE_SYSTEMD_ANALYZE makes it
/// a failure).
fn systemd_analyze() -> Option<&'static str> {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Some("systemd-analyze");
    }
    eprintln!("*** SKIP: systemd-analyze not installed (Debian package `systemd`) ***");
    if std::env::var_os("TRADEBAAS_REQUIRE_SYSTEMD_ANALYZE").is_some() {
        panic!("TRADEBAAS_REQUIRE_SYSTEMD_ANALYZE is set but systemd-analyze is missing");
    }
    None
}

/// The highest `systemd-analyze security` exposure the shipped unit may have. 1.1 is what the
/// unit reaches without an IP allow-list and a RootDirectory= (see the comments in the unit).
const MAX_EXPOSURE: f64 = 1.1;

#[test]
fn shipped_unit_exposure_score() {
    let Some(tool) = systemd_analyze() else {
        return;
    };
    let out = Command::new(tool)
        .args(["security", "--offline=true", "--no-pager"])
        .arg(root().join("deploy/tradebaas.service"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level for tradebaas.service:"))
        .unwrap_or_else(|| panic!("no overall exposure line:\n{text}"));
    let score: f64 = line
        .split(':')
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the score in {line:?}"));
    eprintln!("systemd-analyze security: {line}");
    assert!(
        score <= MAX_EXPOSURE,
        "exposure {score} > {MAX_EXPOSURE}:\n{text}"
    );
    // The hardening keeps what the daemon needs.
    let unit = std::fs::read_to_string(root().join("deploy/tradebaas.service")).unwrap();
    for needed in [
        "\nType=notify\n",
        "\nNotifyAccess=main\n",
        "\nWatchdogSec=30s\n",
        "\nRestrictAddressFamilies=AF_UNIX AF_INET AF_INET6\n",
    ] {
        assert!(unit.contains(needed), "the unit lost {needed:?}");
    }
    assert!(
        !unit.lines().any(|l| l.starts_with("IPAddressAllow=")),
        "an IP allow-list cuts the daemon off from the exchange on some hosts"
    );
}
