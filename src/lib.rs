//! yrd-gateway: the cross-provincial data-sharing gateway of the Yangtze River Delta (Huzhou)
//! Industrial Cooperation Zone. Each party (the zone, Changxing, Anji, Guangde) runs one.
//!
//! # Layout
//!
//! - [`config`]: the TOML file, validated into a typed [`config::Config`] before anything binds.
//! - [`identity`]: SPIFFE ids in certificates, the access rules of SPEC §2, TLS configs for
//!   both directions ([`identity::tls`]) and the development PKI ([`identity::pki`]).
//! - [`records`]: projects and factor allocations, their validation, and [`records::Records`],
//!   which applies ownership, idempotency and etag rules to every read and write.
//! - [`negotiation`]: the pure derivation of an allocation's status from its decisions.
//! - [`store`]: one storage trait; [`store::sqlite`] is the embedded backend,
//!   [`store::postgres`] the one several replicas of a gateway can share.
//! - [`exchange`]: replication between gateways — sharing policy, signatures, the owner's
//!   outbound stream and the receiver's inbound pullers.
//! - [`api`]: the gRPC surface — generated types, handlers, the authorization layer and the
//!   single error-to-status mapping.
//! - [`ops`]: metrics, health that follows the store and certificate, the admin HTTP server
//!   and status page.
//! - [`audit`]: the hash-chained audit trail, its verification, and cross-party witnessing.
//! - [`gateway`]: assembles one party's gateway from its config and serves it.
//! - [`cli`]: `serve`, `dev`, `certs init` and the demo `client`.
//!
//! # How a call flows
//!
//! TCP accept → TLS 1.3 handshake with a mandatory client certificate
//! ([`identity::tls::incoming`] records the SPIFFE id) → tonic → [`api::authz`] decides from the
//! identity and the method whether the call may proceed → the handler converts the message →
//! [`records::Records`] validates and applies the rules → [`store::Store`] commits record,
//! change-log entry and idempotency key in one durable transaction → the call's audit event
//! is committed ([`api::calls`]) → the reply.

#![forbid(unsafe_code)]

pub mod api;
pub mod audit;
pub mod cli;
pub mod config;
pub mod domain;
pub mod exchange;
pub mod gateway;
pub mod identity;
pub mod ops;
pub mod records;
pub mod store;
pub mod wire;
