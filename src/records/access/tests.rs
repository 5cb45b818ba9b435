use super::*;

fn request() -> AccessRequest {
    AccessRequest {
        id: Uuid::nil(),
        owner: "guangde".into(),
        provider: "changxing".into(),
        entry: format!("parties/changxing/catalogEntries/{}", Uuid::nil()),
        items: vec!["contact.phone".into()],
        purpose: "联合招商对接".into(),
        scenario: String::new(),
        validity_days: 30,
        answer_by: 1_000,
        granted_at_once: false,
        withdraw_time: None,
        escalate_time: None,
        escalation_reason: String::new(),
        deletion: None,
        revision: 1,
        create_time: 0,
        update_time: 0,
    }
}

fn answer(approve: bool) -> AccessAnswer {
    AccessAnswer {
        id: Uuid::nil(),
        owner: "changxing".into(),
        request: String::new(),
        approve,
        items: vec!["contact.phone".into()],
        valid_until: 5_000,
        reason: String::new(),
        revoke_time: None,
        revoke_reason: String::new(),
        revision: 1,
        create_time: 10,
        update_time: 10,
    }
}

#[test]
fn the_state_follows_the_answer_and_the_deadline() {
    let r = request();
    let waiting = r.outcome(None, 999);
    assert_eq!(
        (waiting.state, waiting.overdue),
        (AccessState::Requested, false)
    );
    let late = r.outcome(None, 1_000);
    assert_eq!((late.state, late.overdue), (AccessState::Requested, true));
    let approved = r.outcome(Some(&answer(true)), 2_000);
    assert_eq!(approved.state, AccessState::Approved);
    assert!(
        !approved.overdue,
        "an answer, even late, ends the overdue flag"
    );
    assert_eq!(approved.granted, ["contact.phone"]);
    assert_eq!(approved.valid_until, 5_000);
    assert_eq!(
        r.outcome(Some(&answer(false)), 0).state,
        AccessState::Refused
    );
}

#[test]
fn a_grant_ends_at_its_end_or_when_revoked_and_then_grants_nothing() {
    let r = request();
    let expired = r.outcome(Some(&answer(true)), 5_000);
    assert_eq!(expired.state, AccessState::Expired);
    assert!(
        expired.granted.is_empty(),
        "nothing is granted past the end"
    );
    assert_eq!(expired.valid_until, 5_000);
    let mut revoked = answer(true);
    revoked.revoke_time = Some(3_000);
    let outcome = r.outcome(Some(&revoked), 3_001);
    assert_eq!(outcome.state, AccessState::Revoked);
    assert!(outcome.granted.is_empty());
    assert_eq!(
        r.outcome(Some(&revoked), 9_000).state,
        AccessState::Revoked,
        "a revocation stays what ended the grant"
    );
}

#[test]
fn a_withdrawal_wins_over_a_crossing_answer_and_at_once_grants_need_none() {
    let mut r = request();
    r.withdraw_time = Some(5);
    assert_eq!(
        r.outcome(Some(&answer(true)), 0).state,
        AccessState::Withdrawn
    );
    let mut r = request();
    r.granted_at_once = true;
    let o = r.outcome(None, 10_000_000);
    assert_eq!((o.state, o.overdue), (AccessState::Approved, false));
    assert_eq!(o.valid_until, 30 * DAY_MICROS);
}

#[test]
fn every_bad_field_of_a_request_is_named() {
    let mut r = request();
    r.entry.clear();
    r.purpose = " ".into();
    r.validity_days = 0;
    r.items = vec!["a".into(), "a".into()];
    let mut v = Violations::new();
    r.validate("access_request", &mut v);
    let fields: Vec<_> = v.iter().map(|f| f.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "access_request.entry",
            "access_request.purpose",
            "access_request.validity_days",
            "access_request.items[1]",
        ]
    );
}
