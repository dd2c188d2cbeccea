//! Capacity: `lease_room`, `queued`, `unlease` and the slots that count against them.

use super::*;

fn sched() -> Sched {
    Sched::default()
}

#[test]
fn lease_room_without_timings_is_the_destination_limit() {
    let s = sched();
    assert_eq!(s.lease_room("a", 4), 4);
}

#[test]
fn lease_room_leads_by_littles_law_when_attempts_beat_a_claim_round() {
    let mut s = sched();
    s.claim_ms = 20.0;
    s.attempt_ms.insert("a".into(), 10.0);
    // Twice what 4 slots get through in one 20 ms claim round of 10 ms attempts: 16.
    assert_eq!(s.lease_room("a", 4), 4 + 16);
    // Another destination has no timing of its own: no lead.
    assert_eq!(s.lease_room("b", 4), 4);
}

#[test]
fn lease_room_has_no_lead_when_attempts_are_slower_than_a_claim_round() {
    let mut s = sched();
    s.claim_ms = 20.0;
    s.attempt_ms.insert("a".into(), 30.0);
    assert_eq!(s.lease_room("a", 4), 4);
    // Equal is not faster.
    s.attempt_ms.insert("a".into(), 20.0);
    assert_eq!(s.lease_room("a", 4), 4);
}

#[test]
fn lease_room_lead_is_capped_at_max_ahead() {
    let mut s = sched();
    s.claim_ms = 1_000.0;
    s.attempt_ms.insert("a".into(), 0.5);
    assert_eq!(s.lease_room("a", 4), 4 + MAX_AHEAD);
    // Even a zero average does not divide by zero past the cap.
    s.attempt_ms.insert("a".into(), 0.0);
    assert_eq!(s.lease_room("a", 4), 4 + MAX_AHEAD);
}

#[test]
fn lease_room_subtracts_what_is_held_and_queued() {
    let mut s = sched();
    s.claim_ms = 20.0;
    s.attempt_ms.insert("a".into(), 10.0); // room 20 before anything is held
    s.busy.insert("a".into(), 1);
    s.held.insert("a".into(), 3); // 1 running + 2 being recorded: the larger counts
    s.ready.insert(
        "a".into(),
        VecDeque::from([unstored_ready("a"), unstored_ready("a")]),
    );
    s.leasing.insert("a".into(), 1);
    assert_eq!(s.queued("a"), 3);
    assert_eq!(s.lease_room("a", 4), 20 - 3 - 3);
    // Running counts when it is the larger (held is never below busy in practice, but the
    // rule is the maximum of the two).
    s.held.insert("a".into(), 0);
    s.busy.insert("a".into(), 2);
    assert_eq!(s.lease_room("a", 4), 20 - 2 - 3);
    // More held than the room: none, not an underflow.
    s.held.insert("a".into(), 50);
    assert_eq!(s.lease_room("a", 4), 0);
}

#[test]
fn queued_counts_ready_and_leasing_per_destination() {
    let mut s = sched();
    assert_eq!(s.queued("a"), 0);
    s.ready
        .insert("a".into(), VecDeque::from([unstored_ready("a")]));
    s.leasing.insert("a".into(), 2);
    s.leasing.insert("b".into(), 5);
    assert_eq!(s.queued("a"), 3);
    assert_eq!(s.queued("b"), 5);
}

#[test]
fn unlease_counts_down_and_forgets_at_zero() {
    let mut s = sched();
    s.leasing.insert("a".into(), 2);
    s.unlease("a");
    assert_eq!(s.leasing.get("a"), Some(&1));
    s.unlease("a");
    assert_eq!(s.leasing.get("a"), None);
    // Unknown or already zero: nothing happens (no underflow).
    s.unlease("a");
    s.unlease("b");
    assert!(s.leasing.is_empty());
}

#[test]
fn a_slot_counts_until_answered_and_stays_held_until_dropped() {
    let d = Dispatcher::new();
    let mut slot = Slot::take(&d, "a");
    let other = Slot::take(&d, "b");
    assert_eq!(d.in_flight(), 2);
    {
        let s = d.inner.sched.lock().unwrap();
        assert_eq!((s.busy["a"], s.held["a"]), (1, 1));
        assert_eq!(s.lease_room("a", 4), 3);
    }
    // The receiver answered: the slot is free for the next attempt, but the delivery is
    // still being recorded, so the destination cannot lease further ahead for it.
    slot.answered();
    slot.answered(); // twice is once
    assert_eq!(d.in_flight(), 1);
    {
        let s = d.inner.sched.lock().unwrap();
        assert_eq!((s.busy["a"], s.held["a"]), (0, 1));
        assert_eq!(s.lease_room("a", 4), 3);
    }
    drop(slot);
    {
        let s = d.inner.sched.lock().unwrap();
        assert_eq!((s.busy["a"], s.held["a"]), (0, 0));
        assert_eq!(s.lease_room("a", 4), 4);
    }
    // Dropped without an answer (aborted): both counts are given back.
    drop(other);
    assert_eq!(d.in_flight(), 0);
    let s = d.inner.sched.lock().unwrap();
    assert_eq!((s.busy["b"], s.held["b"]), (0, 0));
}

#[test]
fn observe_keeps_moving_averages() {
    let d = Dispatcher::new();
    d.observe(Some("a"), Duration::from_millis(100));
    d.observe(None, Duration::from_millis(50));
    {
        let s = d.inner.sched.lock().unwrap();
        // The first sample of a destination is taken as is; the claim average starts at 0.
        assert!((s.attempt_ms["a"] - 100.0).abs() < 1e-9);
        assert!((s.claim_ms - 10.0).abs() < 1e-9);
    }
    d.observe(Some("a"), Duration::from_millis(200));
    let s = d.inner.sched.lock().unwrap();
    assert!((s.attempt_ms["a"] - 120.0).abs() < 1e-9);
}
