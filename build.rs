//! Build script: rebuild on migration changes, and name the build's git commit (`--version`,
//! the start log line, the `config.loaded` audit entry, `retentiond_build_info`).
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    // GIT_OPTIONAL_LOCKS=0: `git status` must not rewrite the index, or its new mtime would
    // rerun this script (and rebuild the crate) on every build.
    let out = Command::new("git")
        .args(args)
        .env("GIT_OPTIONAL_LOCKS", "0")
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8(out.stdout).ok()?.trim().to_string()).filter(|s| !s.is_empty())
}

/// Only a path that exists: cargo reruns the script on every build while a registered path is
/// missing (a checkout without `packed-refs` rebuilt the crate on every command). A ref that
/// moves between its loose file and `packed-refs` makes the registered one vanish, which reruns
/// the script, which registers the other.
fn rerun_on_git_path(p: &str) {
    if let Some(path) = git(&["rev-parse", "--path-format=absolute", "--git-path", p])
        && std::path::Path::new(&path).exists()
    {
        println!("cargo:rerun-if-changed={path}");
    }
}

/// `RETENTIOND_GIT_COMMIT` when set (a build from a tarball that knows its commit), else the
/// commit of the checkout this crate is the top of (`-dirty` when tracked files differ from
/// it), else `unknown`: a source tarball without `.git` still builds.
fn commit() -> String {
    println!("cargo:rerun-if-env-changed=RETENTIOND_GIT_COMMIT");
    if let Ok(c) = std::env::var("RETENTIOND_GIT_COMMIT")
        && !c.trim().is_empty()
    {
        return c.trim().to_string();
    }
    let here = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    // Not the commit of some outer repository a tarball happens to be unpacked in.
    let top = git(&["rev-parse", "--show-toplevel"]);
    let same = top.as_deref().and_then(|t| std::fs::canonicalize(t).ok())
        == std::fs::canonicalize(&here).ok();
    let Some(c) = git(&["rev-parse", "--short=12", "HEAD"]).filter(|_| same) else {
        return "unknown".into();
    };
    // Rerun when HEAD moves (commit, checkout) or the binary's inputs change (dirty or not);
    // not on the index, which every `git add` rewrites.
    rerun_on_git_path("HEAD");
    if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]) {
        rerun_on_git_path(&r);
        rerun_on_git_path("packed-refs");
    }
    for input in ["src", "migrations", "Cargo.toml", "Cargo.lock", "build.rs"] {
        println!("cargo:rerun-if-changed={input}");
    }
    let dirty = git(&[
        "status",
        "--porcelain",
        "--untracked-files=no",
        "--",
        "src",
        "migrations",
        "Cargo.toml",
        "Cargo.lock",
        "build.rs",
    ])
    .is_some();
    if dirty { format!("{c}-dirty") } else { c }
}

fn main() {
    // sqlx::migrate! embeds the migrations at compile time.
    println!("cargo:rerun-if-changed=migrations");
    println!("cargo:rustc-env=RETENTIOND_GIT_COMMIT={}", commit());
}
