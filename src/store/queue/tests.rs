use super::*;
use crate::store::conformance::{record, write};
use uuid::Uuid;

fn queued(request_id: &str) -> Write {
    write(record("zone", Uuid::now_v7(), 1, "{}"), None, request_id)
}

#[test]
fn one_drain_runs_at_a_time_and_takes_everything_queued() {
    let queue = WriteQueue::default();
    let (_a, first) = queue.push(queued("a"));
    let (_b, second) = queue.push(queued("b"));
    assert!(second.is_none(), "a drain is already running");
    let mut drain = first.expect("the first write starts the drain");
    assert_eq!(drain.next_batch().map(|b| b.len()), Some(2));
    let (_c, third) = queue.push(queued("c"));
    assert!(third.is_none(), "still draining");
    assert_eq!(drain.next_batch().map(|b| b.len()), Some(1));
    assert!(drain.next_batch().is_none(), "empty: the drain ends");
    drop(drain);
    let (_d, fourth) = queue.push(queued("d"));
    assert!(
        fourth.is_some(),
        "after a drain ends, the next write starts one"
    );
}

#[tokio::test]
async fn a_drain_that_stops_early_fails_what_is_left_and_lets_the_next_write_start() {
    let queue = WriteQueue::default();
    let (_, drain) = queue.push(queued("a"));
    let mut drain = drain.unwrap();
    drain.next_batch().unwrap();
    let (left, none) = queue.push(queued("b"));
    assert!(none.is_none());
    drop(drain); // as when its task panics
    match answer_of(left).await {
        Err(StoreError::Unavailable(why)) => assert!(why.contains("retry"), "{why}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    let (_, next) = queue.push(queued("c"));
    assert!(
        next.is_some(),
        "the stopped drain no longer blocks new ones"
    );
}
