//! retentiond: decides when stored user data may be destroyed, destroys it, and proves it.
//!
//! Data flows one way: event → [`rules`] → [`store`]; sweep → [`store`] (claim) → [`targets`]
//! → [`store`] (record + [`audit`]).

pub mod admin;
pub mod app;
pub mod audit;
pub mod background;
pub mod checkpoint;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod events;
pub mod failpoint;
pub mod health;
pub mod holds;
pub mod http;
pub mod ids;
pub mod ingest;
pub mod metrics;
pub mod model;
pub mod notify;
pub mod outbox;
pub mod policy;
pub mod reapply;
pub mod report;
pub mod rules;
pub mod sqlite_handle;
pub mod store;
pub mod sweep;
pub mod targets;
pub mod telemetry;
pub mod template;
pub mod version;
pub mod window;
