//! [`SealedStore`]: the store as the rest of the gateway sees it, in front of either backend.
//! What goes in is sealed (record bodies of the governed kinds, kept envelopes); what comes
//! out is opened. A replica of another party's record is sealed in two parts, its erasable
//! items apart ([`super::split`]).
//!
//! A redaction — the erasure of what a grant that ended covered — is where keys are destroyed:
//! the keys of the owner's items of that kind and of its kept envelopes (with the records
//! themselves, of its bodies too) are rotated first; the redaction's functions see every copy
//! in clear, and every copy it passes over is sealed under the current keys; a second pass,
//! once other processes sharing the ring must have seen the new keys, seals what they wrote
//! meanwhile; then the earlier keys are destroyed, so every copy sealed under them — in
//! backups, PostgreSQL's dead row versions, its standbys and WAL, disk snapshots — is
//! unreadable for good. Writes of this process in flight when the keys turn finish first.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use uuid::Uuid;

use super::{Vault, is_sealed_body, is_sealed_envelope, seals};
use crate::domain::RecordKind;
use crate::store::*;

/// A store whose governed record bodies and kept envelopes are sealed at rest. Without a
/// vault it writes in clear and refuses, with [`StoreError::Sealed`], to read what is sealed.
pub struct SealedStore {
    inner: Arc<dyn Store>,
    sealer: Sealer,
    /// Held shared by every write from its sealing to its commit, and alone by an erasure
    /// from its key rotation to the destruction of the earlier keys: no write of this process
    /// seals under a key about to be destroyed.
    gate: tokio::sync::RwLock<()>,
}

impl SealedStore {
    /// The store of `party` (whose own records are sealed whole; other parties' in two parts).
    pub fn new(inner: Arc<dyn Store>, vault: Option<Arc<Vault>>, party: &str) -> SealedStore {
        SealedStore {
            inner,
            sealer: Sealer {
                vault,
                party: party.to_string(),
                sealed_in_place: Arc::default(),
            },
            gate: tokio::sync::RwLock::new(()),
        }
    }

    /// Whether it seals what it writes.
    pub fn seals(&self) -> bool {
        self.sealer.vault.is_some()
    }

    /// How many copies redactions found in clear and sealed, since this store was opened.
    pub fn sealed_in_place(&self) -> u64 {
        self.sealer.sealed_in_place.load(Ordering::Relaxed)
    }

    /// Seals, in one transaction, every copy of `owner`'s records of `kind` (and every
    /// envelope kept of `owner`'s changes) still in clear; copies sealed already are only
    /// looked at, never opened.
    pub(super) async fn seal_in_place(
        &self,
        owner: &str,
        kind: RecordKind,
    ) -> Result<(), StoreError> {
        let (bodies, envelopes) = (self.sealer.clone(), self.sealer.clone());
        let owned = owner.to_string();
        let redaction = Redaction {
            owner: owner.to_string(),
            kind,
            body: Arc::new(move |stored: &StoredRecord| {
                if is_sealed_body(&stored.body) || !seals(stored.kind) {
                    return Ok(None);
                }
                bodies.sealed_in_place.fetch_add(1, Ordering::Relaxed);
                Ok(Some(BodyRewrite {
                    body: bodies
                        .seal(stored.clone(), &super::restrictable_leaves(stored.kind))?
                        .body,
                    erases: false,
                }))
            }),
            envelope: Arc::new(move |seq, stored: &[u8], _| {
                if is_sealed_envelope(stored) {
                    return Ok(None);
                }
                envelopes.sealed_in_place.fetch_add(1, Ordering::Relaxed);
                Ok(Some(EnvelopeRewrite {
                    envelope: envelopes.seal_envelope(&owned, seq, stored.to_vec())?,
                    erased_from: None,
                }))
            }),
            delete_records: false,
        };
        self.inner.redact(redaction).await.map(|_| ())
    }
}

/// Seals and opens; cloned into the functions of a redaction.
#[derive(Clone)]
struct Sealer {
    vault: Option<Arc<Vault>>,
    party: String,
    sealed_in_place: Arc<AtomicU64>,
}

/// How a record version is named in messages.
fn named(record: &StoredRecord) -> String {
    format!(
        "{}/{}/{} revision {}",
        record.owner,
        record.kind.as_str(),
        record.id,
        record.revision
    )
}

/// Without a key provider: what a read of sealed data answers.
fn no_vault(what: &str) -> StoreError {
    StoreError::Sealed(format!(
        "{what} is encrypted at rest and this gateway has no key provider: set [keys] kek_file and ring in its config"
    ))
}

impl Sealer {
    /// `record` as stored: its body sealed when its kind is sealed and a vault is set.
    /// Another party's items at `apart` are sealed apart (see [`Vault::seal_body`]).
    fn seal(&self, mut record: StoredRecord, apart: &[String]) -> Result<StoredRecord, StoreError> {
        if let Some(vault) = &self.vault
            && seals(record.kind)
            && !is_sealed_body(&record.body)
        {
            let apart = if record.owner == self.party {
                &[]
            } else {
                apart
            };
            record.body = vault
                .seal_body(&record, apart)
                .map_err(|e| e.into_store(&named(&record)))?;
        }
        Ok(record)
    }

    /// `record` as read: its body opened when sealed.
    fn open(&self, record: StoredRecord) -> Result<StoredRecord, StoreError> {
        self.open_held(record)?.ok_or_else(|| {
            StoreError::Sealed("a record version whose key was destroyed (erased)".into())
        })
    }

    /// As [`Sealer::open`], `None` for a version whose key was destroyed: an erasure deleted
    /// the records of its kind (the copy comes from a store restored from an older backup).
    fn open_held(&self, mut record: StoredRecord) -> Result<Option<StoredRecord>, StoreError> {
        if !is_sealed_body(&record.body) {
            return Ok(Some(record));
        }
        let Some(vault) = &self.vault else {
            return Err(no_vault(&named(&record)));
        };
        match vault.open_body(&record) {
            Ok(body) => {
                record.body = body;
                Ok(Some(record))
            }
            Err(super::VaultError::Destroyed { .. }) => Ok(None),
            Err(e) => Err(e.into_store(&named(&record))),
        }
    }

    /// A stored copy in clear, with the paths of the items it held sealed apart.
    fn open_apart(&self, record: StoredRecord) -> Result<(StoredRecord, Vec<String>), StoreError> {
        if !is_sealed_body(&record.body) {
            return Ok((record, Vec::new()));
        }
        let Some(vault) = &self.vault else {
            return Err(no_vault(&named(&record)));
        };
        let (body, apart) = vault
            .open_body_apart(&record)
            .map_err(|e| e.into_store(&named(&record)))?;
        Ok((StoredRecord { body, ..record }, apart))
    }

    /// Whether a stored copy must be sealed (anew): it is in clear, or sealed under keys that
    /// are no longer current.
    fn body_to_seal(&self, stored: &StoredRecord) -> Result<bool, StoreError> {
        let Some(vault) = &self.vault else {
            return Ok(false);
        };
        if !seals(stored.kind) {
            return Ok(false);
        }
        if !is_sealed_body(&stored.body) {
            return Ok(true);
        }
        vault
            .stale_body(stored)
            .map_err(|e| e.into_store(&named(stored)))
    }

    fn envelope_to_seal(&self, owner: &str, stored: &[u8]) -> Result<bool, StoreError> {
        let Some(vault) = &self.vault else {
            return Ok(false);
        };
        if !is_sealed_envelope(stored) {
            return Ok(true);
        }
        vault
            .stale_envelope(owner, stored)
            .map_err(|e| e.into_store(&format!("the evidence of {owner}")))
    }

    /// The records that are still held, opened.
    fn open_all(&self, records: Vec<StoredRecord>) -> Result<Vec<StoredRecord>, StoreError> {
        let mut out = Vec::with_capacity(records.len());
        for record in records {
            out.extend(self.open_held(record)?);
        }
        Ok(out)
    }

    fn open_change(&self, mut change: Change) -> Result<Change, StoreError> {
        change.record = self.open(change.record)?;
        Ok(change)
    }

    fn seal_envelope(
        &self,
        owner: &str,
        seq: u64,
        envelope: Vec<u8>,
    ) -> Result<Vec<u8>, StoreError> {
        match &self.vault {
            Some(vault) if !is_sealed_envelope(&envelope) => vault
                .seal_envelope(owner, seq, &envelope)
                .map_err(|e| e.into_store(&format!("the evidence of {owner}'s change {seq}"))),
            _ => Ok(envelope),
        }
    }

    fn open_envelope(
        &self,
        owner: &str,
        seq: u64,
        envelope: Vec<u8>,
    ) -> Result<Vec<u8>, StoreError> {
        if !is_sealed_envelope(&envelope) {
            return Ok(envelope);
        }
        let what = format!("the evidence of {owner}'s change {seq}");
        match &self.vault {
            Some(vault) => vault
                .open_envelope(owner, seq, &envelope)
                .map_err(|e| e.into_store(&what)),
            None => Err(no_vault(&what)),
        }
    }

    /// `redaction` over sealed copies: its functions see them in clear; what they rewrite,
    /// and every copy they leave alone that is in clear or under a key no longer current, is
    /// sealed under the current keys.
    fn sealing(&self, redaction: Redaction) -> Redaction {
        let (sealer, body) = (self.clone(), redaction.body.clone());
        let sealed_body: RewriteBody = Arc::new(move |stored: &StoredRecord| {
            let to_seal = sealer.body_to_seal(stored)?;
            let (clear, apart) = sealer.open_apart(stored.clone())?;
            let (new, erases) = match body(&clear)? {
                Some(r) => (
                    StoredRecord {
                        body: r.body,
                        ..clear
                    },
                    r.erases,
                ),
                None if to_seal => (clear, false),
                None => return Ok(None),
            };
            if !erases {
                sealer.sealed_in_place.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Some(BodyRewrite {
                body: sealer.seal(new, &apart)?.body,
                erases,
            }))
        });
        let (sealer, envelope, owner) = (
            self.clone(),
            redaction.envelope.clone(),
            redaction.owner.clone(),
        );
        let sealed_envelope: RewriteEnvelope = Arc::new(move |seq, stored: &[u8], scheme| {
            let to_seal = sealer.envelope_to_seal(&owner, stored)?;
            let clear = sealer.open_envelope(&owner, seq, stored.to_vec())?;
            let rewrite = match envelope(seq, &clear, scheme)? {
                Some(r) => r,
                None if to_seal => {
                    sealer.sealed_in_place.fetch_add(1, Ordering::Relaxed);
                    EnvelopeRewrite {
                        envelope: clear,
                        erased_from: None,
                    }
                }
                None => return Ok(None),
            };
            Ok(Some(EnvelopeRewrite {
                envelope: sealer.seal_envelope(&owner, seq, rewrite.envelope)?,
                erased_from: rewrite.erased_from,
            }))
        });
        Redaction {
            body: sealed_body,
            envelope: sealed_envelope,
            ..redaction
        }
    }
}

/// A redaction that changes nothing itself: passed through [`Sealer::sealing`], it seals
/// anew what is not under the current keys.
fn reseal(owner: &str, kind: RecordKind) -> Redaction {
    Redaction {
        owner: owner.to_string(),
        kind,
        body: Arc::new(|_: &StoredRecord| Ok(None)),
        envelope: Arc::new(|_, _: &[u8], _| Ok(None)),
        delete_records: false,
    }
}

#[async_trait]
impl RecordStore for SealedStore {
    async fn get(
        &self,
        kind: RecordKind,
        owner: &str,
        id: Uuid,
    ) -> Result<Option<StoredRecord>, StoreError> {
        match self.inner.get(kind, owner, id).await? {
            Some(r) => self.sealer.open_held(r),
            None => Ok(None),
        }
    }

    async fn list(&self, query: ListQuery) -> Result<Vec<StoredRecord>, StoreError> {
        self.sealer.open_all(self.inner.list(query).await?)
    }

    async fn replay(&self, key: &Idempotency) -> Result<Option<StoredRecord>, StoreError> {
        self.inner
            .replay(key)
            .await?
            .map(|r| self.sealer.open(r))
            .transpose()
    }

    async fn write(&self, mut write: Write) -> Result<WriteOutcome, StoreError> {
        let _gate = self.gate.read().await;
        let clear = write.record.clone();
        write.record = self.sealer.seal(write.record, &[])?;
        let sealed = write.record.body.clone();
        write.also_create = write
            .also_create
            .into_iter()
            .map(|r| self.sealer.seal(r, &[]))
            .collect::<Result<_, _>>()?;
        Ok(match self.inner.write(write).await? {
            // The version just written: its body in clear is the one sealed here.
            WriteOutcome::Applied(r) if r.body == sealed => WriteOutcome::Applied(StoredRecord {
                body: clear.body,
                ..r
            }),
            WriteOutcome::Applied(r) => WriteOutcome::Applied(self.sealer.open(r)?),
            WriteOutcome::Replayed(r) => WriteOutcome::Replayed(self.sealer.open(r)?),
        })
    }

    async fn changes(
        &self,
        owner: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Change>, StoreError> {
        self.inner
            .changes(owner, after, limit)
            .await?
            .into_iter()
            .map(|c| self.sealer.open_change(c))
            .collect()
    }

    async fn last_seq(&self, owner: &str) -> Result<u64, StoreError> {
        self.inner.last_seq(owner).await
    }

    async fn feed(&self, after: u64, limit: usize) -> Result<Vec<FeedEntry>, StoreError> {
        self.inner
            .feed(after, limit)
            .await?
            .into_iter()
            .filter_map(|e| {
                let position = e.position;
                let Change {
                    owner,
                    seq,
                    time,
                    record,
                } = e.change;
                match self.sealer.open_held(record) {
                    Ok(Some(record)) => Some(Ok(FeedEntry {
                        position,
                        change: Change {
                            owner,
                            seq,
                            time,
                            record,
                        },
                    })),
                    // Erased: the feed goes on without it.
                    Ok(None) => None,
                    Err(e) => Some(Err(e)),
                }
            })
            .collect()
    }

    async fn feed_position(&self) -> Result<u64, StoreError> {
        self.inner.feed_position().await
    }

    fn feed_signal(&self) -> Option<Arc<tokio::sync::watch::Sender<u64>>> {
        self.inner.feed_signal()
    }
}

#[async_trait]
impl ReplicaStore for SealedStore {
    async fn cursor(&self, owner: &str) -> Result<u64, StoreError> {
        self.inner.cursor(owner).await
    }

    async fn evidence(
        &self,
        owner: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvidence>, StoreError> {
        self.inner
            .evidence(owner, after_seq, limit)
            .await?
            .into_iter()
            .map(|mut e| {
                e.envelope = self.sealer.open_envelope(owner, e.seq, e.envelope)?;
                Ok(e)
            })
            .collect()
    }

    async fn apply_replicas(&self, mut batch: ReplicaBatch) -> Result<u64, StoreError> {
        let _gate = self.gate.read().await;
        for change in &mut batch.changes {
            if let Some(record) = change.record.take() {
                change.record = Some(self.sealer.seal(record, &change.apart)?);
            }
            let envelope = std::mem::take(&mut change.evidence.envelope);
            change.evidence.envelope =
                self.sealer
                    .seal_envelope(&batch.owner, change.seq, envelope)?;
        }
        self.inner.apply_replicas(batch).await
    }

    async fn redact(&self, redaction: Redaction) -> Result<Redacted, StoreError> {
        let (owner, kind) = (redaction.owner.clone(), redaction.kind);
        let Some(vault) = self
            .sealer
            .vault
            .clone()
            .filter(|_| owner != self.sealer.party)
        else {
            return self.inner.redact(self.sealer.sealing(redaction)).await;
        };
        let what = format!("the keys of {owner}'s {}", kind.as_str());
        let scopes = {
            // Writes of this process that sealed under the earlier keys commit first; the
            // ones after seal under the new keys.
            let _gate = self.gate.write().await;
            vault
                .rotate_for_erasure(&owner, kind, redaction.delete_records)
                .map_err(|e| e.into_store(&what))?
        };
        let mut done = self.inner.redact(self.sealer.sealing(redaction)).await?;
        // Another process sharing the ring and the store (a replica) sees the new keys within
        // REREAD; what it sealed under the earlier ones until then is sealed anew.
        tokio::time::sleep(super::keyring::REREAD * 3).await;
        self.inner
            .redact(self.sealer.sealing(reseal(&owner, kind)))
            .await?;
        done.keys_destroyed = vault
            .destroy_retired(&scopes)
            .map_err(|e| e.into_store(&what))?;
        Ok(done)
    }

    async fn take_back(&self, owner: &str, changes: Vec<Change>) -> Result<u64, StoreError> {
        let _gate = self.gate.read().await;
        let sealed = changes
            .into_iter()
            .map(|mut c| {
                c.record = self.sealer.seal(c.record, &[])?;
                Ok(c)
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        self.inner.take_back(owner, sealed).await
    }

    async fn restored_mark(&self) -> Result<Option<i64>, StoreError> {
        self.inner.restored_mark().await
    }

    async fn set_restored_mark(&self, time: Option<i64>) -> Result<(), StoreError> {
        self.inner.set_restored_mark(time).await
    }
}

#[async_trait]
impl AuditStore for SealedStore {
    async fn append_audit(&self, events: Vec<NewAuditEvent>) -> Result<u64, StoreError> {
        self.inner.append_audit(events).await
    }

    async fn audit_events(&self, query: AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        self.inner.audit_events(query).await
    }

    async fn audit_anchor(&self) -> Result<Option<AuditAnchor>, StoreError> {
        self.inner.audit_anchor().await
    }

    async fn audit_head(&self) -> Result<Option<AuditAnchor>, StoreError> {
        self.inner.audit_head().await
    }

    async fn prune_audit(&self, through: u64) -> Result<AuditAnchor, StoreError> {
        self.inner.prune_audit(through).await
    }

    async fn put_witnessed_head(&self, head: WitnessedHead) -> Result<(), StoreError> {
        self.inner.put_witnessed_head(head).await
    }

    async fn witnessed_heads(&self, party: &str) -> Result<Vec<WitnessedHead>, StoreError> {
        self.inner.witnessed_heads(party).await
    }
}

#[async_trait]
impl LeaseStore for SealedStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }

    async fn checkpoint(&self) -> Result<(), StoreError> {
        self.inner.checkpoint().await
    }

    async fn pull_lease(&self, peer: &str) -> Result<Option<PullLease>, StoreError> {
        self.inner.pull_lease(peer).await
    }
}
