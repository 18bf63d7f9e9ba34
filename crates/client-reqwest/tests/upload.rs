//! Uploads against the conformance crate's fake Graph: real sockets on 127.0.0.1,
//! real session semantics from the core, Graph's quirks and injected faults. Every
//! test ends with the exact bytes on the server or a typed error.

#![allow(clippy::pedantic)] // test code favours brevity over pedantry

mod common;

use std::io::Cursor;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use common::*;
use futures_util::StreamExt;
use http::Method;
use upsession_client_reqwest::{
    Error, Pacing, ProgressEvent, ProgressKind, ProgressSink, Target, UploadError, UploadOptions,
    User,
};
use upsession_conformance::fake::{Fault, Quirks, RetryAfter, RunningFake};
use upsession_core::Dialect;
use upsession_core::dialect::RangeForm;
use upsession_core::route::ItemKind;
use upsession_core::wire::AttachmentItem;
use upsession_testbed::kit::crc64_hex;

fn puts(server: &RunningFake) -> Vec<String> {
    server
        .log()
        .into_iter()
        .filter(|r| r.method == "PUT")
        .map(|r| r.content_range.unwrap_or_default())
        .collect()
}

/// How createUploadSession described the attachment `id`.
fn attachment_item(server: &RunningFake, id: &str) -> AttachmentItem {
    let mut found = server.attachments().into_iter().filter(|a| a.id == id);
    found.next().expect("the attachment exists").attachment_item
}

/// Our server's answers with every `nextExpectedRanges` entry written in `form`.
fn ranges(form: RangeForm) -> Dialect {
    let mut dialect = Dialect::UPSESSION;
    dialect.created_ranges = form;
    dialect.ranges = form;
    dialect
}

fn throttled(retry_after: RetryAfter) -> Fault {
    Fault::Throttle {
        unavailable: false,
        retry_after,
    }
}

/// The `(wait, reason)` of each `Retrying` event.
fn retries(events: &[ProgressEvent]) -> Vec<(Duration, String)> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            ProgressKind::Retrying(retry) => Some((retry.wait, retry.reason.clone())),
            _ => None,
        })
        .collect()
}

/// Uploads a 6-fragment file in `style` and checks the bytes.
async fn upload_in_style(style: Quirks) {
    let server = FakeWithFile::new(
        fake_with(style.clone()).await,
        "data.bin",
        5 * FRAGMENT as usize + 1234,
        7,
    );
    let up = server
        .upload(&client(&server), UploadOptions::new())
        .await
        .unwrap_or_else(|e| panic!("{style:?}: {e}"));
    server.assert_stored(&up);
    assert_eq!(puts(&server).len(), 6, "{style:?}: one PUT per fragment");
    assert_token_only_to_graph(&server);
}

#[tokio::test]
async fn uploads_a_file_to_a_message_in_fragments_with_exact_bytes() {
    let total = 5 * FRAGMENT as usize + 1234;
    let server = FakeWithFile::new(fake().await, "report.pdf", total, 1);
    let up = server.upload_ok().await;
    let id = up.attachment_id.as_deref().unwrap();
    assert_eq!(
        up.location.as_deref(),
        Some(format!("{}/v1.0/me/messages/m1/attachments/{id}", server.origin()).as_str())
    );
    assert_eq!((up.name.as_str(), up.size), ("report.pdf", total as u64));
    assert_eq!(up.crc64.as_deref(), Some(crc64_hex(&server.bytes).as_str()));
    assert_eq!(up.sha256, None, "not asked for");

    let item = attachment_item(&server, id);
    assert_eq!(item.name, "report.pdf");
    assert_eq!(item.size, total as u64);
    assert_eq!(item.content_type.as_deref(), Some("application/pdf"));
    assert_eq!(item.is_inline, None);

    let ranges = puts(&server);
    assert_eq!(ranges.len(), 6);
    assert_eq!(ranges[0], format!("bytes 0-65535/{total}"));
    for r in server.log().iter().filter(|r| r.method == "PUT") {
        let cr: upsession_core::ContentRange = r.content_range.as_deref().unwrap().parse().unwrap();
        assert_eq!(
            r.content_length.as_deref(),
            Some(cr.range().len().to_string().as_str()),
            "fragments carry Content-Length"
        );
        assert_eq!(r.transfer_encoding, None, "fragments are not chunked");
    }
    assert_eq!(ranges[5], format!("bytes 327680-{}/{total}", total - 1));
    assert_token_only_to_graph(&server);
}

#[tokio::test]
async fn pascal_case_bare_ranges_and_odata_extras_are_understood() {
    let mut dialect = ranges(RangeForm::Bare);
    dialect.odata_context = true;
    upload_in_style(Quirks::dialect(dialect).with_pascal_case(true)).await;
}

#[tokio::test]
async fn open_ranges_and_a_200_with_an_id_complete_the_upload() {
    upload_in_style(Quirks::dialect(ranges(RangeForm::Open)).with_completion_with_id(true)).await;
}

#[tokio::test]
async fn a_201_with_a_json_body_completes_the_upload() {
    upload_in_style(
        Quirks::none()
            .with_completion_body(true)
            .with_pascal_case(true),
    )
    .await;
}

#[tokio::test]
async fn throttled_fragment_waits_for_retry_after_in_seconds() {
    let server = with_file(3 * FRAGMENT as usize, 2).await;
    server.inject(Method::PUT, 2, throttled(RetryAfter::Seconds(1)));
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&events);
    let options = UploadOptions::new().on_progress(move |e| seen.lock().unwrap().push(e.clone()));
    let up = server.upload(&client(&server), options).await.unwrap();
    server.assert_stored(&up);

    let retries = retries(&events.lock().unwrap());
    for (_, reason) in &retries {
        assert!(reason.contains("429"), "{reason}");
    }
    let waits: Vec<Duration> = retries.into_iter().map(|(wait, _)| wait).collect();
    assert_eq!(
        waits,
        [Duration::from_secs(1)],
        "Retry-After: 1 is obeyed exactly"
    );
    let ranges = puts(&server);
    assert_eq!(
        ranges[1], ranges[2],
        "the throttled fragment is sent again as it was"
    );
    assert_eq!(server.count(&Method::GET), 0, "a 429 needs no status query");
}

#[tokio::test]
async fn unavailable_with_retry_after_as_an_http_date_is_retried() {
    let server = with_file(2 * FRAGMENT as usize + 5, 3).await;
    server.inject(
        Method::PUT,
        1,
        Fault::Throttle {
            unavailable: true,
            retry_after: RetryAfter::HttpDate(1),
        },
    );
    let (sink, stream) = ProgressSink::channel();
    let options = UploadOptions::new().progress(sink);
    let up = server.upload(&client(&server), options).await.unwrap();
    server.assert_stored(&up);
    let events: Vec<ProgressEvent> = stream.collect().await;
    let retry = retries(&events)
        .into_iter()
        .next()
        .expect("the 503 was retried");
    assert!(retry.0 <= Duration::from_secs(2), "{retry:?}");
    assert!(retry.1.contains("503"), "{retry:?}");
}

#[tokio::test]
async fn connection_reset_mid_body_resends_the_fragment_after_asking() {
    let server = with_file(4 * FRAGMENT as usize, 4).await;
    server.inject(Method::PUT, 2, Fault::ResetMidBody);
    server.upload_ok().await;
    let ranges = puts(&server);
    assert_eq!(ranges.len(), 5);
    assert_eq!(ranges[1], ranges[2], "the cut fragment is sent again");
    assert!(
        server.count(&Method::GET) >= 1,
        "the session was asked first"
    );
}

#[tokio::test]
async fn a_tls_failure_says_so() {
    let server = with_file(FRAGMENT as usize, 3).await;
    let client = builder(&server)
        .base_url(server.base_url().replacen("http://", "https://", 1))
        .build()
        .unwrap();
    let err = server
        .upload_fails(&client, "https to a plain-http server fails")
        .await
        .to_string();
    assert!(err.contains("TLS handshake failed"), "{err}");
    assert!(err.contains("plain-http"), "{err}");
}

#[tokio::test]
async fn a_server_claiming_bytes_never_sent_stops_the_upload() {
    // After the first fragment (0..64K) the server claims 0..128K.
    let server = with_file(4 * FRAGMENT as usize, 9).await;
    server.inject(Method::PUT, 1, Fault::Misreport { from: 2 * FRAGMENT });
    let states = upsession_client_reqwest::StateStore::new(server.dir().join("states"));
    let client = builder(&server).state_dir(states.dir()).build().unwrap();
    let err = server
        .upload_fails(&client, "a lying server must not end in success")
        .await
        .to_string();
    assert!(err.contains("never sent"), "{err}");
    assert!(
        err.contains(&format!("bytes {}-{}", FRAGMENT, 2 * FRAGMENT - 1)),
        "{err}"
    );
    assert_eq!(server.attachments().len(), 0, "no attachment was made");
    // Nothing to resume: resuming would take the lie as its starting point.
    assert!(
        states.list().unwrap().is_empty(),
        "the resume state is gone"
    );
}

#[tokio::test]
async fn bytes_a_server_forgets_are_sent_again_and_the_attachment_is_exact() {
    // After two fragments were acknowledged, the server expects the first again
    // once (as after a power loss under `--fsync never`): it gets it again.
    let server = with_file(4 * FRAGMENT as usize, 9).await;
    server.inject(Method::PUT, 3, Fault::Misreport { from: 0 });
    server.upload_ok().await;
    let ranges = puts(&server);
    assert!(
        ranges[3].starts_with("bytes 0-"),
        "the forgotten bytes were sent again: {ranges:?}"
    );
}

#[tokio::test]
async fn lost_answers_ask_the_session_before_resending_even_the_last() {
    let server = with_file(3 * FRAGMENT as usize + 10, 5).await;
    // Fragment 2 is stored but its answer lost; so is the final fragment's.
    server.inject(Method::PUT, 2, Fault::LoseResponse);
    server.inject(Method::PUT, 4, Fault::LoseResponse);
    let up = server.upload_ok().await;
    assert!(up.location.is_some(), "the final answer was recovered");
    assert_eq!(server.attachments().len(), 1);

    let log = server.log();
    let methods: Vec<String> = log
        .iter()
        .map(|r| format!("{} {}", r.method, r.content_range.as_deref().unwrap_or("")))
        .collect();
    let ranges = puts(&server);
    // 2 was stored: after asking, the client goes on with 3, not 2 again.
    assert_eq!(ranges.len(), 5, "{methods:#?}");
    assert_ne!(ranges[1], ranges[2], "{methods:#?}");
    let len = server.bytes.len();
    let end = format!("-{}/{len}", len - 1);
    assert!(
        ranges[3].ends_with(&end) && ranges[4].ends_with(&end),
        "the final bytes are sent again to learn the Location: {ranges:?}"
    );
    assert_eq!(server.count(&Method::GET), 2, "{methods:#?}");
    // Each GET directly follows a lost PUT.
    for (i, r) in log.iter().enumerate() {
        if r.method == "GET" {
            assert_eq!(log[i - 1].method, "PUT");
        }
    }
}

#[tokio::test]
async fn server_errors_are_retried_after_asking_the_session() {
    let server = with_file(2 * FRAGMENT as usize, 6).await;
    server.inject(Method::PUT, 1, Fault::ServerError);
    server.inject(Method::GET, 1, Fault::ServerError);
    server.upload_ok().await;
    assert_eq!(server.count(&Method::GET), 2);
}

#[tokio::test]
async fn an_expired_session_is_a_typed_error_not_a_silent_stop() {
    let server = with_file(5 * FRAGMENT as usize, 8).await;
    server.inject(Method::PUT, 3, Fault::Expire);
    let err = server
        .upload_fails(&client(&server), "the session expired")
        .await;
    let remote = expired_remote(&err);
    assert_eq!(remote.status, 404);
    assert_eq!(remote.inner_code.as_deref(), Some("uploadSessionNotFound"));
    assert!(
        err.to_string()
            .starts_with("the upload session has expired"),
        "{err}"
    );
    assert_eq!(server.attachments().len(), 0);
}

#[tokio::test]
async fn attempts_are_bounded_when_the_server_keeps_failing() {
    let server = with_file(2 * FRAGMENT as usize, 9).await;
    for n in 1..=20 {
        server.inject(Method::PUT, n, Fault::ServerError);
        server.inject(Method::GET, n, Fault::ServerError);
    }
    let client = builder(&server)
        .planner(fast_planner().with_max_attempts(4))
        .build()
        .unwrap();
    let err = server.upload_fails(&client, "every answer fails").await;
    assert!(
        matches!(
            err,
            Error::Upload(UploadError::AttemptsExhausted { attempts: 4, .. })
        ),
        "{err:?}"
    );
    assert_eq!(server.count(&Method::PUT) + server.count(&Method::GET), 4);
}

#[tokio::test]
async fn graphs_error_json_surfaces_code_message_and_request_id() {
    let server = with_file(1000, 10).await;
    let err = client(&server)
        .upload_file(
            &Target::message("missing-1"),
            &server.path,
            UploadOptions::new(),
        )
        .await
        .unwrap_err();
    let remote = err.remote().expect("a Graph error");
    assert_eq!(remote.status, 404);
    assert_eq!(remote.code, "ErrorItemNotFound");
    // The fake numbers the request ids of its error answers from `fake-0`.
    assert_eq!(remote.request_id.as_deref(), Some("fake-0"));
    let text = err.to_string();
    assert!(
        text.contains("ErrorItemNotFound") && text.contains("fake-0"),
        "{text}"
    );
    assert!(
        !matches!(err, Error::SessionExpired { .. }),
        "the message is missing, not the session"
    );

    let wrong = builder(&server).token("wrong").build().unwrap();
    let err = server.upload_fails(&wrong, "the token is wrong").await;
    assert_eq!(err.remote().unwrap().code, "InvalidAuthenticationToken");
}

#[tokio::test]
async fn events_calendar_view_users_and_beta_use_their_routes() {
    let server = with_file(1000, 11).await;
    server.create_item_with_id(ItemKind::Event, "e/1", "an event");
    server.create_item_with_id(ItemKind::Event, "e2", "another event");
    let beta = builder(&server)
        .base_url(format!("{}/beta/", server.origin()))
        .user(User::id("adele@contoso.com"))
        .build()
        .unwrap();
    for target in [Target::event("e/1"), Target::calendar_view("e2")] {
        let up = beta
            .upload_file(&target, &server.path, UploadOptions::new())
            .await
            .unwrap();
        server.assert_stored(&up);
    }
    server.upload_ok().await;
    let posts: Vec<String> = server
        .log()
        .into_iter()
        .filter(|r| r.method == "POST")
        .map(|r| r.path)
        .collect();
    assert_eq!(
        posts,
        [
            "/beta/users/adele@contoso.com/events/e%2F1/attachments/createUploadSession",
            "/beta/users/adele@contoso.com/calendarView/e2/attachments/createUploadSession",
            "/v1.0/me/messages/m1/attachments/createUploadSession",
        ]
    );
    assert_token_only_to_graph(&server);
}

#[tokio::test]
async fn create_draft_then_attach_to_it() {
    let server = with_file(FRAGMENT as usize + 1, 12).await;
    let client = client(&server);
    let draft = client.create_draft("Quarterly report").await.unwrap();
    let Target::Message(id) = &draft else {
        panic!("{draft:?}")
    };
    let up = client
        .upload_file(&draft, &server.path, UploadOptions::new())
        .await
        .unwrap();
    server.assert_stored(&up);
    assert!(
        up.location
            .unwrap()
            .contains(&format!("/messages/{id}/attachments/"))
    );
    assert_eq!(server.log()[0].path, "/v1.0/me/messages");
    assert_token_only_to_graph(&server);
}

#[tokio::test]
async fn a_throttled_draft_status_or_cancel_is_sent_again_after_retry_after() {
    let server = with_file(4 * FRAGMENT as usize, 33).await;
    server.inject(Method::POST, 1, throttled(RetryAfter::Seconds(1)));
    let client = client(&server);
    let started = std::time::Instant::now();
    let draft = client.create_draft("Quarterly report").await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 obeyed"
    );
    assert_eq!(server.count(&Method::POST), 2, "one draft asked for twice");
    let Target::Message(_) = &draft else {
        panic!("{draft:?}")
    };

    let url = stalled_session(&server, &client, 3).await;
    let gets = server.count(&Method::GET);
    server.inject(
        Method::GET,
        gets + 1,
        Fault::Throttle {
            unavailable: true,
            retry_after: RetryAfter::Seconds(1),
        },
    );
    let status = client.status(&url).await.unwrap();
    assert_eq!(
        status.next_expected_ranges(),
        [format!("{}-{}", 2 * FRAGMENT, 4 * FRAGMENT - 1)]
    );
    assert_eq!(server.count(&Method::GET), gets + 2);
    server.inject(Method::DELETE, 1, throttled(RetryAfter::Seconds(1)));
    client.cancel(&url).await.unwrap();
    assert_eq!(server.count(&Method::DELETE), 2);
    // Throttled past the attempts: the last answer is the error.
    let posts = server.count(&Method::POST);
    for nth in 1..=5 {
        server.inject(Method::POST, posts + nth, throttled(RetryAfter::Seconds(0)));
    }
    let err = client.create_draft("again").await.unwrap_err();
    assert_eq!(err.remote().map(|r| r.status.as_u16()), Some(429), "{err}");
}

#[tokio::test]
async fn inline_attachments_carry_name_type_and_content_id() {
    let server = FakeWithFile::new(fake().await, "raw.dat", 1000, 13);
    let options = UploadOptions::new()
        .name("logo.png")
        .content_type("image/x-custom")
        .inline("logo@1");
    let up = server.upload(&client(&server), options).await.unwrap();
    server.assert_stored(&up);
    let item = attachment_item(&server, up.attachment_id.as_deref().unwrap());
    assert_eq!(item.name, "logo.png");
    assert_eq!(item.content_type.as_deref(), Some("image/x-custom"));
    assert_eq!(item.is_inline, Some(true));
    assert_eq!(item.content_id.as_deref(), Some("logo@1"));
}

/// `n` seeded files `{prefix}{i}.bin` of `len(i)` bytes from seed `seed + i`.
fn files(
    dir: &std::path::Path,
    prefix: &str,
    n: usize,
    len: impl Fn(usize) -> usize,
    seed: u64,
) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    (0..n)
        .map(|i| seeded_file(dir, &format!("{prefix}{i}.bin"), len(i), seed + i as u64))
        .collect()
}

#[tokio::test]
async fn many_files_upload_concurrently_within_the_limit() {
    let server = fake().await;
    let dir = tempfile::tempdir().unwrap();
    let files = files(dir.path(), "f", 5, |i| 2 * FRAGMENT as usize + i * 100, 20);
    let client = builder(&server).concurrency(2).build().unwrap();
    let results = client
        .upload_many(
            &m1(),
            files.iter().map(|(p, _)| (p.clone(), UploadOptions::new())),
        )
        .await;
    assert_eq!(results.len(), 5);
    for ((_, bytes), result) in files.iter().zip(&results) {
        let up = result.as_ref().unwrap();
        assert_stored(&server, up.attachment_id.as_deref(), bytes);
    }
    assert!(server.max_in_flight() <= 2, "{}", server.max_in_flight());
    assert_eq!(server.attachments().len(), 5);
}

#[tokio::test]
async fn any_seekable_reader_can_be_uploaded() {
    let server = fake().await;
    let bytes: Vec<u8> = (0..3 * FRAGMENT as usize + 17)
        .map(|i| (i * 31 % 251) as u8)
        .collect();
    let client = client(&server);
    let target = m1();
    let upload = |reader: Vec<u8>, len: u64, options: UploadOptions| {
        client.upload_reader(&target, Cursor::new(reader), len, options)
    };
    let up = upload(
        bytes.clone(),
        bytes.len() as u64,
        UploadOptions::new().name("memory.txt"),
    )
    .await
    .unwrap();
    assert_stored(&server, up.attachment_id.as_deref(), &bytes);
    let item = attachment_item(&server, up.attachment_id.as_deref().unwrap());
    assert_eq!(item.content_type.as_deref(), Some("text/plain"));

    let err = upload(vec![1], 1, UploadOptions::new()).await.unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err}");

    // A reader shorter than announced never yields a short fragment.
    let short = UploadOptions::new().name("short.bin");
    let err = upload(vec![1; 100], 200, short).await.unwrap_err();
    assert!(matches!(err, Error::FileChanged { .. }), "{err}");

    // A reader that cannot seek fails before its fragment is sent.
    let puts = |server: &RunningFake| server.log().iter().filter(|r| r.method == "PUT").count();
    let before = puts(&server);
    let len = bytes.len() as u64;
    let options = UploadOptions::new().name("noseek.bin");
    let err = client
        .upload_reader(&target, NoSeek(Cursor::new(bytes)), len, options)
        .await
        .unwrap_err();
    assert!(err.to_string().starts_with("could not seek in"), "{err}");
    assert_eq!(puts(&server), before, "no PUT was started");
}

/// A reader whose seeks fail.
struct NoSeek(Cursor<Vec<u8>>);

impl tokio::io::AsyncRead for NoSeek {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncSeek for NoSeek {
    fn start_seek(self: std::pin::Pin<&mut Self>, _: std::io::SeekFrom) -> std::io::Result<()> {
        Err(std::io::Error::other("this reader cannot seek"))
    }

    fn poll_complete(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<u64>> {
        std::task::Poll::Ready(Ok(0))
    }
}

#[tokio::test]
async fn progress_goes_to_a_callback_and_a_stream() {
    let total = 3 * FRAGMENT + 3;
    let server = with_file(total as usize, 30).await;
    let called = Arc::new(Mutex::new(0_usize));
    let count = Arc::clone(&called);
    let (sink, stream) = ProgressSink::channel();
    let sink = sink.with_callback(move |_| *count.lock().unwrap() += 1);
    let options = UploadOptions::new().progress(sink);
    let up = server.upload(&client(&server), options).await.unwrap();
    let events: Vec<ProgressEvent> = stream.collect().await;
    assert_eq!(*called.lock().unwrap(), events.len());
    assert!(matches!(events[0].kind, ProgressKind::Started { total: t } if t == total));
    assert!(matches!(
        events[1].kind,
        ProgressKind::SessionCreated { .. }
    ));
    let acked: Vec<u64> = events
        .iter()
        .filter_map(|e| match e.kind {
            ProgressKind::Acknowledged { acknowledged, .. } => Some(acknowledged),
            _ => None,
        })
        .collect();
    assert_eq!(acked, [0, FRAGMENT, 2 * FRAGMENT, 3 * FRAGMENT, total]);
    let ProgressKind::Completed { attachment_id, .. } = &events.last().unwrap().kind else {
        panic!("{:?}", events.last())
    };
    assert_eq!(attachment_id, &up.attachment_id);
    let label = server.path.display().to_string();
    assert!(events.iter().all(|e| *e.label == *label));
}

#[tokio::test]
async fn a_file_changed_during_the_upload_is_refused() {
    let server = with_file(4 * FRAGMENT as usize, 31).await;
    let p = server.path.clone();
    let options = UploadOptions::new().on_progress(move |e| {
        if let ProgressKind::Acknowledged { acknowledged, .. } = e.kind
            && acknowledged == FRAGMENT
        {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
            f.write_all(b"more").unwrap();
        }
    });
    let err = server.upload(&client(&server), options).await.unwrap_err();
    assert!(matches!(err, Error::FileChanged { .. }), "{err:?}");
    assert_eq!(
        server.count(&Method::PUT),
        1,
        "no fragment of the changed file was sent"
    );
}

#[tokio::test]
async fn status_reports_ranges_and_expiry_and_cancel_deletes_the_session() {
    let server = with_file(4 * FRAGMENT as usize, 32).await;
    let client = client(&server);
    let url = stalled_session(&server, &client, 3).await;

    let status = client.status(&url).await.unwrap();
    assert_eq!(
        status.next_expected_ranges(),
        [format!("{}-{}", 2 * FRAGMENT, 4 * FRAGMENT - 1)]
    );
    assert!(status.expires().unwrap() > SystemTime::now());
    assert_eq!(
        status.next_expected(4 * FRAGMENT).unwrap().ranges()[0].start(),
        2 * FRAGMENT
    );

    client.cancel(&url).await.unwrap();
    assert!(matches!(
        client.cancel(&url).await,
        Err(Error::SessionExpired { remote: Some(_) })
    ));
    assert!(matches!(
        client.status(&url).await,
        Err(Error::SessionExpired { .. })
    ));
    assert_token_only_to_graph(&server);
}

/// Uploads the file in a task until the server has the stalled PUT number
/// `stall_at`, then stops the task; returns the session's uploadUrl.
async fn stalled_session(
    server: &FakeWithFile,
    client: &upsession_client_reqwest::Client,
    stall_at: usize,
) -> upsession_client_reqwest::UploadUrl {
    server.inject(Method::PUT, stall_at, Fault::Stall(Duration::from_secs(60)));
    let (sink, mut events) = ProgressSink::channel();
    let (c, p) = (client.clone(), server.path.clone());
    let task = tokio::spawn(async move {
        c.upload_file(&m1(), &p, UploadOptions::new().progress(sink))
            .await
    });
    let mut url = None;
    while let Some(e) = events.next().await {
        match e.kind {
            ProgressKind::SessionCreated { upload_url, .. } => {
                url = Some(upload_url);
                break;
            }
            ProgressKind::Failed { message } => panic!("{message}"),
            _ => {}
        }
    }
    wait_for(server, &Method::PUT, stall_at).await;
    task.abort();
    let _ = task.await;
    url.expect("a session was created")
}

#[tokio::test]
async fn a_redirect_to_another_host_is_refused() {
    let server = fake().await;
    // 307 to the same path and query under `localhost`: another host to the client.
    server.inject(Method::GET, 1, Fault::CrossHostRedirect);
    let client = client(&server);
    let url = format!("{}/uploads/s1?authtoken=SECRET-ORIGINAL", server.origin()).into();
    let err = client.status(&url).await.unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(matches!(err, Error::Http(_)), "{text}");
    assert!(text.contains("redirect"), "{text}");
    assert!(!text.contains("SECRET"), "{text}");
    assert_eq!(
        server.count(&Method::GET),
        1,
        "the redirect was not followed"
    );

    server.inject(Method::POST, 1, Fault::CrossHostRedirect);
    let err = client.create_draft("x").await.unwrap_err();
    assert!(matches!(err, Error::Http(_)), "{err:?}");
    assert_eq!(
        server.count(&Method::POST),
        1,
        "the token did not follow the redirect"
    );
}

#[tokio::test]
async fn a_client_without_a_token_can_resume_status_and_cancel_but_not_create() {
    let server = fake().await;
    let anonymous = upsession_client_reqwest::Client::builder()
        .base_url(server.base_url())
        .build()
        .unwrap();
    assert!(matches!(
        anonymous.create_draft("x").await,
        Err(Error::NoToken)
    ));
    assert_eq!(server.log().len(), 0, "nothing was sent without a token");
    let unknown = format!("{}/uploads/nope?authtoken=x", server.origin()).into();
    assert!(matches!(
        anonymous.status(&unknown).await,
        Err(Error::SessionExpired { .. })
    ));
}

#[tokio::test]
async fn a_stalled_request_times_out_and_the_session_is_asked() {
    let server = with_file(3 * FRAGMENT as usize, 60).await;
    server.inject(Method::PUT, 2, Fault::Stall(Duration::from_secs(60)));
    let impatient = builder(&server)
        .request_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let up = server
        .upload(&impatient, UploadOptions::new())
        .await
        .unwrap();
    server.assert_stored(&up);
    assert_eq!(
        server.count(&Method::GET),
        1,
        "a timeout is a lost answer: ask first"
    );
}

#[tokio::test]
async fn a_413_makes_the_planner_send_smaller_fragments() {
    let server = with_file(1_500_000, 61).await;
    server.inject(Method::PUT, 1, Fault::PayloadTooLarge { max: 400_000 });
    let (sink, stream) = ProgressSink::channel();
    let quantum = upsession_core::planner::FRAGMENT_QUANTUM;
    let client = builder(&server).fragment_size(2 * quantum).build().unwrap();
    let up = server
        .upload(&client, UploadOptions::new().progress(sink))
        .await
        .unwrap();
    server.assert_stored(&up);
    let events: Vec<ProgressEvent> = stream.collect().await;
    assert!(events.iter().any(|e| matches!(
        e.kind,
        ProgressKind::FragmentShrunk { fragment_size } if fragment_size == quantum
    )));
    let ranges = puts(&server);
    assert_eq!(ranges[1], "bytes 0-327679/1500000");
}

#[tokio::test]
async fn pacing_keeps_to_the_byte_budget_and_the_request_limit() {
    let server = fake().await;
    let dir = tempfile::tempdir().unwrap();
    let files = files(dir.path(), "p", 3, |_| 2 * FRAGMENT as usize, 70);
    let paced = Arc::new(Mutex::new(0));
    let count = Arc::clone(&paced);
    let sink = ProgressSink::callback(move |e| {
        if let ProgressKind::Paced { wait } = e.kind {
            assert!(wait <= Duration::from_millis(200), "{wait:?}");
            *count.lock().unwrap() += 1;
        }
    });
    let client = builder(&server)
        .concurrency(3)
        .pacing(
            Pacing::outlook()
                .with_budget(3 * FRAGMENT, Duration::from_millis(200))
                .with_max_concurrent(1),
        )
        .build()
        .unwrap();
    let results = client
        .upload_many(
            &m1(),
            files
                .iter()
                .map(|(p, _)| (p.clone(), UploadOptions::new().progress(sink.clone()))),
        )
        .await;
    for ((_, bytes), result) in files.iter().zip(results) {
        assert_stored(&server, result.unwrap().attachment_id.as_deref(), bytes);
    }
    assert!(
        *paced.lock().unwrap() >= 1,
        "6 fragments do not fit a 3-fragment budget"
    );
    assert_eq!(server.max_in_flight(), 1, "one request at a time");
}
