//! Data at rest, encrypted: every version of a record that carries personal or sensitive
//! items (the catalog-governed kinds: projects, allocations, decisions, referrals and their
//! answers) and every envelope kept as evidence is sealed with an AEAD before it reaches the
//! store — SM4-GCM in the `gm` profile, AES-256-GCM in `intl` — under a data key of the key
//! ring ([`keyring::KeyRing`]), which lives apart from the store, wrapped by a key-encryption
//! key ([`kek::Kek`]). The associated data binds each ciphertext to where it belongs: a
//! body to its owner, record name and revision; an envelope to its owner and sequence
//! number; both to the key that sealed it. A ciphertext moved anywhere else does not open.
//!
//! What stays in clear is what the store must query: kind, owner, id, revision, the list
//! filters (stage, industry, factor kind, parent), sequence numbers, positions and times,
//! the catalog entries and access requests (the gateway decides with them what it sends and
//! erases, and they carry no item of the records they govern), the audit trail (calls and
//! resource names), signatures, manifests (digests) and signer certificates.
//!
//! [`SealedStore`] puts this in front of either backend; [`migrate`] seals what an older
//! store holds in clear. A gateway without `[keys]` writes in clear and answers a read of a
//! sealed record with [`StoreError::Sealed`], never with ciphertext.

pub mod cipher;
pub mod kek;
pub mod keyring;
mod migrate;
mod sealed;
mod split;

use std::path::PathBuf;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

pub use migrate::{Migrated, migrate};
pub use sealed::SealedStore;
pub use split::{emptied, restrictable_leaves};

use crate::crypto::Profile;
use crate::domain::RecordKind;
use crate::store::{StoreError, StoredRecord};
use cipher::Algorithm;
use keyring::KeyRing;

/// Where the keys are (`[keys]` in the config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeysConfig {
    /// The key-encryption key: a file, or an AES key in a PKCS#11 token.
    pub kek: KekSource,
    /// The key ring file (wrapped data keys); never beside the store in its backups.
    pub ring: PathBuf,
}

/// Where the key-encryption key is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KekSource {
    File(PathBuf),
    Token(crate::identity::pem::Pkcs11KeySpec),
}

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// The key-encryption key is missing, unreadable, too open, or not the ring's.
    #[error("{0}")]
    Kek(String),
    /// The key ring file cannot be used.
    #[error("key ring: {0}")]
    Ring(String),
    /// A key of the wrong length or algorithm.
    #[error("{0}")]
    Key(String),
    #[error("data key {0} is not in the key ring (was the ring replaced by another one?)")]
    UnknownKey(u64),
    #[error("data key {id} was destroyed (at {time} µs since the epoch): what it sealed is erased")]
    Destroyed { id: u64, time: i64 },
    /// The ciphertext, its place or its key changed: it does not open.
    #[error("the sealed data does not open: it was changed, or moved from another record or row")]
    Tampered,
    #[error("the sealed data is malformed: {0}")]
    Malformed(String),
}

impl VaultError {
    /// As a store error about `what` (e.g. "changxing/project/…, revision 2").
    pub fn into_store(self, what: &str) -> StoreError {
        match self {
            VaultError::Tampered | VaultError::Malformed(_) => {
                StoreError::Corrupt(format!("{what}: {self}"))
            }
            VaultError::Ring(_) => StoreError::Unavailable(format!("{what}: {self}")),
            other => StoreError::Sealed(format!("{what}: {other}")),
        }
    }
}

/// The kinds whose bodies are sealed: those a catalog governs, where personal and sensitive
/// items are.
pub fn seals(kind: RecordKind) -> bool {
    RecordKind::GOVERNED.contains(&kind)
}

/// How a sealed body starts (a body in clear is a JSON object and starts with `{`).
const BODY_PREFIX: &str = "yrd-sealed:";
/// How a sealed envelope starts: a zero byte never starts an encoded protobuf message.
const ENVELOPE_MAGIC: [u8; 4] = [0, b'Y', b'S', 1];

/// Whether `body` is sealed.
pub fn is_sealed_body(body: &str) -> bool {
    body.starts_with(BODY_PREFIX)
}

/// Whether `envelope` is sealed.
pub fn is_sealed_envelope(envelope: &[u8]) -> bool {
    envelope.starts_with(&ENVELOPE_MAGIC)
}

/// The key ring with the profile new keys are made for.
pub struct Vault {
    ring: KeyRing,
    algorithm: Algorithm,
    /// Bodies opened lately, by what they were opened as: a read of a record that was read
    /// lately costs no AEAD. Emptied when keys are destroyed.
    opened: std::sync::RwLock<std::collections::HashMap<Opened, Arc<str>>>,
    /// The ring's version the opened bodies were opened under: another process's erasure
    /// empties them too.
    opened_under: std::sync::atomic::AtomicI64,
}

/// Bodies kept opened at most (about 0.6 KB each).
const OPENED_CAPACITY: usize = 4096;

/// What a body was opened as: the start of its ciphertext (the key and the random nonce, so
/// no two seals share it) and the record version it belongs to (a ciphertext moved to another
/// record is never answered from here: it must open there; a record's kind and id name it in
/// the store whatever its owner).
#[derive(Clone, PartialEq, Eq, Hash)]
struct Opened {
    sealed: [u8; OPENED_PREFIX],
    kind: RecordKind,
    id: uuid::Uuid,
    revision: i64,
}

/// Bytes of a sealed body that name it: prefix, format, key id, and more than the 16 base64
/// characters of the nonce.
const OPENED_PREFIX: usize = 64;

impl Opened {
    fn of(record: &StoredRecord) -> Opened {
        let mut sealed = [0u8; OPENED_PREFIX];
        let start = record.body.as_bytes();
        let n = start.len().min(OPENED_PREFIX);
        sealed[..n].copy_from_slice(&start[..n]);
        Opened {
            sealed,
            kind: record.kind,
            id: record.id,
            revision: record.revision,
        }
    }
}

impl Vault {
    /// Loads the key-encryption key and opens the ring `config` names.
    pub fn open(config: &KeysConfig, profile: Profile) -> Result<Arc<Vault>, VaultError> {
        let kek = match &config.kek {
            KekSource::File(path) => kek::Kek::from_file(path)?,
            KekSource::Token(spec) => kek::Kek::from_token(spec)?,
        };
        let ring = KeyRing::open(&config.ring, kek)?;
        Ok(Arc::new(Vault {
            ring,
            algorithm: Algorithm::of(profile),
            opened: Default::default(),
            opened_under: Default::default(),
        }))
    }

    pub fn ring(&self) -> &KeyRing {
        &self.ring
    }

    /// The algorithm new data keys get.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// `record`'s body sealed under the current key of its owner's kind, the items at
    /// `apart` (those a grant or `open_to` admits, of a replica) apart, under the current key
    /// of the kind's items ([`split`]).
    pub fn seal_body(&self, record: &StoredRecord, apart: &[String]) -> Result<String, VaultError> {
        let parts = split::split(&record.body, apart);
        let lasting = parts.as_ref().map_or(record.body.as_str(), |(l, _)| l);
        let mut out = String::with_capacity(BODY_PREFIX.len() + 48 + record.body.len() * 3 / 2);
        out.push_str(BODY_PREFIX);
        out.push_str(if parts.is_some() { "2:" } else { "1:" });
        self.seal_part(
            record,
            &lasting_scope(record),
            Part::Body,
            lasting,
            &mut out,
        )?;
        if let Some((_, items)) = &parts {
            out.push(':');
            self.seal_part(record, &items_scope(record), Part::Items, items, &mut out)?;
        }
        Ok(out)
    }

    fn seal_part(
        &self,
        record: &StoredRecord,
        scope: &str,
        part: Part,
        text: &str,
        out: &mut String,
    ) -> Result<(), VaultError> {
        let (id, key) = self.ring.current(scope, self.algorithm)?;
        let mut sealed = Vec::with_capacity(text.len() + 28);
        key.seal_into(&body_aad(record, id, part), text.as_bytes(), &mut sealed)?;
        out.push_str(&id.to_string());
        out.push(':');
        URL_SAFE_NO_PAD.encode_string(&sealed, out);
        Ok(())
    }

    /// The body `record` holds sealed, in clear. Items whose key was destroyed are left
    /// empty: they were erased.
    pub fn open_body(&self, record: &StoredRecord) -> Result<String, VaultError> {
        let key = Opened::of(record);
        let version = self.ring.version()?;
        if self
            .opened_under
            .swap(version, std::sync::atomic::Ordering::Relaxed)
            != version
        {
            self.opened
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .clear();
        }
        if let Some(body) = self
            .opened
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(body.to_string());
        }
        let (body, _) = self.open_body_apart(record)?;
        let mut opened = self.opened.write().unwrap_or_else(|e| e.into_inner());
        if opened.len() >= OPENED_CAPACITY {
            opened.clear();
        }
        opened.insert(key, Arc::from(body.as_str()));
        Ok(body)
    }

    /// As [`Vault::open_body`], with the paths of the items that were sealed apart.
    pub fn open_body_apart(
        &self,
        record: &StoredRecord,
    ) -> Result<(String, Vec<String>), VaultError> {
        let parts = parse_body(&record.body)?;
        let lasting = self.open_part(record, &parts[0], Part::Body)?;
        let Some(items) = parts.get(1) else {
            return Ok((lasting, Vec::new()));
        };
        match self.open_part(record, items, Part::Items) {
            Ok(items) => Ok((
                split::merge(&lasting, &items).map_err(VaultError::Malformed)?,
                split::paths_of(&items),
            )),
            Err(VaultError::Destroyed { .. }) => Ok((lasting, Vec::new())),
            Err(e) => Err(e),
        }
    }

    fn open_part(
        &self,
        record: &StoredRecord,
        (id, sealed): &(u64, Vec<u8>),
        part: Part,
    ) -> Result<String, VaultError> {
        let key = self.ring.key(*id)?;
        let clear = key.open(&body_aad(record, *id, part), sealed)?;
        String::from_utf8(clear).map_err(|_| VaultError::Malformed("not UTF-8".into()))
    }

    /// Whether a sealed body is not under the current keys of its scopes (it must be sealed
    /// anew before the earlier keys are destroyed).
    pub fn stale_body(&self, record: &StoredRecord) -> Result<bool, VaultError> {
        let parts = parse_body(&record.body)?;
        let scopes = [lasting_scope(record), items_scope(record)];
        for ((id, _), scope) in parts.iter().zip(scopes.iter()) {
            if self.ring.current_id(scope)? != Some(*id) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Whether a sealed envelope is not under the current key of its owner's evidence.
    pub fn stale_envelope(&self, owner: &str, sealed: &[u8]) -> Result<bool, VaultError> {
        Ok(self.ring.current_id(&envelope_scope(owner))? != Some(envelope_key(sealed)?))
    }

    /// Before an erasure of `owner`'s items of `kind` (with `whole`, of its records of that
    /// kind): new current keys for the items, the evidence and (with `whole`) the bodies.
    /// Returns the scopes rotated, whose earlier keys [`Vault::destroy_retired`] destroys once
    /// every copy was sealed anew.
    pub fn rotate_for_erasure(
        &self,
        owner: &str,
        kind: RecordKind,
        whole: bool,
    ) -> Result<Vec<String>, VaultError> {
        let probe = StoredRecord {
            kind,
            owner: owner.to_string(),
            id: uuid::Uuid::nil(),
            revision: 0,
            index: Default::default(),
            body: String::new(),
        };
        let mut scopes = vec![items_scope(&probe), envelope_scope(owner)];
        if whole {
            scopes.push(lasting_scope(&probe));
        }
        for scope in &scopes {
            self.ring.rotate(scope, self.algorithm)?;
        }
        Ok(scopes)
    }

    /// Destroys every key of `scopes` but the current ones; returns how many.
    pub fn destroy_retired(&self, scopes: &[String]) -> Result<u64, VaultError> {
        self.opened
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        let mut destroyed = 0;
        for scope in scopes {
            destroyed += self.ring.destroy_retired(scope)?.len() as u64;
        }
        Ok(destroyed)
    }

    /// `envelope` (kept as evidence of `owner`'s change `seq`) sealed.
    pub fn seal_envelope(
        &self,
        owner: &str,
        seq: u64,
        envelope: &[u8],
    ) -> Result<Vec<u8>, VaultError> {
        let (id, key) = self.ring.current(&envelope_scope(owner), self.algorithm)?;
        let mut out = Vec::with_capacity(envelope.len() + 40);
        out.extend_from_slice(&ENVELOPE_MAGIC);
        out.extend_from_slice(&id.to_be_bytes());
        key.seal_into(&envelope_aad(owner, seq, id), envelope, &mut out)?;
        Ok(out)
    }

    /// The envelope `sealed` holds, in clear.
    pub fn open_envelope(
        &self,
        owner: &str,
        seq: u64,
        sealed: &[u8],
    ) -> Result<Vec<u8>, VaultError> {
        let id = envelope_key(sealed)?;
        let key = self.ring.key(id)?;
        key.open(
            &envelope_aad(owner, seq, id),
            &sealed[ENVELOPE_MAGIC.len() + 8..],
        )
    }
}

/// Which part of a body a ciphertext holds.
#[derive(Clone, Copy)]
enum Part {
    Body,
    Items,
}

/// The parts of a sealed body: (key id, sealed bytes) of what lasts, then of the items.
fn parse_body(body: &str) -> Result<Vec<(u64, Vec<u8>)>, VaultError> {
    let rest = body
        .strip_prefix(BODY_PREFIX)
        .ok_or_else(|| VaultError::Malformed("not a sealed body".into()))?;
    let (version, rest) = rest
        .split_once(':')
        .ok_or_else(|| VaultError::Malformed("no format".into()))?;
    let fields: Vec<&str> = rest.split(':').collect();
    let parts = match version {
        "1" => 1,
        "2" => 2,
        other => return Err(VaultError::Malformed(format!("format `{other}`"))),
    };
    if fields.len() != parts * 2 {
        return Err(VaultError::Malformed(format!("{} fields", fields.len())));
    }
    fields
        .chunks(2)
        .map(|pair| {
            let id = pair[0]
                .parse()
                .map_err(|_| VaultError::Malformed(format!("key id `{}`", pair[0])))?;
            let sealed = URL_SAFE_NO_PAD
                .decode(pair[1])
                .map_err(|e| VaultError::Malformed(e.to_string()))?;
            Ok((id, sealed))
        })
        .collect()
}

/// The key a sealed envelope names.
fn envelope_key(sealed: &[u8]) -> Result<u64, VaultError> {
    sealed
        .get(ENVELOPE_MAGIC.len()..ENVELOPE_MAGIC.len() + 8)
        .filter(|_| is_sealed_envelope(sealed))
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| VaultError::Malformed("not a sealed envelope".into()))
}

/// The keys that seal a sealed body (what lasts, then the items if apart).
pub fn keys_of_body(body: &str) -> Vec<u64> {
    parse_body(body)
        .map(|parts| parts.into_iter().map(|(id, _)| id).collect())
        .unwrap_or_default()
}

/// The key that seals a sealed envelope.
pub fn key_of_envelope(envelope: &[u8]) -> Option<u64> {
    envelope_key(envelope).ok()
}

fn lasting_scope(record: &StoredRecord) -> String {
    format!("{}/{}", record.owner, record.kind.as_str())
}

fn items_scope(record: &StoredRecord) -> String {
    format!("{}/{}/items", record.owner, record.kind.as_str())
}

fn envelope_scope(owner: &str) -> String {
    format!("{owner}/evidence")
}

fn body_aad(record: &StoredRecord, key: u64, part: Part) -> Vec<u8> {
    format!(
        "yrd-gateway sealed {}\0{}\0{}\0{}\0{}\0{key}",
        match part {
            Part::Body => "body",
            Part::Items => "items",
        },
        record.owner,
        record.kind.as_str(),
        record.id,
        record.revision
    )
    .into_bytes()
}

fn envelope_aad(owner: &str, seq: u64, key: u64) -> Vec<u8> {
    format!("yrd-gateway sealed envelope\0{owner}\0{seq}\0{key}").into_bytes()
}

#[cfg(test)]
mod tests;
