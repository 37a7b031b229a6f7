//! Settings from the environment, with the `<NAME>_FILE` convention for secrets: wherever a setting `NAME` is read,
//! `NAME_FILE` may name a file holding its value instead (Docker/compose secrets, Kubernetes secret volumes, systemd
//! credentials via `%d/<name>`), so secrets need not sit in a process's environment or a unit file.
//!
//! `NAME` wins when both are set. A value read from a file is trimmed (editors and `echo` add a newline). A blank
//! value counts as unset, like an empty `NAME=` line in an env file.

use std::path::PathBuf;

/// Why a setting could not be read. Names the variable and the file, never a value.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct EnvError(pub String);

/// The value of `name`, or of the file `name_FILE` names; `None` when neither is set (or both are blank).
pub fn var(name: &str) -> Result<Option<String>, EnvError> {
    if let Ok(v) = std::env::var(name) {
        let v = v.trim();
        if !v.is_empty() {
            return Ok(Some(v.to_string()));
        }
    }
    let Some(path) = file_of(name) else {
        return Ok(None);
    };
    read_file(name, &path).map(|v| Some(v).filter(|v| !v.is_empty()))
}

/// Like [`var`], for lookups that cannot report errors (a [`ConfigSource`]-style `get`): an unreadable file reads
/// as unset, and [`check`] is how startup reports it.
///
/// [`ConfigSource`]: https://docs.rs/sharegate-edge
pub fn var_or_none(name: &str) -> Option<String> {
    var(name).ok().flatten()
}

/// Is `name` given at all (directly or as a file)?
pub fn is_set(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.trim().is_empty()) || file_of(name).is_some()
}

/// Every `*_FILE` variable among `names` that names a file that cannot be read: for `check-config` and startup.
pub fn check(names: &[&str]) -> Vec<EnvError> {
    names
        .iter()
        // As `var` reads: a blank `NAME` is unset, and then `NAME_FILE` is what counts.
        .filter(|n| std::env::var(n).map_or(true, |v| v.trim().is_empty()))
        .filter_map(|n| file_of(n).map(|p| (n, p)))
        .filter_map(|(n, p)| read_file(n, &p).err())
        .collect()
}

/// The most a setting's file may hold: a secret or a URL, not `/dev/zero`.
const MAX_FILE_BYTES: u64 = 64 * 1024;

fn file_of(name: &str) -> Option<PathBuf> {
    std::env::var_os(format!("{name}_FILE"))
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
}

fn read_file(name: &str, path: &std::path::Path) -> Result<String, EnvError> {
    use std::io::Read;
    let cannot = |e: std::io::Error| EnvError(format!("{name}_FILE: cannot read {}: {}", path.display(), e.kind()));
    let mut text = String::new();
    std::fs::File::open(path)
        .map_err(cannot)?
        .take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(cannot)?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(EnvError(format!(
            "{name}_FILE: {} holds more than {MAX_FILE_BYTES} bytes: not a setting",
            path.display()
        )));
    }
    Ok(text.trim().to_string())
}
