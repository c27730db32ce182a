//! The one place that finds the shared test fixtures (exposition captures, third-party CRDs).
//!
//! They live beside the checkout in `../shared/fixtures` and are not copied into the repository;
//! `REDBRIDGE_FIXTURES` points elsewhere. A missing directory or file panics with the path
//! looked at, so a test never passes, or fails obscurely, for want of its fixtures.

use std::path::{Path, PathBuf};

/// The environment variable that overrides where the fixtures are.
pub const ENV: &str = "REDBRIDGE_FIXTURES";

/// `../shared/fixtures` relative to the checkout (this crate is `tests/support` in it).
fn default_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures")
}

/// The fixtures directory: `$REDBRIDGE_FIXTURES` if set and not empty, else
/// `../shared/fixtures` beside the checkout. Panics naming the path when it is not a directory.
#[track_caller]
pub fn dir() -> PathBuf {
    dir_from(std::env::var_os(ENV))
}

#[track_caller]
fn dir_from(var: Option<std::ffi::OsString>) -> PathBuf {
    let (dir, from) = match var.filter(|v| !v.is_empty()) {
        Some(v) => (PathBuf::from(v), format!("{ENV} is set")),
        None => (
            default_dir(),
            format!("the default beside the checkout; set {ENV} to use another directory"),
        ),
    };
    assert!(
        dir.is_dir(),
        "the shared test fixtures are missing: {} is not a directory ({from})",
        dir.display()
    );
    // Canonical, so paths in messages read without `..` segments.
    dir.canonicalize().unwrap_or(dir)
}

/// The fixture at `rel` (e.g. `exposition/envoy.prom`), which must exist.
#[track_caller]
pub fn path(rel: impl AsRef<Path>) -> PathBuf {
    let path = dir().join(rel);
    assert!(
        path.exists(),
        "shared test fixture {} is missing",
        path.display()
    );
    path
}

/// The text of the fixture at `rel`.
#[track_caller]
pub fn read(rel: impl AsRef<Path>) -> String {
    let path = path(rel);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read shared test fixture {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn panic_message(f: impl FnOnce() -> PathBuf + std::panic::UnwindSafe) -> String {
        let err = std::panic::catch_unwind(f).expect_err("panics");
        err.downcast_ref::<String>().cloned().unwrap_or_default()
    }

    #[test]
    fn a_missing_directory_names_its_path_and_the_variable() {
        let msg = panic_message(|| dir_from(Some("/nonexistent/redbridge-fixtures".into())));
        assert!(msg.contains("/nonexistent/redbridge-fixtures"), "{msg}");
        assert!(msg.contains("REDBRIDGE_FIXTURES is set"), "{msg}");
    }

    #[test]
    fn an_empty_variable_means_the_default() {
        let msg = std::panic::catch_unwind(|| dir_from(Some("".into())));
        match msg {
            Ok(dir) => assert_eq!(dir, default_dir().canonicalize().unwrap()),
            Err(e) => {
                let msg = e.downcast_ref::<String>().cloned().unwrap_or_default();
                assert!(msg.contains("shared/fixtures"), "{msg}");
            }
        }
    }

    #[test]
    fn a_missing_file_names_its_path() {
        let msg = panic_message(|| path("no/such/fixture.prom"));
        assert!(msg.contains("no/such/fixture.prom"), "{msg}");
    }
}
