//! The escalation registry's unit tests.

use super::*;

fn escalation(id: &str, status: Status) -> Escalation {
    Escalation {
        id: id.into(),
        tenant_id: "t".into(),
        status,
        action: "payments.initiate".into(),
        arguments: "{}".into(),
        agent_id: "agent".into(),
        caller_key_id: Some("key_agent".into()),
        caller_subject: Some("agent@example.com".into()),
        session_id: "session".into(),
        policy_id: "p".into(),
        reason: "over the limit".into(),
        codes: vec![],
        charges: vec![],
        call_hash: "h".into(),
        call_timestamp_ms: 1,
        opened_ms: 1,
        deadline_ms: 60_001,
        opened_event_id: "evt_1".into(),
        decided_ms: None,
        decided_by: None,
        note: None,
        resolved_event_id: None,
        request: None,
        job_id: None,
    }
}

#[test]
fn a_pending_escalation_is_approved_by_its_reviewer_before_the_deadline() {
    let pending = escalation("esc_1", Status::Pending);
    let done = pending
        .resolve(
            Status::Approved,
            Some("rev@x"),
            Some("fine".into()),
            30_000,
            "evt_2".into(),
        )
        .unwrap();
    assert!(!done.late);
    let e = done.escalation;
    assert_eq!(e.status, Status::Approved);
    assert_eq!(e.decided_by.as_deref(), Some("rev@x"));
    assert_eq!(e.note.as_deref(), Some("fine"));
    assert_eq!(
        (e.decided_ms, e.resolved_event_id.as_deref()),
        (Some(30_000), Some("evt_2"))
    );
}

#[test]
fn a_decision_at_the_deadline_expires_the_escalation_instead() {
    let pending = escalation("esc_1", Status::Pending);
    let done = pending
        .resolve(
            Status::Approved,
            Some("rev@x"),
            Some("ok".into()),
            60_001,
            "e".into(),
        )
        .unwrap();
    assert!(done.late);
    assert_eq!(done.escalation.status, Status::Expired);
    assert_eq!(done.escalation.decided_by, None);
    assert_eq!(done.escalation.note, None);
    let expired = pending
        .resolve(Status::Expired, None, None, 60_001, "e".into())
        .unwrap();
    assert!(!expired.late, "the sweeper's expiry is not late");
}

#[test]
fn only_a_pending_escalation_can_be_decided() {
    for status in [Status::Approved, Status::Rejected, Status::Expired] {
        let decided = escalation("esc_1", status);
        assert_eq!(
            decided.resolve(Status::Approved, Some("r"), None, 2, "e".into()),
            Err(AlreadyResolved(status))
        );
    }
}

#[test]
fn an_escalation_is_overdue_only_while_pending_past_its_deadline() {
    let pending = escalation("esc_1", Status::Pending);
    assert!(!pending.overdue(60_000));
    assert!(pending.overdue(60_001));
    assert!(!escalation("esc_1", Status::Rejected).overdue(99_999));
}

fn channels(e: &Escalations) -> usize {
    e.inner.lock().unwrap().channels.len()
}

#[test]
fn a_channel_lives_only_while_someone_is_subscribed() {
    let dir = tempfile::tempdir().unwrap();
    let escalations =
        Escalations::load(Store::open(dir.path()).unwrap(), &Default::default()).unwrap();
    let pending = escalation("esc_1", Status::Pending);
    escalations.reserve(&pending, 10).unwrap().opened();

    // Answered at once (`?wait=0`): nothing is kept for it while it is pending.
    drop(escalations.subscribe("esc_1"));
    assert_eq!(channels(&escalations), 0);

    // Two waiters share one channel; it goes with the last of them.
    let first = escalations.subscribe("esc_1");
    let mut second = escalations.subscribe("esc_1");
    assert_eq!(channels(&escalations), 1);
    drop(first);
    assert_eq!(channels(&escalations), 1);

    // A waiter still subscribed receives the resolution.
    let mut approved = pending.clone();
    approved.status = Status::Approved;
    escalations.resolved(&approved);
    assert_eq!(channels(&escalations), 0);
    assert_eq!(
        second.borrow_and_update().as_ref().map(|e| e.status),
        Some(Status::Approved)
    );
    drop(second);
    assert_eq!(channels(&escalations), 0);
    assert!(escalations.due(u64::MAX).is_empty());
}

fn registry() -> (tempfile::TempDir, Escalations) {
    let dir = tempfile::tempdir().unwrap();
    let escalations =
        Escalations::load(Store::open(dir.path()).unwrap(), &Default::default()).unwrap();
    (dir, escalations)
}

#[test]
fn a_reservation_takes_a_place_under_the_cap_and_a_release_frees_it() {
    let (_dir, escalations) = registry();
    let first = escalations
        .reserve(&escalation("esc_1", Status::Pending), 2)
        .unwrap();
    let second = escalations
        .reserve(&escalation("esc_2", Status::Pending), 2)
        .unwrap();
    assert_eq!(
        escalations
            .reserve(&escalation("esc_3", Status::Pending), 2)
            .err(),
        Some(2),
        "at the cap before either append is written"
    );
    first.release();
    assert_eq!(escalations.pending_count("t"), 1);
    assert!(
        escalations.due(u64::MAX).is_empty(),
        "a released place has no deadline"
    );
    second.opened();
    assert_eq!(
        escalations.due(u64::MAX),
        [("t".to_owned(), "esc_2".to_owned())]
    );
    escalations.resolved(&escalation("esc_2", Status::Approved));
    assert_eq!(escalations.pending_count("t"), 0);
    assert!(escalations.due(u64::MAX).is_empty());
}

#[test]
fn a_reservation_dropped_unsettled_is_kept_for_the_sweeper_to_settle() {
    let (_dir, escalations) = registry();
    drop(
        escalations
            .reserve(&escalation("esc_1", Status::Pending), 5)
            .unwrap(),
    );
    assert_eq!(escalations.pending_count("t"), 1);
    assert_eq!(escalations.due(u64::MAX).len(), 1);
    escalations.forget("t", "esc_1");
    assert_eq!(escalations.pending_count("t"), 0);
    assert!(escalations.due(u64::MAX).is_empty());
}

#[test]
fn an_escalation_resolved_before_it_is_marked_opened_gets_no_deadline() {
    let (_dir, escalations) = registry();
    let e = escalation("esc_1", Status::Pending);
    let reservation = escalations.reserve(&e, 5).unwrap();
    let mut approved = e.clone();
    approved.status = Status::Approved;
    escalations.resolved(&approved);
    reservation.opened();
    assert_eq!(escalations.pending_count("t"), 0);
    assert!(escalations.due(u64::MAX).is_empty());
}

#[test]
fn the_pending_page_reads_only_pending_rows_and_skips_reserved_ones_not_yet_written() {
    let (_dir, escalations) = registry();
    for (id, status) in [
        ("esc_1", Status::Pending),
        ("esc_2", Status::Approved),
        ("esc_3", Status::Pending),
        ("esc_4", Status::Pending),
    ] {
        let e = escalation(id, status);
        escalations.store.commit(&[e.row()]).unwrap();
        if status == Status::Pending {
            escalations.reserve(&e, 10).unwrap().opened();
        }
    }
    // Reserved, its append still in flight: no row yet.
    let _in_flight = escalations
        .reserve(&escalation("esc_5", Status::Pending), 10)
        .unwrap();
    let ids = |page: &EscalationPage| {
        page.escalations
            .iter()
            .map(|e| e.id.clone())
            .collect::<Vec<_>>()
    };
    let bounds = Bounds::new(2);
    let first = escalations.pending_page("t", None, bounds).unwrap();
    assert_eq!(ids(&first), ["esc_1", "esc_3"]);
    assert_eq!(first.next_after.as_deref(), Some("esc_3"));
    let second = escalations
        .pending_page("t", first.next_after.as_deref(), bounds)
        .unwrap();
    assert_eq!(ids(&second), ["esc_4"]);
    assert_eq!(second.next_after, None);
    let history = escalations
        .history_page("t", Some(Status::Approved), None, bounds)
        .unwrap();
    assert_eq!(ids(&history), ["esc_2"]);
    assert_eq!(history.next_after, None);
}
