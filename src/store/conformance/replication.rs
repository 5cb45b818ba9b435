//! Replicated changes: applied in order and once, with their evidence and cursor.

use std::sync::Arc;

use uuid::Uuid;

use super::*;
use crate::domain::RecordKind;
use crate::store::*;

fn replica(seq: u64, record: Option<StoredRecord>) -> ReplicaChange {
    ReplicaChange {
        apart: Vec::new(),
        seq,
        time: seq as i64,
        record,
        evidence: Evidence {
            envelope: format!("envelope {seq}").into_bytes(),
            scheme: 0x0403,
            signature: vec![seq as u8; 64],
            signer: "fingerprint".into(),
            erased_sha256: None,
        },
    }
}

/// A batch signed through a manifest named after its first change, so applying the same batch
/// twice also stores its manifest twice.
fn batch(changes: Vec<ReplicaChange>) -> ReplicaBatch {
    let first = changes.first().map_or(0, |c| c.seq);
    ReplicaBatch {
        owner: "guangde".into(),
        signer: ("fingerprint".into(), b"certificate".to_vec()),
        changes,
        manifest: Some(SignedManifest {
            digest: format!("manifest from {first}").into_bytes(),
            manifest: b"manifest".to_vec(),
            scheme: 0x0403,
            signature: b"signature".to_vec(),
        }),
        received: 1,
    }
}

/// Replicated changes apply in order and once: a repeated batch changes nothing, a gap is
/// refused, a change of a kind not shared only moves the cursor, an older revision never
/// replaces a newer one; the feed lists own changes and replicas in commit order.
pub async fn replicas_apply_in_order_and_once(store: Arc<dyn Store>) {
    let id = Uuid::now_v7();
    let first = batch(vec![
        replica(1, Some(record("guangde", id, 1, "r1"))),
        replica(2, None),
        replica(3, Some(record("guangde", id, 2, "r2"))),
    ]);
    assert_eq!(store.apply_replicas(first.clone()).await.unwrap(), 3);
    assert_eq!(store.apply_replicas(first).await.unwrap(), 3);
    assert_eq!(store.cursor("guangde").await.unwrap(), 3);
    assert_eq!(seqs(&*store, "guangde").await, vec![1, 3]);

    let gap = store.apply_replicas(batch(vec![replica(5, None)])).await;
    assert!(
        matches!(
            gap,
            Err(StoreError::OutOfOrder {
                cursor: 3,
                got: 5,
                ..
            })
        ),
        "{gap:?}"
    );
    // A record of another owner in guangde's log is refused, and nothing of its batch stays.
    let foreign = record("anji", Uuid::now_v7(), 1, "not guangde's");
    let refused = store
        .apply_replicas(batch(vec![replica(4, Some(foreign))]))
        .await;
    assert!(
        matches!(refused, Err(StoreError::Corrupt(_))),
        "{refused:?}"
    );
    assert_eq!(store.cursor("guangde").await.unwrap(), 3);
    let older = batch(vec![replica(4, Some(record("guangde", id, 1, "r1 again")))]);
    assert_eq!(store.apply_replicas(older).await.unwrap(), 4);
    let now = store
        .get(RecordKind::Project, "guangde", id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((now.revision, now.body.as_str()), (2, "r2"));

    // Evidence: one piece per applied change, in order, with its signer and manifest.
    let kept = store.evidence("guangde", 0, 100).await.unwrap();
    let kept_seqs: Vec<u64> = kept.iter().map(|e| e.seq).collect();
    assert_eq!(kept_seqs, vec![1, 2, 3, 4]);
    assert_eq!(kept[1].envelope, b"envelope 2".to_vec());
    assert_eq!(kept[1].signature, vec![2u8; 64]);
    assert_eq!(kept[1].signer, b"certificate".to_vec());
    let named = |e: &StoredEvidence| e.manifest.as_ref().map(|m| m.digest.clone());
    assert_eq!(named(&kept[2]), Some(b"manifest from 1".to_vec()));
    assert_eq!(named(&kept[3]), Some(b"manifest from 4".to_vec()));
    assert_eq!(kept[3].manifest_digest, named(&kept[3]));
    assert_eq!(kept[3].manifest.as_ref().unwrap().signature, b"signature");
    let page = store.evidence("guangde", 2, 1).await.unwrap();
    assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![3]);
    assert!(store.evidence("anji", 0, 10).await.unwrap().is_empty());

    applied(
        store
            .write(write(record("zone", Uuid::now_v7(), 1, "own"), None, "own"))
            .await,
    );
    let feed = store.feed(0, 100).await.unwrap();
    let order: Vec<(String, u64)> = feed
        .iter()
        .map(|e| (e.change.owner.clone(), e.change.seq))
        .collect();
    let expected = [("guangde", 1), ("guangde", 3), ("guangde", 4), ("zone", 1)];
    assert_eq!(order, expected.map(|(o, s)| (o.to_string(), s)));
    assert!(feed.windows(2).all(|w| w[0].position < w[1].position));
    assert_eq!(
        store.feed_position().await.unwrap(),
        feed.last().unwrap().position
    );
    let after_first = store.feed(feed[0].position, 100).await.unwrap();
    assert_eq!(after_first.len(), 3);
}

/// A write that widens what peers may see sends the writer's records of the named kind
/// again, after itself and in the same transaction (a refused one sends nothing); a receiver
/// takes a version sent again when its body differs from the one it holds (the owner let it
/// see more) and ignores one identical to it.
pub async fn widening_writes_send_records_again(store: Arc<dyn Store>) {
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    applied(
        store
            .write(write(record("zone", a, 1, "a"), None, "a"))
            .await,
    );
    applied(
        store
            .write(write(record("zone", b, 1, "b"), None, "b"))
            .await,
    );
    let mut entry = record("zone", Uuid::now_v7(), 1, "entry");
    entry.kind = RecordKind::CatalogEntry;
    let mut widening = write(entry.clone(), None, "entry");
    widening.resend = Some(RecordKind::Project);
    widening.unique = Some("catalog-entry/zone/X".into());
    applied(store.write(widening).await);
    let log = store.changes("zone", 0, 100).await.unwrap();
    let sent: Vec<(u64, RecordKind, i64)> = log
        .iter()
        .map(|c| (c.seq, c.record.kind, c.record.revision))
        .collect();
    assert_eq!(
        sent,
        vec![
            (1, RecordKind::Project, 1),
            (2, RecordKind::Project, 1),
            (3, RecordKind::CatalogEntry, 1),
            (4, RecordKind::Project, 1),
            (5, RecordKind::Project, 1),
        ]
    );
    let mut refused = write(
        record("zone", Uuid::now_v7(), 1, "entry 2"),
        None,
        "entry-2",
    );
    refused.record.kind = RecordKind::CatalogEntry;
    refused.resend = Some(RecordKind::Project);
    refused.unique = Some("catalog-entry/zone/X".into());
    assert!(matches!(
        store.write(refused).await,
        Err(StoreError::AlreadyExists)
    ));
    assert_eq!(seqs(&*store, "zone").await, vec![1, 2, 3, 4, 5]);

    let id = Uuid::now_v7();
    let withheld = r#"{"contact":{"phone":""}}"#;
    let whole = r#"{"contact":{"phone":"+86 138"}}"#;
    let changes = vec![
        replica(1, Some(record("guangde", id, 3, withheld))),
        replica(2, Some(record("guangde", id, 3, withheld))),
        replica(3, Some(record("guangde", id, 3, whole))),
    ];
    assert_eq!(store.apply_replicas(batch(changes)).await.unwrap(), 3);
    let held = store.get(RecordKind::Project, "guangde", id).await.unwrap();
    assert_eq!(
        held.unwrap().body,
        whole,
        "the same revision, sent again whole"
    );
}

/// A redaction rewrites an owner's records of one kind, their change-log copies and the kept
/// envelopes (keeping each envelope's digest as received, once: SHA-256, or SM3 for one signed
/// with SM2), leaves other owners, kinds and the cursor alone, and a second identical
/// redaction changes nothing.
pub async fn redaction_rewrites_every_copy_and_keeps_the_received_hash(store: Arc<dyn Store>) {
    let (id, other) = (Uuid::now_v7(), Uuid::now_v7());
    let mut allocation = record("guangde", other, 1, "phone 138");
    allocation.kind = RecordKind::Allocation;
    // A change of a kind not shared with this receiver, signed with SM2 (the gm profile).
    let mut sm2 = replica(3, None);
    sm2.evidence.scheme = crate::crypto::SM2_SM3_SIGNATURE;
    let changes = vec![
        replica(1, Some(record("guangde", id, 1, "phone 138"))),
        replica(2, Some(allocation)),
        sm2,
    ];
    store.apply_replicas(batch(changes)).await.unwrap();
    applied(
        store
            .write(write(
                record("zone", Uuid::now_v7(), 1, "phone 138"),
                None,
                "own",
            ))
            .await,
    );
    let strip = |s: &str| {
        s.contains("138").then(|| BodyRewrite {
            body: s.replace("138", ""),
            erases: true,
        })
    };
    let redaction = Redaction {
        owner: "guangde".into(),
        kind: RecordKind::Project,
        body: Arc::new(move |r: &StoredRecord| Ok(strip(&r.body))),
        envelope: Arc::new(|_seq, e: &[u8], scheme| {
            Ok(
                (e == b"envelope 1" || e == b"envelope 3").then(|| EnvelopeRewrite {
                    envelope: [e, b" erased"].concat(),
                    erased_from: Some(crate::store::envelope_digest(scheme, e)),
                }),
            )
        }),
        delete_records: false,
    };
    let done = store.redact(redaction.clone()).await.unwrap();
    // (Keys destroyed are the seal's: `vault/tests.rs`.)
    assert_eq!((done.records, done.log_entries, done.evidence), (1, 1, 2));
    let held = store
        .get(RecordKind::Project, "guangde", id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(held.body, "phone ");
    let logged = store.changes("guangde", 0, 10).await.unwrap();
    assert_eq!(logged[0].record.body, "phone ");
    assert_eq!(
        logged[1].record.body, "phone 138",
        "another kind is left alone"
    );
    let own = store.changes("zone", 0, 10).await.unwrap();
    assert_eq!(
        own[0].record.body, "phone 138",
        "another owner is left alone"
    );
    let kept = store.evidence("guangde", 0, 10).await.unwrap();
    assert_eq!(kept[0].envelope, b"envelope 1 erased".to_vec());
    assert_eq!(
        kept[0].erased_sha256,
        Some(crate::store::envelope_digest(0x0403, b"envelope 1"))
    );
    assert_eq!(kept[1].erased_sha256, None);
    let sm3 = crate::crypto::gm::sm3(b"envelope 3").to_vec();
    assert_eq!(kept[2].erased_sha256, Some(sm3));
    assert_eq!(store.cursor("guangde").await.unwrap(), 3);
    let again = store.redact(redaction).await.unwrap();
    assert_eq!(
        (again.records, again.log_entries, again.evidence),
        (0, 0, 0)
    );

    // Deleting: the records of the kind and their change-log copies go; other kinds stay.
    let delete = Redaction {
        owner: "guangde".into(),
        kind: RecordKind::Project,
        body: Arc::new(|_: &StoredRecord| Ok(None)),
        envelope: Arc::new(|_, _: &[u8], _| Ok(None)),
        delete_records: true,
    };
    let done = store.redact(delete).await.unwrap();
    assert_eq!((done.records, done.log_entries), (1, 1));
    assert!(
        store
            .get(RecordKind::Project, "guangde", id)
            .await
            .unwrap()
            .is_none()
    );
    let logged = store.changes("guangde", 0, 10).await.unwrap();
    assert_eq!(logged.len(), 1);
    assert_eq!(logged[0].record.kind, RecordKind::Allocation);
    assert_eq!(
        store.cursor("guangde").await.unwrap(),
        3,
        "the cursor stays"
    );
}

/// Changes of this party's own log given back by a peer (after a restore from an older
/// backup) follow the head without a gap, keep their sequence numbers, update records where
/// newer, reach the feed, and own writes continue after them; a gap or another owner's change
/// applies nothing.
pub async fn own_changes_taken_back_follow_the_head(store: Arc<dyn Store>) {
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    applied(
        store
            .write(write(record("zone", a, 1, "a1"), None, "t1"))
            .await,
    );
    applied(
        store
            .write(write(record("zone", b, 1, "b1"), None, "t2"))
            .await,
    );
    let fed = store.feed_position().await.unwrap();
    let change = |seq: u64, rec: StoredRecord| Change {
        owner: "zone".into(),
        seq,
        time: 100 + seq as i64,
        record: rec,
    };
    let c = Uuid::now_v7();
    let given = vec![
        change(2, record("zone", b, 1, "b1 as the peer holds it")),
        change(3, record("zone", a, 2, "a2")),
        change(4, record("zone", c, 1, "c1")),
        change(5, record("zone", c, 2, "c2")),
    ];
    assert_eq!(store.take_back("zone", given).await.unwrap(), 5);
    assert_eq!(seqs(&*store, "zone").await, vec![1, 2, 3, 4, 5]);
    let body = |id| {
        let store = store.clone();
        async move {
            let r = store
                .get(RecordKind::Project, "zone", id)
                .await
                .unwrap()
                .unwrap();
            (r.revision, r.body)
        }
    };
    assert_eq!(body(a).await, (2, "a2".to_string()));
    assert_eq!(
        body(b).await,
        (1, "b1".to_string()),
        "changes at or below the head are skipped"
    );
    assert_eq!(body(c).await, (2, "c2".to_string()));
    assert_eq!(store.feed_position().await.unwrap(), fed + 3);
    let taken = store.changes("zone", 2, 10).await.unwrap();
    assert_eq!(taken[0].time, 103, "a change keeps its commit time");

    let gap = store
        .take_back("zone", vec![change(7, record("zone", a, 3, "a3"))])
        .await;
    assert!(
        matches!(
            gap,
            Err(StoreError::OutOfOrder {
                cursor: 5,
                got: 7,
                ..
            })
        ),
        "{gap:?}"
    );
    let foreign = Change {
        owner: "zone".into(),
        ..change(6, record("anji", a, 3, "a3"))
    };
    let foreign = store.take_back("zone", vec![foreign]).await;
    assert!(
        matches!(foreign, Err(StoreError::Corrupt(_))),
        "{foreign:?}"
    );
    assert_eq!(store.last_seq("zone").await.unwrap(), 5);
    assert_eq!(body(a).await, (2, "a2".to_string()));

    applied(
        store
            .write(write(record("zone", a, 3, "a3"), Some(2), "t3"))
            .await,
    );
    assert_eq!(seqs(&*store, "zone").await, vec![1, 2, 3, 4, 5, 6]);

    assert_eq!(store.restored_mark().await.unwrap(), None);
    store.set_restored_mark(Some(42)).await.unwrap();
    store.set_restored_mark(Some(43)).await.unwrap();
    assert_eq!(store.restored_mark().await.unwrap(), Some(43));
    store.set_restored_mark(None).await.unwrap();
    assert_eq!(store.restored_mark().await.unwrap(), None);
}
