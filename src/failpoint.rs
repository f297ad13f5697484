//! Crash and panic points for tests: none of them does anything in a release build.
//!
//! Invariant: without the `failpoints` feature every point is an empty inline function, so a
//! production binary cannot be made to exit or panic by an environment variable. With it (test
//! builds only), `RETENTIOND_CRASH_AT=<name>` exits the process with code 86 at that point and
//! `RETENTIOND_PANIC_AT=<name>` panics there.

/// Failpoints for crash tests: `RETENTIOND_CRASH_AT=<name>` makes the process exit abruptly
/// there. Compiled in only with the `failpoints` feature.
#[cfg(feature = "failpoints")]
pub fn crash(name: &str) {
    if std::env::var("RETENTIOND_CRASH_AT").is_ok_and(|v| v == name) {
        eprintln!("failpoint {name}: exiting");
        std::process::exit(86);
    }
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn crash(_name: &str) {}

/// Panic points for tests of panic handling: `RETENTIOND_PANIC_AT=<name>` panics there.
/// Compiled in only with the `failpoints` feature.
#[cfg(feature = "failpoints")]
pub fn panic(name: &str) {
    if std::env::var("RETENTIOND_PANIC_AT").is_ok_and(|v| v == name) {
        panic!("panic point {name}");
    }
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn panic(_name: &str) {}
