//! The device keeps its operational certificate (LDevID) fresh by itself.
//!
//! - [`engine`]: the decisions, sans-IO (when to renew, with which certificate, how long to
//!   back off), table-tested.

pub mod engine;
