//! The gRPC surface: generated protobuf types ([`pb`]), conversions between them and the
//! domain types, the single mapping of domain errors to `tonic::Status` ([`error`]), the tower
//! layer that authorizes every call ([`authz`]), and one handler type per service.
//!
//! Handlers only translate: wire message in, `records` call, wire message out.

mod audit;
pub mod authz;
pub mod calls;
mod convert;
pub mod error;
mod federation;
mod handlers;
mod watch;

pub use audit::AuditApi;
pub use convert::timestamp;
pub use federation::FederationApi;
pub use handlers::{DirectoryApi, FactorApi, ProjectApi};
pub use watch::WatchApi;

/// Generated protobuf and gRPC code for `yrd.exchange.v1`.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("yrd.exchange.v1");

    /// Encoded file descriptor set of every proto, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("yrd_descriptor");
}
