#![allow(clippy::pedantic)] // test code favours brevity over pedantry
use super::*;
use crate::error::GraphError;
use proptest::prelude::*;
use std::time::UNIX_EPOCH;

fn t(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn limits(max_fragment: u64) -> Limits {
    Limits::default()
        .with_min_size(1)
        .with_max_size(1 << 40)
        .with_max_fragment(max_fragment)
        .with_ttl(Duration::from_secs(100))
        .with_max_age(Duration::from_secs(1000))
}

fn put(
    s: &mut Session,
    now: SystemTime,
    first: u64,
    last: u64,
) -> Result<PutDecision, SessionError> {
    let header = format!("bytes {first}-{last}/{}", s.size());
    s.handle_put(now, Some(&header), Some(last - first + 1))
}

fn write(s: &mut Session, now: SystemTime, first: u64, last: u64) -> Answer {
    match put(s, now, first, last).unwrap() {
        PutDecision::Write(ticket) => s.commit(now, ticket).unwrap(),
        other => panic!("expected a write, got {other:?}"),
    }
}

/// A session of `size` bytes opened at t(0) under `limits(10)`.
fn opened(size: u64) -> Session {
    Session::open(t(0), size, &limits(10)).unwrap()
}

/// Asserts that a PUT was refused because the session is gone.
fn assert_session_gone(r: Result<PutDecision, SessionError>) {
    assert_eq!(code(r), (404, "uploadSessionNotFound"));
}

/// What a closing leaves to clean up: the partial bytes too, or not.
fn closed(discard_partial: bool) -> Closed {
    Closed { discard_partial }
}

/// The status and the most specific Graph code of a refusal.
fn code(r: Result<PutDecision, SessionError>) -> (u16, &'static str) {
    let e = r.unwrap_err();
    (e.status().as_u16(), e.detail())
}

#[test]
fn open_checks_size_limits() {
    let l = Limits::default().with_min_size(10).with_max_size(20);
    assert_eq!(
        Session::open(t(0), 9, &l).unwrap_err(),
        CreateError::TooSmall { size: 9, min: 10 }
    );
    assert_eq!(
        Session::open(t(0), 21, &l).unwrap_err(),
        CreateError::TooLarge { size: 21, max: 20 }
    );
    assert!(Session::open(t(0), 10, &l).is_ok());
    assert!(Session::open(t(0), 20, &l).is_ok());
}

#[test]
fn bad_headers_get_their_graph_errors_and_change_nothing() {
    let mut s = opened(100);
    let before = s.clone();
    assert_eq!(code(s.handle_put(t(0), None, None)), (400, "invalidRange"));
    assert_eq!(
        code(s.handle_put(t(0), Some("bytes 0-9/99"), None)),
        (400, "invalidRange")
    );
    assert_eq!(
        code(s.handle_put(t(0), Some("bytes 0-9/100"), Some(9))),
        (400, "fragmentLengthMismatch")
    );
    assert_eq!(
        code(put(&mut s, t(0), 0, 10)),
        (413, "maxFragmentLengthExceeded")
    );
    assert_eq!(code(put(&mut s, t(0), 10, 19)), (416, "fragmentOutOfOrder"));
    assert_eq!(s, before);
}

#[test]
fn content_length_may_be_absent() {
    let mut s = opened(100);
    assert!(matches!(
        s.handle_put(t(0), Some("bytes 0-9/100"), None),
        Ok(PutDecision::Write(_))
    ));
}

#[test]
fn partial_overlap_is_refused_but_exact_resend_is_replayed() {
    let mut s = opened(100);
    write(&mut s, t(0), 0, 9);
    assert_eq!(code(put(&mut s, t(0), 5, 14)), (416, "fragmentOverlap"));
    let replay = put(&mut s, t(1), 0, 9).unwrap();
    let PutDecision::Replay {
        answer: Answer::Progress { next_expected, .. },
        ..
    } = replay
    else {
        panic!("{replay:?}")
    };
    assert_eq!(next_expected.ranges(), &[ByteRange::new(10, 100).unwrap()]);
    // A sub-range of stored bytes is a re-send too.
    assert!(matches!(
        put(&mut s, t(1), 2, 3).unwrap(),
        PutDecision::Replay { .. }
    ));
}

#[test]
fn onedrive_rules_refuse_resends_and_odd_fragments() {
    let l = limits(10)
        .with_reject_resend(true)
        .with_fragment_quantum(Some(320 * 1024))
        .with_max_fragment(1 << 20);
    let q = 320 * 1024;
    let mut s = Session::open(t(0), 2 * q + 5, &l).unwrap();
    assert_eq!(code(put(&mut s, t(0), 0, q - 2)), (400, "invalidRange"));
    write(&mut s, t(0), 0, q - 1);
    assert_eq!(code(put(&mut s, t(0), 0, q - 1)), (416, "fragmentOverlap"));
    write(&mut s, t(0), q, 2 * q - 1);
    assert_eq!(
        write(&mut s, t(0), 2 * q, 2 * q + 4),
        Answer::Completed,
        "the last may be short"
    );
}

#[test]
fn another_offset_is_busy_until_the_write_in_flight_is_answered() {
    let mut s = opened(100);
    let PutDecision::Write(ticket) = put(&mut s, t(0), 0, 9).unwrap() else {
        panic!()
    };
    assert!(!ticket.supersedes());
    assert_eq!(code(put(&mut s, t(0), 10, 19)), (409, "fragmentInProgress"));
    s.write_failed(ticket);
    assert_eq!(
        s.next_expected().ranges()[0].start(),
        0,
        "a failed write counts nothing"
    );
    assert!(matches!(
        put(&mut s, t(0), 0, 9).unwrap(),
        PutDecision::Write(_)
    ));
}

#[test]
fn the_new_request_for_the_same_offset_wins_and_the_stale_one_never_counts() {
    let mut s = opened(100);
    let PutDecision::Write(stale) = put(&mut s, t(0), 0, 9).unwrap() else {
        panic!()
    };
    let PutDecision::Write(fresh) = put(&mut s, t(1), 0, 9).unwrap() else {
        panic!("the retry takes over")
    };
    assert!(fresh.supersedes());
    assert_eq!(s.commit(t(2), stale), Err(SessionError::Superseded));
    assert_eq!(
        s.received(),
        RangeSet::new(),
        "the stale write counts nothing"
    );
    // A write that failed after being superseded does not free the new one's place.
    assert_eq!(code(put(&mut s, t(2), 10, 19)), (409, "fragmentInProgress"));
    assert!(matches!(s.commit(t(2), fresh), Ok(Answer::Progress { .. })));
    assert_eq!(s.next_expected().ranges()[0].start(), 10);
}

#[test]
fn while_another_request_writes_only_resends_and_header_refusals_are_answered() {
    let mut committed = opened(100);
    write(&mut committed, t(0), 0, 9);
    // (first, last, the refusal) of a PUT while another request writes.
    for (first, last, refusal) in [
        (10, 19, (409, "fragmentInProgress")),
        (30, 39, (409, "fragmentInProgress")),
        (5, 14, (409, "fragmentInProgress")),
        (10, 40, (413, "maxFragmentLengthExceeded")),
    ] {
        let busy = while_busy(put(&mut committed.clone(), t(1), first, last));
        assert_eq!(code(busy), refusal, "{first}-{last}");
    }
    assert!(matches!(
        while_busy(put(&mut committed, t(1), 0, 9)),
        Ok(PutDecision::Replay { .. })
    ));
}

#[test]
fn a_ticket_never_counts_in_a_session_restored_under_it() {
    let mut s = opened(100);
    let PutDecision::Write(ticket) = put(&mut s, t(0), 0, 9).unwrap() else {
        panic!()
    };
    let mut restored = Session::restore(&s.snapshot()).unwrap();
    let PutDecision::Write(own) = put(&mut restored, t(0), 0, 9).unwrap() else {
        panic!()
    };
    assert_eq!(
        restored.commit(t(1), ticket),
        Err(SessionError::Superseded),
        "a ticket of another session value"
    );
    assert!(restored.commit(t(1), own).is_ok());
}

#[test]
fn a_pending_commit_counts_only_once_confirmed() {
    let mut s = opened(20);
    let PutDecision::Write(ticket) = put(&mut s, t(5), 0, 9).unwrap() else {
        panic!()
    };
    let pending = s.prepare_commit(t(5), ticket).unwrap();
    assert_eq!(pending.snapshot().received, vec![[0, 10]]);
    assert_eq!(
        s.received(),
        RangeSet::new(),
        "nothing counted before confirm"
    );
    assert_eq!(code(put(&mut s, t(5), 10, 19)), (409, "fragmentInProgress"));
    s.abort(pending);
    assert_eq!(s.received(), RangeSet::new());
    let PutDecision::Write(ticket) = put(&mut s, t(6), 0, 9).unwrap() else {
        panic!("the same bytes are expected again")
    };
    let pending = s.prepare_commit(t(6), ticket).unwrap();
    let snapshot = pending.snapshot().clone();
    assert!(matches!(s.confirm(pending), Answer::Progress { .. }));
    assert_eq!(
        s.snapshot(),
        snapshot,
        "what was persisted is what the session is"
    );
}

#[test]
fn every_closing_leaves_one_cleanup_to_poll() {
    let mut s = opened(20);
    write(&mut s, t(0), 0, 9);
    // A request finds it expired: the clean-up waits for the adapter.
    assert_eq!(s.status(t(500)), Err(SessionError::Expired));
    assert_eq!(s.poll_cleanup(), Some(closed(true)));
    assert_eq!(s.poll_cleanup(), None, "once");
    let mut done = opened(10);
    write(&mut done, t(0), 0, 9);
    let _ = done.cancel(t(1)).unwrap();
    assert_eq!(done.poll_cleanup(), Some(closed(false)));
}

#[test]
fn recovery_finishes_a_completion_cut_short_and_resumes_the_rest() {
    let mut s = opened(20);
    write(&mut s, t(0), 0, 9);
    let snapshot = s.snapshot();
    match Recovery::decide(&snapshot, true).unwrap() {
        Recovery::FinishCompletion(done) => assert_eq!(done.phase(), Phase::Completed),
        other => panic!("{other:?}"),
    }
    match Recovery::decide(&snapshot, false).unwrap() {
        Recovery::Resume(open) => assert_eq!(open.received(), s.received()),
        other => panic!("{other:?}"),
    }
    let mut broken = snapshot;
    broken.size = 0;
    assert!(Recovery::decide(&broken, false).is_err());
}

#[test]
fn recovery_forgets_the_bytes_that_fail_their_check_and_asks_for_them_again() {
    let mut s = opened(30);
    write(&mut s, t(0), 0, 9);
    write(&mut s, t(0), 10, 19);
    let snapshot = s.snapshot();
    match Recovery::decide_checked(&snapshot, false, 10).unwrap() {
        Recovery::Forget { session, forgotten } => {
            assert_eq!(forgotten, 10);
            assert_eq!(
                session.received().ranges(),
                &[ByteRange::new(0, 10).unwrap()]
            );
            assert_eq!(session.phase(), Phase::Open);
        }
        other => panic!("{other:?}"),
    }
    // Nothing intact: every byte is asked for again.
    let Recovery::Forget { session, forgotten } =
        Recovery::decide_checked(&snapshot, false, 0).unwrap()
    else {
        panic!("forgets")
    };
    assert_eq!((forgotten, session.received().is_empty()), (20, true));
    // All intact, or a completion to finish: as `decide`.
    assert!(matches!(
        Recovery::decide_checked(&snapshot, false, 20).unwrap(),
        Recovery::Resume(_)
    ));
    assert!(matches!(
        Recovery::decide_checked(&snapshot, true, 0).unwrap(),
        Recovery::FinishCompletion(_)
    ));
}

#[test]
fn an_empty_body_is_a_length_mismatch_while_the_session_is_open() {
    let mut s = opened(20);
    let e = s
        .handle_put(t(0), Some("bytes 0-9/20"), Some(0))
        .unwrap_err();
    assert_eq!(e.inner_code(), Some("fragmentLengthMismatch"));
}

#[test]
fn without_sliding_the_expiry_stays_as_created() {
    let fixed = limits(10).with_sliding_expiry(false);
    let mut s = Session::open(t(0), 30, &fixed).unwrap();
    let created = s.expires_at();
    write(&mut s, t(50), 0, 9);
    assert_eq!(s.expires_at(), created);
    let back = Session::restore(&s.snapshot()).unwrap();
    assert_eq!(back.snapshot(), s.snapshot());
    assert!(!s.snapshot().sliding_expiry);
    let mut sliding = opened(30);
    write(&mut sliding, t(50), 0, 9);
    assert_eq!(sliding.expires_at(), t(150));
}

#[test]
fn the_fragment_that_crosses_the_message_limit_is_refused() {
    let mut s = opened(30);
    s.set_message_limit(Some(MessageLimit {
        limit: 35,
        attached: 15,
    }));
    write(&mut s, t(0), 0, 9);
    write(&mut s, t(0), 10, 19);
    let e = put(&mut s, t(0), 20, 29).unwrap_err();
    assert_eq!(
        e,
        SessionError::Fragment(FragmentError::MessageSizeExceeded {
            total: 45,
            limit: 35
        })
    );
    assert_eq!(
        (e.status().as_u16(), e.code()),
        (413, "ErrorMessageSizeExceeded")
    );
    // Nothing changed: a re-send of stored bytes is still answered.
    assert!(matches!(
        put(&mut s, t(0), 10, 19).unwrap(),
        PutDecision::Replay { .. }
    ));
    s.set_message_limit(None);
    assert_eq!(write(&mut s, t(0), 20, 29), Answer::Completed);
}

#[test]
fn resend_of_final_fragment_answers_completed_again_until_retention_ends() {
    let mut s = opened(20);
    write(&mut s, t(0), 0, 9);
    assert_eq!(write(&mut s, t(50), 10, 19), Answer::Completed);
    assert_eq!(s.phase(), Phase::Completed);
    let replay = put(&mut s, t(60), 10, 19).unwrap();
    assert_eq!(
        replay,
        PutDecision::Replay {
            range: ByteRange::new(10, 20).unwrap(),
            body_len: 10,
            answer: Answer::Completed
        }
    );
    // The same range with an empty body (the Python SDK's re-send of a file that
    // fit in one chunk) is answered the same way, reading no body.
    let empty = s
        .handle_put(t(60), Some("bytes 10-19/20"), Some(0))
        .unwrap();
    assert_eq!(
        empty,
        PutDecision::Replay {
            range: ByteRange::new(10, 20).unwrap(),
            body_len: 0,
            answer: Answer::Completed
        }
    );
    // An earlier fragment re-sent is answered as it was the first time.
    let PutDecision::Replay {
        answer: Answer::Progress { next_expected, .. },
        ..
    } = put(&mut s, t(60), 0, 9).unwrap()
    else {
        panic!()
    };
    assert_eq!(next_expected.ranges(), &[ByteRange::new(10, 20).unwrap()]);
    assert_eq!(s.handle_timeout(t(150)), Some(closed(false)));
    assert_session_gone(put(&mut s, t(151), 10, 19));
}

#[test]
fn each_fragment_extends_the_expiry() {
    let mut s = opened(100);
    assert_eq!(s.expires_at(), t(100));
    write(&mut s, t(90), 0, 9);
    assert_eq!(s.expires_at(), t(190));
    assert_eq!(s.poll_timeout(), Some(t(190)));
    assert_eq!(
        s.handle_timeout(t(189)),
        None,
        "early timeouts are harmless"
    );
    assert_eq!(s.handle_timeout(t(190)), Some(closed(true)));
    assert_eq!(
        s.handle_timeout(t(191)),
        None,
        "repeated timeouts are harmless"
    );
    assert_eq!(s.phase(), Phase::Expired);
    assert_eq!(s.status(t(191)).unwrap_err(), SessionError::Expired);
}

#[test]
fn expiry_never_passes_the_maximum_age() {
    let mut s = opened(1000);
    for i in 0..11 {
        write(&mut s, t(i * 95), i * 10, i * 10 + 9);
    }
    assert_eq!(s.expires_at(), t(1000));
    assert_eq!(s.hard_expiry(), t(1000));
}

#[test]
fn a_write_in_flight_holds_expiry_off() {
    let mut s = opened(100);
    let PutDecision::Write(ticket) = put(&mut s, t(99), 0, 9).unwrap() else {
        panic!()
    };
    assert_eq!(s.handle_timeout(t(150)), None);
    assert!(s.commit(t(150), ticket).is_ok());
    assert_eq!(s.expires_at(), t(250));
}

#[test]
fn expired_session_refuses_puts_without_a_timeout_call() {
    let mut s = opened(100);
    assert_session_gone(put(&mut s, t(100), 0, 9));
}

#[test]
fn cancel_discards_partial_bytes_but_keeps_a_completed_attachment() {
    let mut open = opened(100);
    assert_eq!(open.cancel(t(1)), Ok(closed(true)));
    assert_eq!(open.cancel(t(1)), Err(SessionError::Cancelled));
    let mut done = opened(5);
    write(&mut done, t(0), 0, 4);
    assert_eq!(done.cancel(t(1)), Ok(closed(false)));
    assert_session_gone(put(&mut done, t(1), 0, 4));
}

#[test]
fn cancel_during_a_write_makes_the_commit_fail() {
    let mut s = opened(100);
    let PutDecision::Write(ticket) = put(&mut s, t(0), 0, 9).unwrap() else {
        panic!()
    };
    let _ = s.cancel(t(0)).unwrap();
    assert_eq!(s.commit(t(0), ticket), Err(SessionError::Cancelled));
}

#[test]
fn a_session_without_a_size_takes_it_from_its_first_stored_fragment() {
    let l = limits(10).with_max_size(100);
    let mut s = Session::open_unsized(t(0), &l);
    assert!(!s.size_known());
    assert_eq!(
        s.next_expected().ranges(),
        [ByteRange::new(0, u64::MAX).unwrap()]
    );
    // Stored and restored before any fragment: still open-ended.
    let mut back = Session::restore(&s.snapshot()).unwrap();
    assert!(!back.size_known());
    // Too large a total is refused, and leaves the size open.
    let too_big = back.handle_put(t(1), Some("bytes 0-9/101"), Some(10));
    assert_eq!(code(too_big), (413, "invalidRequest"));
    // A refused first fragment (not committed) fixes nothing durable.
    let _ = s.handle_put(t(1), Some("bytes 0-10/50"), Some(11));
    let mut s = Session::restore(&Session::open_unsized(t(0), &l).snapshot()).unwrap();
    let PutDecision::Write(ticket) = s.handle_put(t(1), Some("bytes 0-9/25"), Some(10)).unwrap()
    else {
        panic!("a write")
    };
    s.commit(t(1), ticket).unwrap();
    let mut s = Session::restore(&s.snapshot()).unwrap();
    assert!(s.size_known());
    assert_eq!(s.size(), 25);
    // Later totals must agree.
    assert_eq!(
        code(s.handle_put(t(2), Some("bytes 10-19/26"), Some(10))).0,
        400
    );
    write(&mut s, t(2), 10, 19);
    assert_eq!(write(&mut s, t(3), 20, 24), Answer::Completed);
}

#[test]
fn snapshot_round_trips_without_the_write_in_flight() {
    let mut s = opened(100);
    write(&mut s, t(0), 0, 9);
    let _ticket = put(&mut s, t(0), 10, 19).unwrap();
    let restored = Session::restore(&s.snapshot()).unwrap();
    assert_eq!(restored.in_flight(), None);
    assert_eq!(restored.received(), s.received());
    assert_eq!(restored.expires_at(), s.expires_at());
    let json = serde_json::to_string(&s.snapshot()).unwrap();
    let back: SessionSnapshot = serde_json::from_str(&json).unwrap();
    assert_eq!(back, s.snapshot());
}

#[test]
fn restore_refuses_inconsistent_snapshots() {
    let mut snap = opened(100).snapshot();
    snap.received = vec![[0, 101]];
    assert!(Session::restore(&snap).is_err());
    snap.received = vec![[5, 5]];
    assert!(Session::restore(&snap).is_err());
}

proptest! {
    /// Whatever fragments arrive, in whatever order, with writes that fail, the
    /// session counts exactly the committed bytes and never skips one.
    #[test]
    fn state_machine_never_counts_a_byte_twice_or_skips_one(
        size in 1u64..200,
        ops in proptest::collection::vec((0u64..200, 1u64..40, any::<bool>()), 1..60),
    ) {
        let mut s = Session::open(t(0), size, &limits(32)).unwrap();
        let mut model = vec![false; usize::try_from(size).unwrap()];
        for (start, len, succeed) in ops {
            let first = start % size;
            let last = (first + len - 1).min(size - 1);
            match put(&mut s, t(0), first, last) {
                Ok(PutDecision::Write(ticket)) => {
                    let r = ticket.range();
                    // Only ever the next missing byte onward.
                    prop_assert_eq!(r.start(), model.iter().position(|b| !b).unwrap() as u64);
                    if succeed {
                        s.commit(t(0), ticket).unwrap();
                        for i in r.start()..r.end() {
                            prop_assert!(!model[i as usize], "byte {} counted twice", i);
                            model[i as usize] = true;
                        }
                    } else {
                        s.write_failed(ticket);
                    }
                }
                Ok(PutDecision::Replay { range, .. }) => {
                    for i in range.start()..range.end() { prop_assert!(model[i as usize]); }
                }
                Err(_) => {}
            }
            let stored = model.iter().filter(|b| **b).count() as u64;
            prop_assert_eq!(s.received().covered(), stored);
            prop_assert_eq!(s.received().contiguous_prefix(), stored, "received bytes are always a prefix");
            prop_assert_eq!(s.phase() == Phase::Completed, stored == size);
        }
    }
}
