//! Integration tests of the gateway core over real mutual TLS and real SQLite files.
//! One test binary (modules below) so the suite links once.

#[path = "../common/mod.rs"]
mod common;

mod access;
mod at_rest;
mod audit;
mod backup;
mod bench;
mod catalog;
mod dev_command;
mod docs;
mod durability;
mod exchange;
mod flood;
mod gm;
mod grants;
mod http_json;
mod identity;
mod keys;
mod layout;
mod malformed;
mod membership;
mod negotiation;
mod operations;
mod records;
mod replicas;
