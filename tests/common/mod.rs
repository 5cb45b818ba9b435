//! The shared harness: a development PKI in a temp dir, and N real gateways with real mutual
//! TLS and real SQLite files, either in this process on port 0 or as child processes of the
//! built binary (for kill -9 tests).
//!
//! One file per concern: [`pki`], [`federation`] (in this process), [`child`] (child
//! processes), [`proxy`], [`fixtures`] (requests as a county system sends them), [`calls`]
//! (what tests do to running gateways). Everything is re-exported here, so a test names
//! `common::X` whichever file X is in.

mod calls;
mod child;
mod federation;
mod fixtures;
mod pki;
mod proxy;

pub use calls::*;
pub use child::*;
pub use federation::*;
pub use fixtures::*;
pub use pki::*;
pub use proxy::*;

pub const PARTIES: [&str; 4] = ["zone", "changxing", "anji", "guangde"];
pub const TRUST_DOMAIN: &str = "yrd-huzhou";
