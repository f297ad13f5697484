//! Which build this is: the crate version and the git commit it was built from (see `build.rs`;
//! `unknown` for a build from a tarball without `.git`). `--version`, the start log line, the
//! `config.loaded` audit entry and `retentiond_build_info` carry it, so an auditor can tell which
//! build purged what.

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const COMMIT: &str = env!("RETENTIOND_GIT_COMMIT");
/// `0.1.0 (commit 0123456789ab)`: what `retentiond --version` prints after the name.
pub const LONG: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("RETENTIOND_GIT_COMMIT"),
    ")"
);
