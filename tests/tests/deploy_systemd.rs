//! The systemd units of `deploy/systemd/` (docs/deploy.md), checked without a running systemd (there is none here):
//!
//! - `systemd-analyze verify` passes on both units, with nothing said about them on stderr (copies of the units
//!   whose `/usr/local/bin/sharegate` is the binary built from this tree, since verify checks that it exists);
//! - `systemd-analyze security --offline=yes` rates each at most 2.0 (the scores are printed);
//! - every hardening setting the deployment promises is in both units, secrets come in only as credentials read
//!   through `<NAME>_FILE`, and nothing names a secret's value (so an edit that drops one fails here);
//! - each unit's `ExecStartPre=` (`sharegate check-config serve|edge`) passes with exactly the environment the unit
//!   and its example env file give it, credentials as files in a temporary `%d`, and fails on a broken secret;
//! - `serve` and `edge`, run with that environment under `strace` through a doctor's canary (mint, revoke, the
//!   edge refusing), make only system calls the units' `SystemCallFilter=` allows, open only the socket families
//!   of `RestrictAddressFamilies=`, map no memory writable and executable, read no `/proc` file but their own and
//!   write nowhere but the state directory: what the sandbox would otherwise only show by killing the service.
//!
//! systemd-analyze and strace are Debian packages (`systemd`, `strace`). When one is missing the test says so and
//! passes without checking, except under CI (`CI=true`), where a missing tool fails it.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Where the units expect the binary (README.md: `install -m0755 target/release/sharegate /usr/local/bin/`).
const INSTALLED: &str = "/usr/local/bin/sharegate";
/// The highest `systemd-analyze security` exposure the units may have (0 best, 10 worst).
const MAX_EXPOSURE: f64 = 2.0;
const ADMIN_KEY: &str = "sg_admin_deploy-systemd-test-key-0123456789abcdef";

/// One unit and what belongs to it.
struct UnitSpec {
    file: &'static str,
    /// `sharegate <command>`.
    command: &'static str,
    env_file: &'static str,
    env_example: &'static str,
    /// The secrets it must be given, each as `<NAME>_FILE=%d/<credential>`.
    secrets: &'static [&'static str],
}

const CONTROL_PLANE: UnitSpec = UnitSpec {
    file: "sharegate-control-plane.service",
    command: "serve",
    env_file: "/etc/sharegate/control-plane.env",
    env_example: "control-plane.env.example",
    secrets: &[
        "SHAREGATE_SIGNING_KEYS",
        "SHAREGATE_STATE_KEY",
        "SHAREGATE_MASTER_KEY",
        "SHAREGATE_EDGE_TOKEN",
        "SHAREGATE_ADMIN_KEY",
    ],
};

const EDGE: UnitSpec = UnitSpec {
    file: "sharegate-edge.service",
    command: "edge",
    env_file: "/etc/sharegate/edge.env",
    env_example: "edge.env.example",
    secrets: &["SHAREGATE_SIGNING_KEYS", "SHAREGATE_STATE_KEY", "SHAREGATE_EDGE_TOKEN"],
};

const UNITS: [&UnitSpec; 2] = [&CONTROL_PLANE, &EDGE];

/// Settings of `[Service]` each unit must have exactly once, with exactly this value.
const SERVICE_SETTINGS: &[(&str, &str)] = &[
    ("Type", "exec"),
    ("Restart", "on-failure"),
    ("LimitNOFILE", "65536"),
    ("DynamicUser", "yes"),
    ("UMask", "0077"),
    ("NoNewPrivileges", "yes"),
    ("CapabilityBoundingSet", ""),
    ("AmbientCapabilities", ""),
    ("ProtectSystem", "strict"),
    ("ProtectHome", "yes"),
    ("PrivateTmp", "yes"),
    ("PrivateMounts", "yes"),
    ("PrivateDevices", "yes"),
    ("DevicePolicy", "closed"),
    ("PrivateUsers", "yes"),
    ("PrivateIPC", "yes"),
    ("ProtectHostname", "yes"),
    ("ProtectClock", "yes"),
    ("ProtectKernelTunables", "yes"),
    ("ProtectKernelModules", "yes"),
    ("ProtectKernelLogs", "yes"),
    ("ProtectControlGroups", "yes"),
    ("ProtectProc", "invisible"),
    ("ProcSubset", "pid"),
    ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
    ("RestrictNamespaces", "yes"),
    ("RestrictRealtime", "yes"),
    ("RestrictSUIDSGID", "yes"),
    ("LockPersonality", "yes"),
    ("MemoryDenyWriteExecute", "yes"),
    ("RemoveIPC", "yes"),
    ("KeyringMode", "private"),
    ("SystemCallArchitectures", "native"),
    ("SystemCallErrorNumber", "EPERM"),
];

/// The `SystemCallFilter=` lines, in order: the allow list, then what is taken out of it.
const SYSCALL_FILTER: [&str; 2] = ["@system-service", "~@privileged @resources"];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn units_dir() -> PathBuf {
    repo_root().join("deploy/systemd")
}

fn is_ci() -> bool {
    matches!(std::env::var("CI").as_deref(), Ok("true" | "1"))
}

/// Whether `tool` (of the Debian package `package`) runs; when it does not: fail under CI, else say why and skip.
fn have(tool: &str, version_flag: &str, package: &str) -> bool {
    let found = Command::new(tool)
        .arg(version_flag)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(!is_ci(), "{tool} is missing under CI=true (Debian package {package})");
        eprintln!("SKIPPED: {tool} not found (Debian: apt-get install {package}); nothing checked");
    }
    found
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The `sharegate` binary of this tree, built (a no-op when it is up to date) into the target directory and profile
/// this test was built with: `<target>/<profile>/deps/deploy_systemd-…` is this test.
fn sharegate_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
        let target_dir = profile_dir.parent().unwrap();
        let profile = match profile_dir.file_name().unwrap().to_str().unwrap() {
            "debug" => "dev",
            other => other,
        };
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let out = Command::new(cargo)
            .current_dir(repo_root())
            .args(["build", "-p", "sharegate", "--bin", "sharegate", "--profile", profile])
            .arg("--target-dir")
            .arg(target_dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "building sharegate failed:\n{}", text(&out));
        let bin = profile_dir.join("sharegate");
        assert!(bin.is_file(), "{} was not built", bin.display());
        bin
    })
}

// ---------------------------------------------------------------------------------------------------------------
// Unit files, read the way systemd reads them (as far as these units need: no line continuations, no quoting).

struct UnitFile {
    /// `(section, key, value)` in file order.
    entries: Vec<(String, String, String)>,
}

impl UnitFile {
    fn read(spec: &UnitSpec) -> UnitFile {
        let path = units_dir().join(spec.file);
        let src = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut section = String::new();
        let mut entries = Vec::new();
        for (n, line) in src.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            assert!(
                !line.ends_with('\\'),
                "{}:{}: a continued line (this test's reader does not join them)",
                spec.file,
                n + 1
            );
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name.to_string();
                continue;
            }
            let (k, v) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("{}:{}: not KEY=VALUE: {line}", spec.file, n + 1));
            entries.push((section.clone(), k.trim().to_string(), v.trim().to_string()));
        }
        UnitFile { entries }
    }

    fn all(&self, section: &str, key: &str) -> Vec<&str> {
        self.entries
            .iter()
            .filter(|(s, k, _)| s == section && k == key)
            .map(|(_, _, v)| v.as_str())
            .collect()
    }

    /// The one value of `key`; fails when it is missing or given more than once.
    fn one(&self, section: &str, key: &str) -> &str {
        match self.all(section, key).as_slice() {
            [v] => v,
            other => panic!("[{section}] {key}= should be set exactly once, found {other:?}"),
        }
    }

    /// `Environment=` assignments in order, `%` specifiers unexpanded.
    fn environment(&self) -> Vec<(String, String)> {
        self.all("Service", "Environment")
            .into_iter()
            .map(|v| {
                assert!(
                    !v.contains(['"', '\'', ' ']),
                    "Environment={v}: one unquoted assignment a line, please"
                );
                let (k, v) = v.split_once('=').unwrap();
                (k.to_string(), v.to_string())
            })
            .collect()
    }

    /// `LoadCredential=` ids and their paths.
    fn credentials(&self) -> BTreeMap<String, String> {
        self.all("Service", "LoadCredential")
            .into_iter()
            .map(|v| {
                let (id, path) = v
                    .split_once(':')
                    .unwrap_or_else(|| panic!("LoadCredential={v}: want ID:PATH"));
                (id.to_string(), path.to_string())
            })
            .collect()
    }
}

/// `KEY=VALUE` lines of an example env file; with `commented`, also the `#KEY=VALUE` examples.
fn env_example(spec: &UnitSpec, commented: bool) -> Vec<(String, String)> {
    let path = units_dir().join(spec.env_example);
    let src = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = Vec::new();
    for line in src.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let assignment = match line.strip_prefix('#') {
            Some(rest) if commented => rest,
            Some(_) => continue,
            None => line,
        };
        let Some((k, v)) = assignment.split_once('=') else {
            assert!(line.starts_with('#'), "{}: not KEY=VALUE: {line}", spec.env_example);
            continue;
        };
        let is_name = !k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        if !is_name {
            // A comment that happens to hold '='.
            assert!(line.starts_with('#'), "{}: not KEY=VALUE: {line}", spec.env_example);
            continue;
        }
        assert!(
            !v.contains(['"', '\'', ' ', '$', '\\']),
            "{}: {line}: keep values plain (no quotes, spaces, $ or \\) so every reader reads them alike",
            spec.env_example
        );
        out.push((k.to_string(), v.to_string()));
    }
    out
}

/// A setting whose value is a secret (a key, a token, a password): it may only be given as `<NAME>_FILE`.
fn is_secret(name: &str) -> bool {
    ["_KEY", "_KEYS", "_TOKEN", "_PASSWORD", "_SECRET"]
        .iter()
        .any(|w| name.ends_with(w))
}

/// `value` with the unit specifiers these units use expanded; any other specifier fails the test (add it here).
fn expand(value: &str, specifiers: &BTreeMap<char, String>) -> String {
    let mut out = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some(s) => out.push_str(
                specifiers
                    .get(&s)
                    .unwrap_or_else(|| panic!("%{s} in {value:?}: a specifier this test does not stand in for")),
            ),
            None => panic!("a lone % at the end of {value:?}"),
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------------------------
// A unit's process as systemd would start it: the unit's Environment=, then its env file (an EnvironmentFile= wins
// over Environment=), credentials as files in a directory standing in for %d, the state directory for %S.

/// What systemd would give a unit's processes, in a temporary directory: `%d` (credentials), `%S` (state root).
struct UnitDirs {
    dir: tempfile::TempDir,
}

impl UnitDirs {
    fn new() -> UnitDirs {
        let s = UnitDirs {
            dir: tempfile::tempdir().unwrap(),
        };
        std::fs::create_dir_all(s.credentials()).unwrap();
        // StateDirectory=sharegate: made by systemd before ExecStartPre= runs.
        std::fs::create_dir_all(s.state().join("sharegate")).unwrap();
        s
    }

    /// `%d`, `$CREDENTIALS_DIRECTORY`.
    fn credentials(&self) -> PathBuf {
        self.dir.path().join("credentials")
    }

    /// `%S` (`/var/lib` for system units).
    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Write each credential of `unit` with a valid value (0600, as in /etc/sharegate/credentials/).
    fn write_credentials(&self, unit: &UnitFile) {
        use std::os::unix::fs::PermissionsExt;
        let hex = |b: u8| format!("{b:02x}").repeat(32);
        for id in unit.credentials().keys() {
            let value = match id.as_str() {
                "signing_keys" => format!("1:active:{}", hex(0x51)),
                "state_key" => hex(0x62),
                "master_key" => hex(0x73),
                "edge_token" => hex(0x84),
                "admin_key" => ADMIN_KEY.to_string(),
                other => panic!("credential {other}: this test has no value for it (add one)"),
            };
            let path = self.credentials().join(id);
            std::fs::write(&path, format!("{value}\n")).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
    }

    /// The environment `spec`'s processes get, then `overrides` (this host's stand-ins for the example's values).
    fn environment(&self, spec: &UnitSpec, unit: &UnitFile, overrides: &[(&str, String)]) -> Vec<(String, String)> {
        let specifiers = BTreeMap::from([
            ('d', self.credentials().display().to_string()),
            ('S', self.state().display().to_string()),
            ('H', "deploy-systemd-test".to_string()),
        ]);
        let mut env = vec![
            (
                "PATH".to_string(),
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
            ),
            (
                "CREDENTIALS_DIRECTORY".to_string(),
                self.credentials().display().to_string(),
            ),
        ];
        if !unit.all("Service", "StateDirectory").is_empty() {
            env.push((
                "STATE_DIRECTORY".to_string(),
                self.state().join("sharegate").display().to_string(),
            ));
        }
        env.extend(
            unit.environment()
                .into_iter()
                .map(|(k, v)| (k, expand(&v, &specifiers))),
        );
        env.extend(env_example(spec, false));
        env.extend(overrides.iter().map(|(k, v)| (k.to_string(), v.clone())));
        env
    }

    /// The unit's command line `line` (`ExecStartPre=`/`ExecStart=`) with the built binary, in that environment.
    fn command(&self, line: &str, env: &[(String, String)], wrapper: &[&str]) -> Command {
        let mut words = line.split_whitespace();
        assert_eq!(words.next(), Some(INSTALLED), "{line}");
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(sharegate_binary());
                c
            }
            None => Command::new(sharegate_binary()),
        };
        cmd.args(words)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .current_dir("/")
            .stdin(Stdio::null());
        cmd
    }
}

/// Copies of the units, in a temporary directory, that start the binary built from this tree.
fn units_with_built_binary() -> (tempfile::TempDir, Vec<PathBuf>) {
    let dir = tempfile::tempdir().unwrap();
    let bin = sharegate_binary().display().to_string();
    let paths = UNITS
        .iter()
        .map(|spec| {
            let src = std::fs::read_to_string(units_dir().join(spec.file)).unwrap();
            assert!(src.contains(INSTALLED), "{} does not start {INSTALLED}", spec.file);
            let path = dir.path().join(spec.file);
            std::fs::write(&path, src.replace(INSTALLED, &bin)).unwrap();
            path
        })
        .collect();
    (dir, paths)
}

/// `systemd-analyze verify` on `units`: its exit status, and the stderr lines about them (about the host's own units
/// are printed and let pass).
fn verify(units: &[PathBuf]) -> (bool, Vec<String>) {
    let out = Command::new("systemd-analyze")
        .args(["verify", "--recursive-errors=no"])
        .args(units)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let ours = |line: &str| {
        units.iter().any(|u| {
            line.contains(&*u.display().to_string()) || line.contains(u.file_name().unwrap().to_str().unwrap())
        })
    };
    let mut about_ours = Vec::new();
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        if ours(line) {
            about_ours.push(line.to_string());
        } else {
            eprintln!("systemd-analyze verify, about this host (not the units): {line}");
        }
    }
    (out.status.success(), about_ours)
}

#[test]
fn units_verify_without_a_word_about_them() {
    if !have("systemd-analyze", "--version", "systemd") {
        return;
    }
    let (_dir, units) = units_with_built_binary();
    let (ok, said) = verify(&units);
    assert!(
        ok && said.is_empty(),
        "systemd-analyze verify: ok={ok}\n{}",
        said.join("\n")
    );

    // The check above would see a mistake: a misspelt setting is only a warning, exit status 0.
    let broken = units[0].with_file_name("sharegate-misspelt.service");
    let src = std::fs::read_to_string(&units[0]).unwrap();
    std::fs::write(&broken, src.replace("ProtectSystem=strict", "ProtectSytem=strict")).unwrap();
    let (_, said) = verify(std::slice::from_ref(&broken));
    assert!(
        said.iter().any(|l| l.contains("ProtectSytem")),
        "verify said nothing of a misspelt setting: {said:?}"
    );
}

#[test]
fn units_are_exposed_at_most_2_0() {
    if !have("systemd-analyze", "--version", "systemd") {
        return;
    }
    let (_dir, units) = units_with_built_binary();
    let mut scores = Vec::new();
    for unit in &units {
        let name = unit.file_name().unwrap().to_str().unwrap();
        let threshold = format!("--threshold={}", (MAX_EXPOSURE * 10.0) as u32);
        let out = Command::new("systemd-analyze")
            .args(["security", "--offline=yes", "--no-pager", &threshold])
            .arg(unit)
            .output()
            .unwrap();
        let report = String::from_utf8_lossy(&out.stdout);
        let prefix = format!("Overall exposure level for {name}: ");
        let score: f64 = report
            .lines()
            .find_map(|l| l.split_once(&prefix).map(|(_, rest)| rest))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no exposure level in the report:\n{}", text(&out)));
        println!("{name}: exposure {score:.1} (at most {MAX_EXPOSURE:.1})");
        for line in report.lines().filter(|l| l.starts_with('✗')) {
            println!("  {line}");
        }
        assert!(
            score <= MAX_EXPOSURE,
            "{name}: exposure {score} > {MAX_EXPOSURE}:\n{report}"
        );
        assert!(
            out.status.success(),
            "{name}: systemd-analyze security {threshold} failed:\n{}",
            text(&out)
        );
        scores.push(format!("{name} {score:.1}"));
    }
    println!("systemd-analyze security --offline=yes: {}", scores.join(", "));
}

#[test]
fn units_keep_every_hardening_setting_and_take_secrets_only_as_credentials() {
    let documented: String = std::fs::read_dir(repo_root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    for secret in sharegate_edge::contract::settings::SECRETS {
        assert!(is_secret(secret), "{secret} would not be recognised as a secret");
    }
    for spec in UNITS {
        let unit = UnitFile::read(spec);
        let f = spec.file;
        for (key, want) in SERVICE_SETTINGS {
            assert_eq!(unit.one("Service", key), *want, "{f}: {key}=");
        }
        assert_eq!(
            unit.all("Service", "SystemCallFilter"),
            SYSCALL_FILTER,
            "{f}: SystemCallFilter="
        );
        for key in ["RestartSec", "TimeoutStopSec"] {
            let v = unit.one("Service", key);
            let secs: u64 = v
                .trim_end_matches('s')
                .parse()
                .unwrap_or_else(|_| panic!("{f}: {key}={v}"));
            assert!((1..=120).contains(&secs), "{f}: {key}={v}");
        }
        assert_eq!(
            unit.one("Service", "ExecStartPre"),
            format!("{INSTALLED} check-config {}", spec.command),
            "{f}"
        );
        assert_eq!(
            unit.one("Service", "ExecStart"),
            format!("{INSTALLED} {}", spec.command),
            "{f}"
        );
        // Required: no leading '-', so a missing env file stops the start instead of running on defaults.
        assert_eq!(unit.one("Service", "EnvironmentFile"), spec.env_file, "{f}");
        for key in ["Wants", "After"] {
            assert!(
                unit.all("Unit", key).contains(&"network-online.target"),
                "{f}: {key}=network-online.target"
            );
        }
        // Nothing hard-required (a Redis on this host is an After= drop-in, README.md).
        for key in ["Requires", "Requisite", "BindsTo"] {
            assert!(
                unit.all("Unit", key).is_empty(),
                "{f}: {key}= {:?}",
                unit.all("Unit", key)
            );
        }
        assert_eq!(unit.one("Install", "WantedBy"), "multi-user.target", "{f}");
        // No User= of a static account, no capability handed back, no privileged prefix (+, !) on a command.
        assert!(
            unit.all("Service", "User").is_empty(),
            "{f}: DynamicUser= names its own user"
        );
        for key in ["ExecStartPre", "ExecStart"] {
            assert!(unit.one("Service", key).starts_with('/'), "{f}: {key}= with a prefix");
        }

        // Secrets: each required one as <NAME>_FILE=%d/<id>, each id a LoadCredential= from
        // /etc/sharegate/credentials/<id>, every credential used, no secret's value anywhere.
        let credentials = unit.credentials();
        let env = unit.environment();
        let mut used = BTreeSet::new();
        for (name, value) in &env {
            assert!(!is_secret(name), "{f}: Environment={name}=… sets a secret's value");
            if let Some(id) = value.strip_prefix("%d/") {
                assert!(name.ends_with("_FILE"), "{f}: {name}={value}");
                let path = credentials
                    .get(id)
                    .unwrap_or_else(|| panic!("{f}: {name}={value}: no LoadCredential={id}"));
                assert_eq!(
                    path,
                    &format!("/etc/sharegate/credentials/{id}"),
                    "{f}: LoadCredential={id}"
                );
                used.insert(id.to_string());
            }
        }
        assert_eq!(
            used,
            credentials.keys().cloned().collect::<BTreeSet<_>>(),
            "{f}: a credential nothing reads"
        );
        for secret in spec.secrets {
            let file = format!("{secret}_FILE");
            assert!(
                env.iter().any(|(k, v)| *k == file && v.starts_with("%d/")),
                "{f}: {file}=%d/… missing"
            );
        }
        for key in ["SetCredential", "SetCredentialEncrypted", "PassEnvironment"] {
            assert!(unit.all("Service", key).is_empty(), "{f}: {key}=");
        }
        for (name, value) in env_example(spec, true) {
            assert!(
                !is_secret(&name) || name.ends_with("_FILE"),
                "{}: {name}=… is a secret: give it as a credential",
                spec.env_example
            );
            assert!(
                !(name == "SHAREGATE_STORE" && value.contains('@')),
                "{}: a store URL with a password is a secret (store_url credential)",
                spec.env_example
            );
        }
        // Every setting named is one the docs describe (a misspelt name would be ignored silently).
        let names = env
            .iter()
            .map(|(k, _)| k.clone())
            .chain(env_example(spec, true).into_iter().map(|(k, _)| k));
        for name in names.filter(|n| n.starts_with("SHAREGATE_")) {
            let base = name.strip_suffix("_FILE").unwrap_or(&name);
            assert!(documented.contains(base), "{f}: {name} is not described in docs/");
        }
    }
    // The control plane's store lives in its state directory; the edge writes nothing.
    let cp = UnitFile::read(&CONTROL_PLANE);
    assert_eq!(cp.one("Service", "StateDirectory"), "sharegate");
    assert_eq!(cp.one("Service", "StateDirectoryMode"), "0700");
    assert!(
        cp.environment()
            .contains(&("SHAREGATE_DATA_DIR".to_string(), "%S/sharegate".to_string()))
    );
    let edge = UnitFile::read(&EDGE);
    for key in [
        "StateDirectory",
        "CacheDirectory",
        "LogsDirectory",
        "RuntimeDirectory",
        "ReadWritePaths",
    ] {
        assert!(
            edge.all("Service", key).is_empty(),
            "{}: {key}= (it writes nothing)",
            EDGE.file
        );
    }
}

/// This host's stand-ins for values of the example env files that only exist on a real host.
fn host_overrides(spec: &UnitSpec) -> Vec<(&'static str, String)> {
    if spec.command == "edge" {
        // The example's /srv/hls is not here; check-config refuses an origin directory that does not exist.
        vec![(
            "SHAREGATE_ORIGIN",
            repo_root().join("deploy/demo-media").display().to_string(),
        )]
    } else {
        Vec::new()
    }
}

#[test]
fn exec_start_pre_passes_with_what_the_unit_gives_and_stops_a_broken_secret() {
    for spec in UNITS {
        let unit = UnitFile::read(spec);
        let dirs = UnitDirs::new();
        dirs.write_credentials(&unit);
        let env = dirs.environment(spec, &unit, &host_overrides(spec));
        let pre = unit.one("Service", "ExecStartPre");
        let out = dirs.command(pre, &env, &[]).output().unwrap();
        println!("{}: {pre}\n{}", spec.file, text(&out));
        assert!(
            out.status.success(),
            "{}: ExecStartPre failed:\n{}",
            spec.file,
            text(&out)
        );
        for secret in spec.secrets {
            let id = unit
                .environment()
                .into_iter()
                .find(|(k, _)| *k == format!("{secret}_FILE"))
                .map(|(_, v)| v.trim_start_matches("%d/").to_string())
                .unwrap();
            let line = format!("{secret}: given (file {})", dirs.credentials().join(id).display());
            assert!(
                text(&out).contains(&line),
                "{}: no {line:?}:\n{}",
                spec.file,
                text(&out)
            );
        }
        assert!(!text(&out).contains(" error "), "{}", text(&out));

        // A broken secret: the start stops at ExecStartPre=, the finding names it, never its value.
        std::fs::write(dirs.credentials().join("state_key"), "not a key\n").unwrap();
        let out = dirs.command(pre, &env, &[]).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{}: {}", spec.file, text(&out));
        assert!(text(&out).contains("SHAREGATE_STATE_KEY"), "{}", text(&out));
        for value in ["not a key".to_string(), "51".repeat(32), "84".repeat(32)] {
            assert!(
                !text(&out).contains(&value),
                "a secret's value printed:\n{}",
                text(&out)
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The sandbox's promises, checked on what the processes do (strace).

/// A process under `strace -f -o <trace>`, stopped (SIGTERM to the traced process) when dropped.
struct Traced {
    strace: Child,
    name: String,
}

impl Traced {
    fn start(mut cmd: Command, log: &Path, name: &str) -> Traced {
        let log = std::fs::File::create(log).unwrap();
        cmd.stdout(log.try_clone().unwrap()).stderr(log);
        Traced {
            strace: cmd.spawn().unwrap(),
            name: name.to_string(),
        }
    }

    /// The traced process: strace's child.
    fn tracee(&self) -> Option<i32> {
        let pid = self.strace.id();
        let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
        children.split_whitespace().next()?.parse().ok()
    }

    fn stop(&mut self) {
        use rustix::process::{Pid, Signal, kill_process};
        if let Some(pid) = self.tracee().and_then(Pid::from_raw) {
            let _ = kill_process(pid, Signal::TERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.strace.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Some(pid) = self.tracee().and_then(Pid::from_raw) {
            let _ = kill_process(pid, Signal::KILL);
        }
        let _ = self.strace.kill();
        let _ = self.strace.wait();
        eprintln!("{} had to be killed", self.name);
    }
}

impl Drop for Traced {
    fn drop(&mut self) {
        if !matches!(self.strace.try_wait(), Ok(Some(_))) {
            self.stop();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP/1.1 request; the status and body.
fn http(port: u16, method: &str, path: &str, bearer: Option<&str>, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = bearer
        .map(|k| format!("authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n{auth}content-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, answer)
}

/// Wait until `url` answers 200 (`sharegate probe`), or fail naming `who`'s log.
fn wait_ready(url: &str, who: &mut Traced, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = who.strace.try_wait() {
            panic!(
                "{} exited ({status}) before {url} answered:\n{}",
                who.name,
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        let ok = Command::new(sharegate_binary())
            .args(["probe", url, "--timeout-ms", "1000"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!(
        "{url} never answered 200:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// Every group of `systemd-analyze syscall-filter`, its members (system calls and other groups).
fn syscall_groups() -> BTreeMap<String, Vec<String>> {
    let out = Command::new("systemd-analyze").arg("syscall-filter").output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if line.starts_with('@') {
            current = Some(line.trim().to_string());
            groups.insert(line.trim().to_string(), Vec::new());
        } else if line.trim().is_empty() || !line.starts_with(char::is_whitespace) {
            current = None; // the end of a group, or the closing list of calls in no group
        } else if let Some(g) = &current {
            let member = line.trim();
            if !member.starts_with('#') {
                groups.get_mut(g).unwrap().push(member.to_string());
            }
        }
    }
    groups
}

fn expand_group(groups: &BTreeMap<String, Vec<String>>, name: &str, out: &mut BTreeSet<String>) {
    if name.starts_with('@') {
        for m in groups
            .get(name)
            .unwrap_or_else(|| panic!("no system call group {name}"))
        {
            expand_group(groups, m, out);
        }
    } else {
        out.insert(name.to_string());
    }
}

/// Files outside a process's own `/proc` that the binary reads once and does without when they are hidden, as
/// they are under `ProcSubset=pid`:
/// - `/proc/sys/vm/overcommit_memory`: mimalloc (the process allocator) reads it at start; when it cannot open it
///   it assumes overcommit, which is Linux's default (heuristic overcommit) anyway.
const TOLERATED_PROC_PROBES: &[&str] = &["/proc/sys/vm/overcommit_memory"];

/// The system calls a unit's `SystemCallFilter=` lines allow (an allow list, then `~` lines taking calls out).
fn allowed_syscalls(unit: &UnitFile) -> BTreeSet<String> {
    let groups = syscall_groups();
    let mut allowed = BTreeSet::new();
    for line in unit.all("Service", "SystemCallFilter") {
        let (deny, list) = match line.strip_prefix('~') {
            Some(rest) => (true, rest),
            None => (false, line),
        };
        let mut set = BTreeSet::new();
        for item in list.split_whitespace() {
            expand_group(&groups, item, &mut set);
        }
        if deny {
            allowed.retain(|c| !set.contains(c));
        } else {
            allowed.extend(set);
        }
    }
    allowed
}

/// What a trace shows the process did that its unit would have refused: each kind once, with its first line.
fn sandbox_breaches(trace: &str, unit: &UnitFile, writable: &[PathBuf]) -> Vec<String> {
    let allowed = allowed_syscalls(unit);
    let families: Vec<&str> = unit
        .one("Service", "RestrictAddressFamilies")
        .split_whitespace()
        .collect();
    let mut breaches: BTreeMap<String, &str> = BTreeMap::new();
    for line in trace.lines() {
        let mut breach = |what: String| {
            breaches.entry(what).or_insert(line);
        };
        // "<pid> <call>(<args>) = <result>", or "<pid> <... call resumed>", "--- SIG…", "+++ exited".
        let Some((_, rest)) = line.trim_start().split_once(char::is_whitespace) else {
            continue;
        };
        let rest = rest.trim_start();
        let Some((call, args)) = rest.split_once('(') else {
            continue;
        };
        if call.is_empty()
            || !call
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            continue;
        }
        if !allowed.contains(call) {
            breach(format!("system call {call} (SystemCallFilter=)"));
        }
        if call == "socket" {
            let family = args.split(',').next().unwrap_or("");
            if !families.contains(&family) {
                breach(format!("socket family {family} (RestrictAddressFamilies=)"));
            }
        }
        if matches!(call, "mmap" | "mprotect" | "pkey_mprotect")
            && args.contains("PROT_WRITE")
            && args.contains("PROT_EXEC")
        {
            breach("writable and executable memory (MemoryDenyWriteExecute=)".to_string());
        }
        // The file system: calls that take a path (the first quoted argument).
        let takes_path = matches!(
            call,
            "open"
                | "openat"
                | "openat2"
                | "creat"
                | "stat"
                | "lstat"
                | "newfstatat"
                | "statx"
                | "access"
                | "faccessat"
                | "faccessat2"
                | "readlink"
                | "readlinkat"
                | "execve"
                | "statfs"
        );
        let writes = match call {
            "open" | "openat" | "openat2" => ["O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC"]
                .iter()
                .any(|f| args.contains(f)),
            "creat" | "mkdir" | "mkdirat" | "unlink" | "unlinkat" | "rename" | "renameat" | "renameat2" | "rmdir"
            | "link" | "linkat" | "symlink" | "symlinkat" | "truncate" | "chmod" | "fchmodat" | "mknod" | "mknodat" => {
                true
            }
            _ => false,
        };
        if !takes_path && !writes {
            continue;
        }
        let Some(path) = args.split('"').nth(1).filter(|_| args.contains('"')).map(PathBuf::from) else {
            continue;
        };
        if let Ok(rest) = path.strip_prefix("/proc") {
            let first = rest
                .components()
                .next()
                .map(|c| c.as_os_str().to_string_lossy().into_owned());
            let own = first
                .as_deref()
                .is_some_and(|c| c == "self" || c == "thread-self" || c.chars().all(|d| d.is_ascii_digit()));
            // A probe that fails harmlessly under ProcSubset=pid (ENOENT there) is not a breach: see the list.
            if !own && !args.contains("ENOENT") && !TOLERATED_PROC_PROBES.iter().any(|p| path == Path::new(p)) {
                breach(format!("{} is not its own /proc (ProcSubset=pid)", path.display()));
            }
        }
        let path_ok = path.starts_with("/dev") || writable.iter().any(|w| path.starts_with(w));
        if writes && !path_ok {
            breach(format!(
                "a write to {}, outside its state directory (ProtectSystem=strict)",
                path.display()
            ));
        }
    }
    breaches
        .into_iter()
        .map(|(what, line)| format!("{what}, first: {line}"))
        .collect()
}

#[test]
fn serve_and_edge_stay_inside_their_sandbox() {
    if !have("systemd-analyze", "--version", "systemd") || !have("strace", "-V", "strace") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (api, edge_port) = (free_port(), free_port());
    let api_url = format!("http://127.0.0.1:{api}");
    let edge_url = format!("http://127.0.0.1:{edge_port}");
    // The control plane as the unit starts it, on loopback ports of this test.
    let cp_unit = UnitFile::read(&CONTROL_PLANE);
    let cp_dirs = UnitDirs::new();
    cp_dirs.write_credentials(&cp_unit);
    let cp_env = cp_dirs.environment(
        &CONTROL_PLANE,
        &cp_unit,
        &[
            ("SHAREGATE_API_ADDR", format!("127.0.0.1:{api}")),
            ("SHAREGATE_PUBLIC_URL", api_url.clone()),
            ("SHAREGATE_EDGE_URL", edge_url.clone()),
            ("SHAREGATE_PUSH_EDGES", edge_url.clone()),
        ],
    );
    let edge_unit = UnitFile::read(&EDGE);
    let edge_dirs = UnitDirs::new();
    edge_dirs.write_credentials(&edge_unit);
    // The control plane by name, so the edge resolves a host name as it would on a real host.
    let cp_by_name = format!("http://localhost:{api}");
    let mut edge_overrides = host_overrides(&EDGE);
    edge_overrides.extend([
        ("SHAREGATE_EDGE_ADDR", format!("127.0.0.1:{edge_port}")),
        ("SHAREGATE_STATE_URL", format!("{cp_by_name}/v1/edge/state")),
        ("SHAREGATE_KEYS_URL", format!("{cp_by_name}/v1/edge/keys")),
        ("SHAREGATE_EVENTS_URL", format!("{cp_by_name}/v1/edge/events")),
    ]);
    let edge_env = edge_dirs.environment(&EDGE, &edge_unit, &edge_overrides);

    let strace = |trace: &Path| {
        vec![
            "strace".to_string(),
            "-f".into(),
            "-qq".into(),
            "-o".into(),
            trace.display().to_string(),
        ]
    };
    let run = |dirs: &UnitDirs, unit: &UnitFile, key: &str, env: &[(String, String)], name: &str| {
        let trace = dir.path().join(format!("{name}.trace"));
        let wrapper = strace(&trace);
        let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
        (dirs.command(unit.one("Service", key), env, &wrapper), trace)
    };

    let mut traces = Vec::new();
    for (dirs, unit, env, name) in [
        (&cp_dirs, &cp_unit, &cp_env, "check-config-serve"),
        (&edge_dirs, &edge_unit, &edge_env, "check-config-edge"),
    ] {
        let (mut cmd, trace) = run(dirs, unit, "ExecStartPre", env, name);
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{name} under strace:\n{}", text(&out));
        traces.push((name, trace, unit, dirs));
    }

    let (cmd, cp_trace) = run(&cp_dirs, &cp_unit, "ExecStart", &cp_env, "serve");
    let cp_log = dir.path().join("serve.log");
    let mut serve = Traced::start(cmd, &cp_log, "serve");
    wait_ready(&format!("{api_url}/healthz"), &mut serve, &cp_log);
    let (cmd, edge_trace) = run(&edge_dirs, &edge_unit, "ExecStart", &edge_env, "edge");
    let edge_log = dir.path().join("edge.log");
    let mut edge = Traced::start(cmd, &edge_log, "edge");
    wait_ready(&format!("{edge_url}/_sharegate/ready"), &mut edge, &edge_log);

    // Work for both: an asset registered, then the doctor's canary: minted, played through the edge, revoked,
    // pushed, refused.
    let origin = std::fs::canonicalize(repo_root().join("deploy/demo-media")).unwrap();
    let body = serde_json::json!({ "id": "demo", "origin": origin }).to_string();
    let (status, answer) = http(api, "POST", "/v1/assets", Some(ADMIN_KEY), &body);
    assert!((200..300).contains(&status), "register the demo asset: {answer}");
    let doctor = Command::new(sharegate_binary())
        .args(["doctor", "--api", &api_url, "--canary-timeout", "10"])
        .env("SHAREGATE_API_KEY", ADMIN_KEY)
        .output()
        .unwrap();
    println!("sharegate doctor:\n{}", text(&doctor));
    let canary_ok = text(&doctor)
        .lines()
        .any(|l| l.trim_start().starts_with("ok") && l.contains("canary"));
    assert!(canary_ok, "the canary did not pass:\n{}", text(&doctor));
    serve.stop();
    edge.stop();
    traces.push(("serve", cp_trace, &cp_unit, &cp_dirs));
    traces.push(("edge", edge_trace, &edge_unit, &edge_dirs));

    let mut all = Vec::new();
    for (name, trace, unit, dirs) in traces {
        let trace = std::fs::read_to_string(&trace).unwrap();
        let calls = trace.lines().count();
        // The state directory is the one place a unit may write (StateDirectory=; none for the edge).
        let writable: Vec<PathBuf> = unit
            .all("Service", "StateDirectory")
            .iter()
            .map(|d| dirs.state().join(d))
            .collect();
        let breaches = sandbox_breaches(&trace, unit, &writable);
        println!("{name}: {calls} traced lines, {} outside the sandbox", breaches.len());
        all.extend(breaches.into_iter().map(|b| format!("{name}: {b}")));
    }
    assert!(all.is_empty(), "the units' sandbox would refuse:\n{}", all.join("\n"));
}
