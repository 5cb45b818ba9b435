use super::*;
use crate::crypto::Digest;

fn event(i: u64) -> NewAuditEvent {
    NewAuditEvent {
        time: 1_000 + i as i64,
        caller: "spiffe://yrd-huzhou/party/zone/client/demo".into(),
        method: "/yrd.exchange.v1.ProjectService/GetProject".into(),
        records: vec![format!("parties/zone/projects/{i}")],
        code: "OK".into(),
        request_id: format!("r{i}"),
    }
}

fn chain(n: u64) -> Vec<AuditEvent> {
    chain_by(n, |_| Digest::Sha256)
}

/// A chain of `n` events, event `seq` linked by `digest(seq)`.
fn chain_by(n: u64, digest: impl Fn(u64) -> Digest) -> Vec<AuditEvent> {
    let mut prev = GENESIS.to_vec();
    (1..=n)
        .map(|seq| {
            let e = event(seq);
            let hash = link(digest(seq), seq, &prev, &e);
            let out = AuditEvent {
                seq,
                event: e,
                prev_hash: prev.clone(),
                hash: hash.clone(),
                digest: digest(seq),
            };
            prev = hash;
            out
        })
        .collect()
}

fn first_break(events: &[AuditEvent]) -> Result<ChainSummary, ChainBreak> {
    let mut v = ChainVerifier::new(None);
    for e in events {
        v.check(e)?;
    }
    Ok(v.summary())
}

#[test]
fn an_untouched_chain_verifies() {
    let c = chain(5);
    let s = first_break(&c).unwrap();
    assert_eq!(s.events, 5);
    assert_eq!(s.head.unwrap().hash, c[4].hash);
}

#[test]
fn edits_removals_and_swaps_name_the_first_bad_event() {
    let mut changed = chain(6);
    changed[3].event.code = "PERMISSION_DENIED".into();
    assert_eq!(first_break(&changed), Err(ChainBreak::Changed { seq: 4 }));

    let mut removed = chain(6);
    removed.remove(2);
    assert_eq!(
        first_break(&removed),
        Err(ChainBreak::Missing {
            expected: 3,
            found: 4
        })
    );

    // Swapping two rows' content (keeping the row numbers) breaks the link at the first.
    let mut swapped = chain(6);
    let (a, b) = (swapped[1].clone(), swapped[2].clone());
    swapped[1] = AuditEvent { seq: 2, ..b };
    swapped[2] = AuditEvent { seq: 3, ..a };
    assert_eq!(first_break(&swapped), Err(ChainBreak::Relinked { seq: 2 }));
}

/// The linked bytes as the chain's first version wrote them, hashed by SHA-256 field by field:
/// chains stored before the SM3 profile keep verifying.
fn sha256_as_first_written(seq: u64, prev: &[u8], e: &NewAuditEvent) -> Vec<u8> {
    use sha2::{Digest as _, Sha256};
    let mut h = Sha256::new();
    h.update(b"yrd-audit-v1");
    h.update(seq.to_be_bytes());
    h.update(e.time.to_be_bytes());
    for s in [&e.caller, &e.method, &e.code, &e.request_id] {
        h.update((s.len() as u32).to_be_bytes());
        h.update(s.as_bytes());
    }
    h.update((e.records.len() as u32).to_be_bytes());
    for r in &e.records {
        h.update((r.len() as u32).to_be_bytes());
        h.update(r.as_bytes());
    }
    h.update(prev);
    h.finalize().to_vec()
}

#[test]
fn sha256_links_are_those_of_the_first_chains_and_sm3_links_differ() {
    for seq in 1..4 {
        let e = event(seq);
        let prev = [seq as u8; 32];
        let sha = link(Digest::Sha256, seq, &prev, &e);
        assert_eq!(sha, sha256_as_first_written(seq, &prev, &e));
        let sm3 = link(Digest::Sm3, seq, &prev, &e);
        assert_eq!(sm3.len(), 32);
        assert_ne!(sm3, sha);
    }
}

#[test]
fn a_chain_that_changed_digest_verifies_and_each_event_is_checked_by_its_own() {
    // SHA-256 up to event 3, then SM3: a federation that moved to the gm profile.
    let by = |seq| {
        if seq <= 3 {
            Digest::Sha256
        } else {
            Digest::Sm3
        }
    };
    let mixed = chain_by(6, by);
    let summary = first_break(&mixed).unwrap();
    assert_eq!((summary.events, summary.sm3), (6, 3));
    // An event that claims the other digest no longer matches its hash.
    let mut relabelled = mixed.clone();
    relabelled[4].digest = Digest::Sha256;
    assert_eq!(
        first_break(&relabelled).unwrap_err(),
        ChainBreak::Changed { seq: 5 }
    );
}

#[test]
fn the_hash_covers_every_field() {
    for digest in [Digest::Sha256, Digest::Sm3] {
        every_field_changes_the_link(digest);
    }
}

fn every_field_changes_the_link(digest: Digest) {
    let link = |seq, prev: &[u8], e: &NewAuditEvent| link(digest, seq, prev, e);
    let base = event(1);
    let h = link(1, &GENESIS, &base);
    let variants = [
        NewAuditEvent {
            time: 2,
            ..base.clone()
        },
        NewAuditEvent {
            caller: "x".into(),
            ..base.clone()
        },
        NewAuditEvent {
            method: "x".into(),
            ..base.clone()
        },
        NewAuditEvent {
            records: vec![],
            ..base.clone()
        },
        NewAuditEvent {
            code: "x".into(),
            ..base.clone()
        },
        NewAuditEvent {
            request_id: "x".into(),
            ..base.clone()
        },
    ];
    for v in variants {
        assert_ne!(link(1, &GENESIS, &v), h, "{v:?}");
    }
    assert_ne!(link(2, &GENESIS, &base), h);
    assert_ne!(link(1, &[1; 32], &base), h);
}
