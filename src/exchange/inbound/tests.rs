use super::*;

#[test]
fn backoff_grows_to_its_cap_with_jitter_and_resets() {
    let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
    let first = b.next_delay();
    assert!(
        first >= Duration::from_millis(50) && first <= Duration::from_millis(100),
        "{first:?}"
    );
    let mut last = first;
    for _ in 0..20 {
        last = b.next_delay();
        assert!(last <= Duration::from_secs(10));
    }
    assert!(
        last >= Duration::from_secs(5),
        "capped step is 10 s, jitter keeps at least half: {last:?}"
    );
    b.reset();
    assert!(b.next_delay() <= Duration::from_millis(100));
}

#[tokio::test(start_paused = true)]
async fn backoff_delays_add_up_in_virtual_time() {
    // Twelve retries against a dead peer: the wait is bounded by the cap, not unbounded growth.
    let mut b = Backoff::new(BACKOFF_BASE, BACKOFF_CAP);
    let start = tokio::time::Instant::now();
    for _ in 0..12 {
        tokio::time::sleep(b.next_delay()).await;
    }
    let waited = start.elapsed();
    assert!(
        waited
            <= Duration::from_millis(100 + 200 + 400 + 800 + 1600 + 3200 + 6400) + BACKOFF_CAP * 5,
        "{waited:?}"
    );
    assert!(waited >= BACKOFF_CAP * 5 / 2, "{waited:?}");
}
