//! The wire types every layer that talks protobuf shares: the generated code of
//! `yrd.exchange.v1` ([`pb`]) and the conversions between it and the domain ([`convert`]) —
//! records, record kinds, timestamps. The gRPC handlers (`api`), replication (`exchange`),
//! witnessing (`audit`) and the command line (`cli`) all use these, so no conversion is
//! written twice.

pub mod access;
pub mod catalog;
pub mod codec;
pub mod convert;

pub use codec::{ERROR_DOMAIN, MALFORMED_REQUEST};
pub use convert::{kind_from_wire, kind_to_wire, micros_in_range, micros_of, timestamp};

/// Generated protobuf and gRPC code for `yrd.exchange.v1`.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("yrd.exchange.v1");

    /// Encoded file descriptor set of every proto, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("yrd_descriptor");
}
