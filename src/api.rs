//! The gRPC surface: the single mapping of domain errors to `tonic::Status` ([`error`]), the tower
//! layer that authorizes every call ([`authz`]), and one handler type per service.
//!
//! Handlers only translate: wire message in, `records` call, wire message out.

mod access;
mod audit;
pub mod authz;
pub mod calls;
mod catalog;
pub mod error;
mod federation;
mod handlers;
mod watch;
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) use watch::{parse_token, token};

pub use access::AccessApi;
pub use audit::AuditApi;
pub use catalog::CatalogApi;
pub use federation::FederationApi;
pub use handlers::{DirectoryApi, FactorApi, ProjectApi};
pub use watch::WatchApi;
