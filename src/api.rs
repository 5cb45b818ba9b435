//! The gRPC surface: the single mapping of domain errors to `tonic::Status` ([`error`]), the tower
//! layer that authorizes every call ([`authz`]), the call layer that admits and audits every
//! call ([`calls`]), and the handlers, one file per record family: [`projects`] with
//! [`referrals`], [`allocations`] with their decisions, [`directory`], [`catalog`], [`access`];
//! [`audit`], [`watch`] and [`federation`] for the services that are not a record family's.
//!
//! Handlers only translate: wire message in, `records` call, wire message out. What every
//! handler needs — the caller, a write's metadata — is here.

use prost::Message;
use sha2::{Digest, Sha256};
use tonic::{Request, Status};

use crate::identity::Caller;
use crate::records::WriteMeta;
use calls::AuditRecords;

mod access;
mod allocations;
mod audit;
pub mod authz;
pub mod calls;
mod catalog;
mod directory;
pub mod error;
mod federation;
mod projects;
mod referrals;
mod watch;
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) use watch::{parse_token, token};

pub use access::AccessApi;
pub use allocations::FactorApi;
pub use audit::AuditApi;
pub use catalog::CatalogApi;
pub use directory::DirectoryApi;
pub use federation::FederationApi;
pub use projects::ProjectApi;
pub use watch::WatchApi;

/// The caller the authorization layer attached to the request.
fn caller<T>(req: &Request<T>) -> Result<Caller, Status> {
    req.extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("no authenticated caller"))
}

/// What a write call hands the service: the request id and a hash of the request without it
/// (idempotency), and the call's audit event, which the store commits with the write (the
/// service names the records it reports; a call that writes nothing leaves it to the call
/// layer).
fn write_meta<M: Message + Clone>(
    audit: &AuditRecords,
    msg: &M,
    request_id: &str,
    clear: impl FnOnce(&mut M),
) -> WriteMeta {
    let mut bare = msg.clone();
    clear(&mut bare);
    WriteMeta {
        request_id: request_id.to_string(),
        fingerprint: Sha256::digest(bare.encode_to_vec()).to_vec(),
        audit: audit.for_write(),
    }
}
