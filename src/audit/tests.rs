use super::*;

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
    let mut prev = GENESIS.to_vec();
    (1..=n)
        .map(|seq| {
            let e = event(seq);
            let hash = link(seq, &prev, &e).to_vec();
            let out = AuditEvent {
                seq,
                event: e,
                prev_hash: prev.clone(),
                hash: hash.clone(),
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

#[test]
fn the_hash_covers_every_field() {
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
