#![allow(clippy::pedantic)] // test code favours brevity over pedantry
use super::*;
use std::time::Duration;
use std::time::UNIX_EPOCH;

fn t(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
}

fn response(status: u16, headers: &[(&str, &str)], body: &str) -> Response<Vec<u8>> {
    let mut b = Response::builder().status(status);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(body.as_bytes().to_vec()).unwrap()
}

fn session_json(ranges: &[&str]) -> String {
    serde_json::json!({
        "uploadUrl": "https://h/up/1?tok=x",
        "expirationDateTime": "2100-01-01T00:00:00Z",
        "nextExpectedRanges": ranges,
    })
    .to_string()
}

/// A 200 with a session expecting `ranges`.
fn expecting(ranges: &[&str]) -> Response<Vec<u8>> {
    response(200, &[], &session_json(ranges))
}

fn created(total: u64, cfg: PlannerConfig) -> Planner {
    let mut p = Planner::new(total, cfg);
    assert_eq!(p.next(t(0)), Action::CreateSession);
    p.handle_response(t(0), &response(201, &[], &session_json(&["0-"])));
    p
}

/// [`created`] with [`small`] fragments, its first fragment sent (unanswered).
fn sent_first(total: u64) -> Planner {
    let mut p = created(total, small());
    let _ = p.next(t(0));
    p
}

/// After a lost or failed request: the planner waits, then asks the session.
/// When it asks.
fn waits_then_asks(p: &mut Planner) -> SystemTime {
    let Action::Wait { until } = p.next(t(0)) else {
        panic!("a wait first")
    };
    assert_eq!(p.next(until), Action::QueryStatus);
    until
}

/// The session is gone when asked after the final fragment: that fragment is sent
/// once more, in case the server still answers it, then the outcome is unknown.
fn gone_after_the_final_fragment_is_an_unknown_outcome(mut p: Planner) {
    let until = waits_then_asks(&mut p);
    p.handle_response(until, &response(404, &[], ""));
    assert_eq!(put_range(&p.next(until)), (0, 9));
    p.handle_response(until, &response(404, &[], ""));
    assert_eq!(
        p.next(until),
        Action::Failed(UploadError::FinalOutcomeUnknown)
    );
}

/// After the first fragment's `answer`, the upload fails for a protocol error.
fn protocol_error_after(answer: &str) {
    let mut p = sent_first(30);
    p.handle_response(t(0), &response(200, &[], answer));
    assert!(matches!(
        p.next(t(0)),
        Action::Failed(UploadError::Protocol(_))
    ));
}

fn small() -> PlannerConfig {
    PlannerConfig {
        fragment_size: 10,
        ..PlannerConfig::default()
    }
}

fn put_range(a: &Action) -> (u64, u64) {
    match a {
        Action::Put(cr) => (cr.range().start(), cr.range().last()),
        other => panic!("expected a PUT, got {other:?}"),
    }
}

#[test]
fn follows_the_servers_ranges_not_its_own() {
    // Resumed: what the session holds at its first answer (sent by an earlier
    // process) is taken as it is.
    let mut p = Planner::resume(30, "https://u/x".into(), None, small());
    assert_eq!(p.next(t(0)), Action::QueryStatus);
    p.handle_response(t(0), &expecting(&["5-9", "15-"]));
    assert_eq!(put_range(&p.next(t(0))), (5, 9));
    p.handle_response(
        t(1),
        &response(200, &[], r#"{"nextExpectedRanges":["15"]}"#),
    );
    assert_eq!(put_range(&p.next(t(1))), (15, 24));
    assert_eq!(p.acknowledged(), 15);
}

#[test]
fn a_server_claiming_bytes_never_sent_stops_the_upload() {
    let mut p = created(30, small());
    assert_eq!(put_range(&p.next(t(0))), (0, 9));
    // 10..15 were never sent: finishing would make an attachment that is not
    // the file.
    p.handle_response(
        t(1),
        &response(200, &[], r#"{"nextExpectedRanges":["15"]}"#),
    );
    match p.next(t(1)) {
        Action::Failed(
            e @ UploadError::ServerClaimsUnsentBytes {
                start: 10,
                last: 14,
            },
        ) => {
            assert!(e.to_string().contains("never sent"), "{e}");
        }
        other => panic!("expected a failure for unsent bytes, got {other:?}"),
    }
}

#[test]
fn bytes_a_server_forgets_are_sent_again_but_not_forever() {
    let cfg = PlannerConfig {
        max_attempts: 3,
        ..small()
    };
    let mut p = created(30, cfg);
    assert_eq!(put_range(&p.next(t(0))), (0, 9));
    p.handle_response(t(1), &expecting(&["10-29"]));
    // The server lost 0..10 (a power loss under `--fsync never`): send it again.
    assert_eq!(put_range(&p.next(t(1))), (10, 19));
    p.handle_response(t(2), &expecting(&["0-9", "20-29"]));
    assert_eq!(put_range(&p.next(t(2))), (0, 9));
    // A server that keeps forgetting does not keep the upload going forever.
    for round in 0..10 {
        for ranges in [&["20-29"][..], &["0-9", "20-29"]] {
            p.handle_response(t(3), &expecting(ranges));
            match p.next(t(3)) {
                Action::Put(_) => {}
                Action::Failed(UploadError::AttemptsExhausted { .. }) => return,
                other => panic!("round {round}: {other:?}"),
            }
        }
    }
    panic!("a server that keeps forgetting kept the upload going");
}

#[test]
fn completes_on_201_with_location_or_on_200_with_id() {
    let mut p = sent_first(5);
    p.handle_response(
        t(0),
        &response(
            201,
            &[("location", "https://h/v1.0/me/messages/m/attachments/A1")],
            "",
        ),
    );
    assert_eq!(
        p.next(t(0)),
        Action::Done(Completion {
            location: Some("https://h/v1.0/me/messages/m/attachments/A1".into()),
            attachment_id: Some("A1".into()),
            drive_item: None,
        })
    );

    let mut p = sent_first(5);
    p.handle_response(t(0), &response(200, &[], r#"{"id":"item-7","name":"x"}"#));
    assert!(
        matches!(p.next(t(0)), Action::Done(Completion { attachment_id: Some(id), .. }) if id == "item-7")
    );
}

#[test]
fn a_drive_file_completes_with_its_item_and_a_taken_name_fails_at_once() {
    let item = r#"{"id":"01F","name":"a.bin","size":5,"eTag":"\"{01F},1\"","cTag":"\"c:{01F},1\"",
        "createdDateTime":"2026-12-07T00:00:00Z","lastModifiedDateTime":"2026-12-07T00:00:00Z",
        "file":{"mimeType":"application/octet-stream","hashes":{"quickXorHash":"Q","sha256Hash":"S"}}}"#;
    let mut p = sent_first(5);
    p.handle_response(t(0), &response(201, &[], item));
    let Action::Done(done) = p.next(t(0)) else {
        panic!("done")
    };
    assert_eq!(done.attachment_id.as_deref(), Some("01F"));
    let file = done.drive_item.unwrap().file.unwrap();
    assert_eq!(file.hashes.quick_xor_hash, "Q");
    // 409 nameAlreadyExists: no retry, no status query; the session is deleted,
    // then the upload has failed.
    let mut p = sent_first(5);
    let conflict = r#"{"error":{"code":"nameAlreadyExists","message":"taken"}}"#;
    p.handle_response(t(0), &response(409, &[], conflict));
    assert_eq!(p.next(t(0)), Action::Delete);
    p.handle_response(t(0), &response(204, &[], ""));
    assert!(
        matches!(p.next(t(0)), Action::Failed(UploadError::Remote(e)) if e.code == "nameAlreadyExists")
    );
}

#[test]
fn outlook_location_yields_the_attachment_id() {
    assert_eq!(
        id_from_location(
            "https://outlook.office.com/api/v2.0/Users('a')/Messages('b')/Attachments('AAMk=')"
        ),
        Some("AAMk=".into())
    );
    assert_eq!(
        id_from_location("https://h/x/att1?y=1"),
        Some("att1".into())
    );
}

#[test]
fn lost_answer_asks_the_session_before_resending() {
    let mut p = sent_first(30);
    p.handle_transport_error(t(0), TransportError::Lost);
    let until = waits_then_asks(&mut p);
    assert!(until <= t(1));
    p.handle_response(until, &expecting(&["10-29"]));
    assert_eq!(put_range(&p.next(until)), (10, 19));
}

#[test]
fn throttling_waits_for_retry_after_in_seconds_or_as_a_date() {
    let mut p = sent_first(30);
    p.handle_response(t(0), &response(429, &[("retry-after", "7")], ""));
    assert_eq!(p.next(t(0)), Action::Wait { until: t(7) });
    assert_eq!(
        put_range(&p.next(t(7))),
        (0, 9),
        "a throttled fragment is sent again as it was"
    );
    let date = crate::time::format_http_date(t(20));
    p.handle_response(t(7), &response(503, &[("Retry-After", &date)], ""));
    assert_eq!(p.next(t(8)), Action::Wait { until: t(20) });
}

#[test]
fn single_requests_wait_out_throttling_a_bounded_number_of_times() {
    use super::{MAX_THROTTLE_WAIT, THROTTLED_ATTEMPTS, throttle_wait};
    let now = t(0);
    let busy = StatusCode::SERVICE_UNAVAILABLE;
    let waits: Vec<_> = (1..=THROTTLED_ATTEMPTS)
        .map(|a| throttle_wait(busy, None, a, now))
        .collect();
    let secs = |n| Some(Duration::from_secs(n));
    assert_eq!(waits, [secs(1), secs(2), secs(4), secs(8), None]);
    let date = crate::time::format_http_date(t(30));
    assert_eq!(
        throttle_wait(StatusCode::TOO_MANY_REQUESTS, Some(&date), 1, now),
        secs(30)
    );
    // Too long a wait, or an answer that is not throttling: the caller's.
    assert_eq!(
        throttle_wait(busy, Some("0"), 1, now),
        secs(1),
        "never at once"
    );
    let long = (MAX_THROTTLE_WAIT.as_secs() + 1).to_string();
    assert_eq!(throttle_wait(busy, Some(&long), 1, now), None);
    for status in [400, 401, 404, 409, 500, 502, 504] {
        let status = StatusCode::from_u16(status).unwrap();
        assert_eq!(throttle_wait(status, Some("1"), 1, now), None);
    }
}

#[test]
fn retry_after_past_the_deadline_fails_at_once() {
    let cfg = PlannerConfig {
        deadline: Some(Duration::from_secs(60)),
        ..small()
    };
    let mut p = created(30, cfg);
    let _ = p.next(t(0));
    p.handle_response(t(0), &response(429, &[("retry-after", "3600")], ""));
    assert!(matches!(
        p.next(t(0)),
        Action::Failed(UploadError::DeadlineExceeded { .. })
    ));
}

#[test]
fn backoff_grows_and_attempts_are_bounded() {
    let cfg = small().with_max_attempts(4).with_deadline(None);
    let mut p = created(30, cfg);
    let mut now = t(0);
    let mut waits = 0;
    loop {
        match p.next(now) {
            Action::Put(_) | Action::QueryStatus => p.handle_response(now, &response(500, &[], "")),
            Action::Wait { until } => {
                waits += 1;
                now = until;
            }
            Action::Failed(UploadError::AttemptsExhausted { attempts, .. }) => {
                assert_eq!(attempts, 4);
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(waits, 3);
}

#[test]
fn a_401_is_final_and_carries_graphs_error() {
    let mut p = sent_first(30);
    let body = r#"{"error":{"code":"InvalidAuthenticationToken","message":"expired","innerError":{"request-id":"r1"}}}"#;
    p.handle_response(t(0), &response(401, &[], body));
    let Action::Failed(UploadError::Remote(e)) = p.next(t(0)) else {
        panic!()
    };
    assert_eq!(
        (e.code.as_str(), e.request_id.as_deref()),
        ("InvalidAuthenticationToken", Some("r1"))
    );
    assert!(
        matches!(p.next(t(5)), Action::Failed(_)),
        "failure is sticky"
    );
}

#[test]
fn a_413_shrinks_fragments_to_quantum_multiples() {
    let mut p = created(20 * FRAGMENT_QUANTUM, PlannerConfig::default());
    assert_eq!(put_range(&p.next(t(0))).1 + 1, DEFAULT_FRAGMENT_SIZE);
    p.handle_response(t(0), &response(413, &[], ""));
    assert_eq!(put_range(&p.next(t(0))).1 + 1, 6 * FRAGMENT_QUANTUM);
    let shrunk = Event::FragmentShrunk {
        fragment_size: 6 * FRAGMENT_QUANTUM,
    };
    assert!(std::iter::from_fn(|| p.poll_event()).any(|e| e == shrunk));
}

#[test]
fn lost_final_answer_then_gone_session_is_reported_not_hidden() {
    let mut p = sent_first(10);
    p.handle_transport_error(t(0), TransportError::Lost);
    gone_after_the_final_fragment_is_an_unknown_outcome(p);
}

#[test]
fn status_showing_all_bytes_resends_final_fragment_to_learn_location() {
    let mut p = sent_first(25);
    for ranges in ["10-24", "20-24"] {
        p.handle_response(t(0), &expecting(&[ranges]));
        let _ = p.next(t(0));
    }
    p.handle_transport_error(t(0), TransportError::Lost);
    let until = waits_then_asks(&mut p);
    p.handle_response(until, &expecting(&[]));
    // The exact fragment that was lost is sent again.
    assert_eq!(put_range(&p.next(until)), (20, 24));
    p.handle_response(until, &response(201, &[("location", "https://h/a/X")], ""));
    assert!(matches!(
        p.next(until),
        Action::Done(Completion {
            attachment_id: Some(_),
            ..
        })
    ));
}

#[test]
fn a_404_from_the_session_says_the_session_is_gone() {
    let mut p = sent_first(30);
    p.handle_response(
        t(0),
        &response(
            404,
            &[],
            r#"{"error":{"code":"uploadSessionNotFound","message":"gone"}}"#,
        ),
    );
    let Action::Failed(UploadError::SessionNotFound(e)) = p.next(t(0)) else {
        panic!()
    };
    assert_eq!(e.code, "uploadSessionNotFound");
}

#[test]
fn resume_asks_first_and_refuses_an_expired_session() {
    let mut p = Planner::resume(30, "https://h/up".into(), Some(t(10)), small());
    assert_eq!(p.next(t(0)), Action::QueryStatus);
    let mut p = Planner::resume(30, "https://h/up".into(), Some(t(10)), small());
    assert_eq!(p.next(t(10)), Action::Failed(UploadError::SessionExpired));
}

#[test]
fn cancel_sends_delete_and_ends_cancelled() {
    let mut p = created(30, small());
    p.cancel();
    assert_eq!(p.next(t(0)), Action::Delete);
    p.handle_response(t(0), &response(204, &[], ""));
    assert_eq!(p.next(t(0)), Action::Cancelled);
    let mut before_session = Planner::new(30, small());
    before_session.cancel();
    assert_eq!(before_session.next(t(0)), Action::Cancelled);
}

#[test]
fn a_delete_refused_again_and_again_stops_after_the_attempts() {
    let cfg = small().with_max_attempts(3).with_deadline(None);
    let mut p = created(30, cfg);
    p.cancel();
    let mut now = t(0);
    let (mut deletes, mut cancelled) = (0, false);
    for _ in 0..20 {
        match p.next(now) {
            Action::Delete => {
                deletes += 1;
                p.handle_response(now, &response(503, &[], ""));
            }
            Action::Wait { until } => now = until,
            // The upload stops as asked; the server drops the session when it expires.
            Action::Cancelled => {
                cancelled = true;
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(cancelled);
    assert_eq!(deletes, 3);
}

#[test]
fn pending_until_the_outstanding_request_is_answered() {
    let mut p = sent_first(30);
    assert_eq!(p.next(t(0)), Action::Pending);
}

#[test]
fn a_2xx_without_ranges_is_never_taken_for_completion() {
    protocol_error_after("{}");
}

#[test]
fn a_5xx_on_the_final_fragment_then_a_gone_session_is_an_unknown_outcome() {
    let mut p = sent_first(10);
    p.handle_response(t(0), &response(504, &[], ""));
    gone_after_the_final_fragment_is_an_unknown_outcome(p);
}

#[test]
fn garbage_ranges_are_a_protocol_error() {
    protocol_error_after(r#"{"nextExpectedRanges":["abc"]}"#);
}

/// Drives `p` through waits, answering every request with `answer`, until it
/// ends or `limit` requests were made; the end and the requests made.
fn answer_all(p: &mut Planner, answer: &Response<Vec<u8>>, limit: usize) -> (Action, usize) {
    let mut now = t(0);
    let mut requests = 0;
    loop {
        match p.next(now) {
            Action::Wait { until } => now = until,
            end @ (Action::Done(_) | Action::Failed(_) | Action::Cancelled) => {
                return (end, requests);
            }
            _ if requests == limit => return (Action::Pending, requests),
            _ => {
                requests += 1;
                p.handle_response(now, answer);
            }
        }
    }
}

#[test]
fn throttling_is_not_a_failed_attempt_but_errors_are() {
    let throttled = response(429, &[("retry-after", "2")], "");
    let mut p = created(30, small());
    let (end, requests) = answer_all(&mut p, &throttled, 15);
    assert_eq!(
        (end, requests),
        (Action::Pending, 15),
        "15 throttled answers in a row are waited out"
    );
    let retries: Vec<_> = std::iter::from_fn(|| p.poll_event())
        .filter_map(|e| match e {
            Event::Retrying(r) => Some(r),
            _ => None,
        })
        .collect();
    assert!(
        retries
            .iter()
            .all(|r| r.throttled && r.wait == Duration::from_secs(2))
    );
    // Still bounded by the deadline: 15 × 2 s is past a 20 s one.
    let mut p = created(30, small().with_deadline(Some(Duration::from_secs(20))));
    let (end, _) = answer_all(&mut p, &throttled, 100);
    assert!(
        matches!(end, Action::Failed(UploadError::DeadlineExceeded { .. })),
        "{end:?}"
    );
    // Ten server errors in a row are ten failed attempts.
    let mut p = created(30, small());
    let (end, requests) = answer_all(&mut p, &response(500, &[], ""), 100);
    assert!(
        matches!(
            end,
            Action::Failed(UploadError::AttemptsExhausted { attempts: 10, .. })
        ),
        "{end:?}"
    );
    assert_eq!(requests, 10);
}

#[test]
fn a_first_request_that_cannot_be_sent_fails_at_once() {
    let mut p = Planner::new(30, small());
    assert_eq!(p.next(t(0)), Action::CreateSession);
    p.handle_transport_error(t(0), TransportError::NotSent);
    assert_eq!(p.next(t(0)), Action::Failed(UploadError::Unreachable));
    // Once the server has answered, it exists: the same failure is retried.
    let mut p = Planner::new(30, small());
    let _ = p.next(t(0));
    p.handle_response(t(0), &response(500, &[], ""));
    let Action::Wait { until } = p.next(t(0)) else {
        panic!("a wait after a 500")
    };
    assert_eq!(p.next(until), Action::CreateSession);
    p.handle_transport_error(until, TransportError::NotSent);
    assert!(matches!(p.next(until), Action::Wait { .. }));
    // So it is after a first attempt that may have reached it (a lost answer).
    let mut p = Planner::new(30, small());
    let _ = p.next(t(0));
    p.handle_transport_error(t(0), TransportError::Lost);
    let Action::Wait { until } = p.next(t(0)) else {
        panic!("a wait after a lost answer")
    };
    assert_eq!(p.next(until), Action::CreateSession);
    p.handle_transport_error(until, TransportError::NotSent);
    assert!(matches!(p.next(until), Action::Wait { .. }));
    // Mid-upload, a connection that cannot be made is retried too.
    let mut p = sent_first(30);
    p.handle_transport_error(t(0), TransportError::NotSent);
    assert!(matches!(p.next(t(0)), Action::Wait { .. }));
}

/// The ambiguous answers to the final fragment of a 10-byte file: each one's
/// planner, its final fragment answered so.
fn in_doubt_after_each_ambiguous_final_answer(listing: bool) -> Vec<(String, Planner)> {
    let mut cases = Vec::new();
    for how in ["500", "502", "503", "504", "lost"] {
        let mut p = sent_first(10);
        if listing {
            p.settle_doubt_by_listing("a.bin");
        }
        match how.parse::<u16>() {
            Ok(status) => p.handle_response(t(0), &response(status, &[], "")),
            Err(_) => p.handle_transport_error(t(0), TransportError::Lost),
        }
        cases.push((how.to_owned(), p));
    }
    cases
}

/// Asks the session (404), re-sends the final fragment (404), then lists the
/// item's attachments, which answer `listed`; what the planner makes of it.
fn gone_then_listed(p: &mut Planner, how: &str, listed: &Response<Vec<u8>>) -> Action {
    let until = waits_then_asks(p);
    p.handle_response(until, &response(404, &[], ""));
    assert_eq!(
        put_range(&p.next(until)),
        (0, 9),
        "{how}: the final fragment again"
    );
    p.handle_response(until, &response(404, &[], ""));
    assert_eq!(
        p.next(until),
        Action::ListAttachments,
        "{how}: the item is asked"
    );
    p.handle_response(until, listed);
    p.next(until)
}

fn attachments(list: &[(&str, &str, u64)]) -> Response<Vec<u8>> {
    let value: Vec<_> = list
        .iter()
        .map(|(id, name, size)| serde_json::json!({"id": id, "name": name, "size": size}))
        .collect();
    response(200, &[], &serde_json::json!({ "value": value }).to_string())
}

#[test]
fn an_ambiguous_final_answer_with_the_attachment_listed_is_done() {
    for (how, mut p) in in_doubt_after_each_ambiguous_final_answer(true) {
        let listed = attachments(&[
            ("other", "a.bin", 9),
            ("A7", "a.bin", 10),
            ("B", "b.bin", 10),
        ]);
        let end = gone_then_listed(&mut p, &how, &listed);
        assert_eq!(
            end,
            Action::Done(Completion {
                location: None,
                attachment_id: Some("A7".into()),
                drive_item: None,
            }),
            "{how}"
        );
    }
}

#[test]
fn an_ambiguous_final_answer_without_the_attachment_listed_is_a_gone_session() {
    for (how, mut p) in in_doubt_after_each_ambiguous_final_answer(true) {
        let end = gone_then_listed(&mut p, &how, &attachments(&[("B", "b.bin", 10)]));
        assert!(
            matches!(end, Action::Failed(UploadError::SessionNotFound(_))),
            "{how}: {end:?}"
        );
    }
}

#[test]
fn an_ambiguous_final_answer_nobody_can_settle_is_an_unknown_outcome() {
    for (how, mut p) in in_doubt_after_each_ambiguous_final_answer(true) {
        let end = gone_then_listed(&mut p, &how, &response(403, &[], ""));
        assert_eq!(
            end,
            Action::Failed(UploadError::FinalOutcomeUnknown),
            "{how}"
        );
    }
    for (_, p) in in_doubt_after_each_ambiguous_final_answer(false) {
        gone_after_the_final_fragment_is_an_unknown_outcome(p);
    }
}

#[test]
fn a_throttled_or_failed_listing_is_asked_again() {
    let (how, mut p) = in_doubt_after_each_ambiguous_final_answer(true).remove(2);
    let until = waits_then_asks(&mut p);
    p.handle_response(until, &response(404, &[], ""));
    let _ = p.next(until);
    p.handle_response(until, &response(404, &[], ""));
    assert_eq!(p.next(until), Action::ListAttachments);
    p.handle_response(until, &response(503, &[("retry-after", "1")], ""));
    assert_eq!(
        p.next(until),
        Action::Wait {
            until: until + Duration::from_secs(1)
        }
    );
    assert_eq!(
        p.next(until + Duration::from_secs(1)),
        Action::ListAttachments,
        "{how}"
    );
}

#[test]
fn cancelling_during_a_request_deletes_at_once() {
    let mut p = sent_first(30);
    p.cancel();
    assert_eq!(p.next(t(0)), Action::Pending);
    // The adapter abandoned the PUT.
    p.handle_transport_error(t(0), TransportError::Lost);
    assert_eq!(p.next(t(0)), Action::Delete);
    p.handle_response(t(0), &response(204, &[], ""));
    assert_eq!(p.next(t(0)), Action::Cancelled);
}
