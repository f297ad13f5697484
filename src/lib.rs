//! retentiond: decides when stored user data may be destroyed, destroys it, and proves it.
//!
//! Data flows one way: event → [`rules`] → [`store`]; sweep → [`store`] (claim) → [`targets`]
//! → [`store`] (record + [`audit`]).

pub mod audit;
pub mod clock;
pub mod config;
pub mod events;
pub mod holds;
pub mod model;
pub mod rules;
pub mod store;
