//! yrd-gateway: the cross-provincial data-sharing gateway of the Yangtze River Delta (Huzhou)
//! Industrial Cooperation Zone. Each party (the zone, Changxing, Anji, Guangde) runs one.
//!
//! # Layout
//!
//! Modules from the bottom up. Each entry ends by naming the modules it uses; a module uses
//! only modules listed before it, so there is no import circle. A test
//! (`tests/gateway/layout.rs`) reads this list and fails when a module uses one listed after
//! it, when the modules it names differ from the ones it uses, or when a module is missing
//! from the list.
//!
//! - [`domain`]: the shared vocabulary — the federation's members and their order
//!   ([`domain::Federation`]), record kinds, the party-id rule, the clock. Uses nothing.
//! - [`crypto`]: the federation's crypto profile ([`crypto::Profile`]: `intl` or `gm`) and its
//!   TLS provider; [`crypto::gm`] holds the 商用密码 primitives (SM2 signatures with
//!   distinguishing ids, SM3, SM4-GCM), SM2 certificates and CRLs, and RFC 8998 TLS as a
//!   rustls provider. Uses nothing.
//! - [`workdays`]: working-day deadlines over a holiday calendar (statutory holidays,
//!   adjusted working days), for answers to access requests. Uses nothing.
//! - [`store`]: durable storage, one trait per concern — [`store::RecordStore`] (records,
//!   writes, change log, feed), [`store::ReplicaStore`] (peers' changes, cursors, evidence),
//!   [`store::AuditStore`] (the audit events, linked into the hash chain here for every
//!   backend by [`store::link`], and witnessed heads), [`store::LeaseStore`] (pull lease,
//!   health, checkpoint); [`store::Store`] is all four. One file per concern in each
//!   backend: [`store::sqlite`] (embedded) and [`store::postgres`] (several replicas of a
//!   gateway on one database), both held to one conformance suite; backing up and restoring
//!   an SQLite store file ([`store::sqlite::backup`]). Uses [`domain`], [`crypto`] (the
//!   digest an erased envelope keeps).
//! - [`identity`]: SPIFFE ids in certificates and the access rules of SPEC §2; key files
//!   ([`identity::pem`]), TLS configs for both directions ([`identity::tls`]), the gateway's
//!   signing key ([`identity::signer`]) — from its file, or held by a PKCS#11 token
//!   ([`identity::pkcs11`]) behind one seam ([`identity::pem::gateway_key`]) — and the
//!   development PKI ([`identity::pki`]), each in the profile its files are of. Uses
//!   [`domain`], [`crypto`].
//! - [`vault`]: data at rest encrypted — the governed kinds' record bodies and the kept
//!   envelopes sealed (SM4-GCM in `gm`, AES-256-GCM in `intl`) under data keys of a key ring
//!   kept apart from the store, wrapped by a key-encryption key (a file, or an AES key in a
//!   PKCS#11 token); [`vault::SealedStore`] in front of either backend, where an erasure
//!   destroys the keys of what it erased, and [`vault::migrate`], which seals what an older
//!   store holds in clear. Uses [`domain`], [`crypto`], [`store`], [`identity`].
//! - [`config`]: the TOML file, validated into a typed [`config::Config`] before anything
//!   binds. Uses [`domain`], [`crypto`], [`workdays`], [`store`], [`vault`], [`identity`].
//! - [`membership`]: the digest of the federation's party list each gateway shows its peers,
//!   which peers showed another, and ([`membership::reload`]) the party list and peers
//!   changed while running by editing the config file. Uses [`domain`], [`crypto`],
//!   [`config`].
//! - [`records`]: the record families — projects, factor allocations with their decisions,
//!   referrals, catalog entries with sharing classes, access requests with their answers —
//!   their validation, and [`records::Records`], which applies ownership, idempotency and
//!   etag rules to every read and write: one file per family under `records/service/`, the
//!   negotiation status derivation in [`records::negotiation`]. [`records::Feed`] is the
//!   change feed with its wake-up signal, handed to whatever follows or extends it.
//!   Uses [`domain`], [`workdays`], [`store`].
//! - [`wire`]: the generated protobuf types ([`wire::pb`]) and every conversion between them
//!   and the domain, one file per record family, shared by api, exchange, audit and cli.
//!   Uses [`domain`], [`records`].
//! - [`sharing`]: what an owner sends each peer, decided by its catalog entries and the
//!   grants it gave (approved access requests, neither revoked nor expired), the default
//!   catalog, and ([`sharing::erasure`]) the receiver's erasure of what a grant that ended
//!   covered, with its deletion receipt. Uses [`domain`], [`store`], [`vault`], [`records`],
//!   [`wire`].
//! - [`exchange`]: replication between gateways — sharing policy, signature verification, the
//!   owner's outbound stream and the receiver's inbound pullers, evidence checks, and
//!   ([`exchange::recovery`]) taking this party's own changes back from its peers after a
//!   restore from an older backup (writes held until then). Uses [`domain`], [`crypto`],
//!   [`store`], [`identity`], [`config`], [`membership`], [`records`], [`wire`], [`sharing`].
//! - [`audit`]: the audit trail's single writer (concurrent events committed together, in one
//!   order), chain verification (each event by its own digest) and cross-party witnessing.
//!   Uses [`domain`], [`crypto`], [`store`], [`identity`], [`config`], [`membership`],
//!   [`wire`], [`exchange`].
//! - [`ops`]: metrics, health that follows the store and certificate, the admin HTTP server
//!   and status page. Uses [`domain`], [`crypto`], [`store`], [`identity`], [`vault`],
//!   [`membership`], [`records`], [`exchange`].
//! - [`api`]: the gRPC surface — the handlers, one file per record family, the authorization
//!   and call layers, the single error-to-status mapping. Uses [`domain`], [`store`],
//!   [`identity`], [`config`], [`membership`], [`records`], [`wire`], [`exchange`],
//!   [`audit`], [`ops`].
//! - [`http_json`]: HTTP/JSON access to the party-facing methods — routes from the protos'
//!   `google.api.http` options, JSON transcoded to the gRPC call and handed to the same
//!   [`api`] stack (limits, audit, authorization, validation), and the OpenAPI document.
//!   Uses [`config`], [`records`], [`wire`], [`api`].
//! - [`gateway`]: assembles one party's gateway from its config and serves it. Uses
//!   [`domain`], [`store`], [`vault`], [`identity`], [`config`], [`membership`], [`records`],
//!   [`wire`], [`sharing`], [`exchange`], [`audit`], [`ops`], [`api`], [`http_json`].
//! - [`cli`]: `serve`, `dev`, `certs init`, `audit`, `store backup`/`restore`, `bench` and the
//!   demo `client` (one file per record family under `cli/client/`), `keys`. Uses
//!   [`domain`], [`crypto`], [`store`], [`vault`], [`identity`], [`config`], [`records`],
//!   [`wire`], [`exchange`], [`audit`], [`gateway`].
//! - `fuzz` (in tests and with the `fuzzing` feature): every decoder and parser as a fuzz
//!   target. Uses [`domain`], [`crypto`], [`workdays`], [`store`], [`identity`], [`config`],
//!   [`records`], [`wire`], [`exchange`], [`api`], [`http_json`], [`cli`].
//!
//! Unit tests of a module `foo` live in a sibling file `foo/tests.rs`, declared at the end of
//! `foo.rs` as `#[cfg(test)] mod tests;`; the layout test refuses a `mod tests { … }` written
//! inline. Tests that need running gateways are in `tests/`, sharing the harness of
//! `tests/common/`.
//!
//! # How a call flows
//!
//! TCP accept → TLS 1.3 handshake with a mandatory client certificate
//! ([`identity::tls::incoming`] records the SPIFFE id) → tonic → (an HTTP/JSON request is
//! turned into its gRPC call by [`http_json`]) → [`api::calls`] admits the call
//! (rate, concurrency, timeout) and starts its audit event → [`api::authz`] decides from the
//! identity and the method whether the call may proceed → the handler converts the message
//! ([`wire`]) → [`records::Records`] validates and applies the rules of the record's
//! family → [`store::RecordStore::write`] commits record, change-log entry and idempotency key
//! in one durable group commit → [`records::Feed`] wakes Watch streams and peers' outbound
//! streams → the call's audit event is committed ([`api::calls`], [`audit::AuditLog`]) → the
//! reply.
//!
//! A change reaches a peer the other way round: the peer's inbound puller
//! ([`exchange::inbound`]) pulls the owner's [`exchange::outbound`] stream, which reads the
//! owner's change log through its [`records::Feed`], filters each record by the sharing policy
//! and signs the batch; the puller verifies, and [`records::Feed::apply`] commits the changes,
//! their evidence and the cursor in one transaction.

#![forbid(unsafe_code)]

pub mod api;
pub mod audit;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod domain;
pub mod exchange;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz;
pub mod gateway;
pub mod http_json;
pub mod identity;
pub mod membership;
pub mod ops;
pub mod records;
pub mod sharing;
pub mod store;
pub mod vault;
pub mod wire;
pub mod workdays;
