//! Every integration and end-to-end test, in one test binary: one compile and one link instead
//! of one per file (on two cores, linking twenty release test binaries cost more than running
//! them). `cargo test --release -- MODULE::` runs one file's tests, e.g. `-- holds::`.

#[macro_use]
mod common;
mod rel;

mod architecture;
mod audit;
mod compaction;
mod daemon;
mod e2e;
mod erasure;
mod holds;
mod http;
mod http_target;
mod interrupted;
mod lifecycle;
mod multi_instance;
mod notify;
mod object_store_target;
mod openapi;
mod ops;
mod outbox;
mod portable_stores;
mod reapply;
mod reliability_clock;
mod reliability_crash;
mod reliability_faults;
mod reliability_input;
mod remote_targets;
mod roles;
mod schema;
mod sweep_paths;
mod systemd_unit;
mod toolkit;
mod trust;
mod wal;
mod windows;
mod zdr;
