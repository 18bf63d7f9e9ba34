//! "The new request wins", through every SDK model: a fragment PUT whose connection
//! dies half-open (its head and half its body sent, the socket kept open, the server
//! still waiting for the rest) is sent again at once, by the SDK itself or by the
//! application resuming the SDK's way, and that retry takes the fragment over:
//! the stale request is answered `409 fragmentSuperseded` and the upload ends long
//! before the body idle timeout could have freed the fragment. The last test shows
//! the rule's edge: a request for another offset still waits its turn
//! (`409 fragmentInProgress`), so the uploads above really went through the
//! takeover.
//!
//! Our server runs in-process over https, as in `sdk_matrix.rs`, with its default
//! dialect and limits and a body idle timeout of [`BODY_IDLE`].

#![allow(clippy::pedantic)] // test code favours brevity over pedantry

use std::time::{Duration, Instant};

use upsession_conformance::sdk::driver::{self, Event, Options, Outcome, Run};
use upsession_conformance::sdk::{DotNet, Go, Java, JavaScript, Php, Python, SdkModel, matrix};
use upsession_testbed::kit::{self, TOKEN, TestServer};

const MIB: usize = 1 << 20;
/// How long the server waits for a stalled body: waiting for it would be obvious.
const BODY_IDLE: Duration = Duration::from_secs(120);
/// "Well before the idle timeout could have freed the fragment."
const BOUND: Duration = Duration::from_secs(60);
/// Several fragments for every model's slice: 3 of Python's, JavaScript's, .NET's
/// and Java's 5 MiB, 4 of PHP's 4 MiB, 48 of Go's 320 KiB; and not `k × slice + 1`,
/// which Java's model never finishes (msgraph-sdk-java#2581).
const SIZE: usize = 15 * MIB;
/// The fragment PUT that goes half-open: the first after one was accepted.
const HALF_OPEN: u32 = 2;

/// What an SDK does once its 2nd fragment PUT is lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Recovery {
    /// It sends the fragment again by itself.
    RetriesItself,
    /// It throws; the application resumes it the SDK's way.
    Resumed,
}

/// How the upload ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ends {
    Works,
    /// The SDK reports success, but the bytes it resumed with are not the file's.
    WrongBytes,
}

struct Case {
    model: Box<dyn SdkModel>,
    /// Which variant of the application, when there are two.
    label: &'static str,
    recovery: Recovery,
    ends: Ends,
    /// Why, from the SDK's source at the model's commit.
    because: &'static str,
}

fn cases() -> Vec<Case> {
    let case = |model: Box<dyn SdkModel>, recovery, because| Case {
        model,
        label: "",
        recovery,
        ends: Ends::Works,
        because,
    };
    vec![
        case(
            Box::new(Python::new()),
            Recovery::RetriesItself,
            "large_file_upload.py: the in-loop `next_chunk` is inside `try`, whose `except \
             Exception` logs and swallows the error; `process_next` keeps the last session, so \
             the next iteration sends the same range again",
        ),
        case(
            Box::new(JavaScript::new()),
            Recovery::Resumed,
            "LargeFileUploadTask.ts: fetch's `TypeError` leaves `upload()` (the retry handler \
             skips octet-stream bodies); the application calls `resume()`: `getStatus()` (GET), \
             then `upload()` from the range it names",
        ),
        case(
            Box::new(DotNet::new()),
            Recovery::Resumed,
            "LargeFileUploadTask.cs: `UploadSliceAsync` catches only `ServiceException` (its one \
             immediate re-try is for HTTP errors); the `HttpRequestException` leaves \
             `UploadAsync`; the application calls `ResumeAsync()`: GET, expiry, `UploadAsync`",
        ),
        Case {
            model: Box::new(Java::new()),
            label: "resume()",
            recovery: Recovery::Resumed,
            ends: Ends::WrongBytes,
            because: "LargeFileUploadTask.java: kiota-java rethrows the `IOException` as a \
                      `RuntimeException`, which `uploadSlice` (catching `ApiException`) lets out \
                      of `upload()`; the application calls `resume()`: GET, expiry, `upload()`. \
                      But `chunkInputStream` reads on from where the lost slice left the stream, \
                      so the resumed slices carry the next bytes (msgraph-sdk-java#2503): the \
                      server takes the fragment over at once and stores what it is sent",
        },
        Case {
            model: Box::new(Java::new().repositioning_on_resume()),
            label: "as msgraph-sdk-java#2503 suggests",
            recovery: Recovery::Resumed,
            ends: Ends::Works,
            because: "the application calls `updateSessionStatus()` (GET), moves its stream to \
                      the first byte the session expects, and calls `upload()`",
        },
        case(
            Box::new(Go::new()),
            Recovery::RetriesItself,
            "large_file_upload_task.go: `uploadWithRetry` makes a second attempt at the same \
             slice after `time.Sleep(1 s)`",
        ),
        case(
            Box::new(Php::new()),
            Recovery::Resumed,
            "LargeFileUploadTask.php: `wait()` throws Guzzle's `ConnectException` out of \
             `upload()`; `resume()` takes an in-memory session, so the application reads one \
             from GET uploadUrl and resumes a new task with it",
        ),
    ]
}

/// Our server, its base URL, and the driver's client trusting its certificate.
struct Harness {
    server: TestServer,
    base: String,
    client: reqwest::Client,
    _certs: tempfile::TempDir,
}

async fn harness() -> Harness {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key, pem) = kit::self_signed(certs.path());
    let server = TestServer::start_with(|config| {
        config
            .with_tls(&cert, &key)
            .with_timeouts(Duration::from_secs(30), BODY_IDLE)
    })
    .await;
    Harness {
        base: server.running().base_url(),
        server,
        client: driver::client(Some(&pem)).unwrap(),
        _certs: certs,
    }
}

/// Where a `bytes a-b/S` range starts.
fn start(range: &str) -> u64 {
    let first = range.trim_start_matches("bytes ").split('-').next();
    first.and_then(|a| a.parse().ok()).expect(range)
}

/// Checks what happened after the half-open PUT: how the SDK came back, and that its
/// next PUT was for the same offset (the one that took over).
fn check_recovery(name: &str, case: &Case, run: &Run) {
    let at = run
        .events
        .iter()
        .position(|e| matches!(e, Event::HalfOpen { .. }))
        .unwrap_or_else(|| panic!("{name}: no PUT went half-open"));
    let Event::HalfOpen { content_range, .. } = &run.events[at] else {
        unreachable!()
    };
    let after = &run.events[at + 1..];
    let resumed = after.iter().any(|e| matches!(e, Event::Resumed { .. }));
    let recovery = if resumed {
        Recovery::Resumed
    } else {
        Recovery::RetriesItself
    };
    assert_eq!(recovery, case.recovery, "{name}: {}", case.because);
    let next_put = after.iter().find_map(|e| match e {
        Event::Sent {
            content_range: Some(r),
            ..
        } => Some(r),
        _ => None,
    });
    let next_put = next_put.unwrap_or_else(|| panic!("{name}: no PUT after the half-open one"));
    assert_eq!(
        start(next_put),
        start(content_range),
        "{name}: the next PUT is for another offset"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sdk_gets_past_a_half_open_fragment_at_once() {
    let h = harness().await;
    let file = matrix::file(SIZE);
    let options = Options::new().half_open_put(HALF_OPEN).resuming(1);
    let started = Instant::now();
    for mut case in cases() {
        let name = format!("{} {}", case.model.profile().name, case.label);
        let name = name.trim();
        let one = Instant::now();
        let run =
            driver::run_with_options(&h.client, &mut *case.model, &h.base, TOKEN, &file, &options)
                .await;
        let took = one.elapsed();
        eprintln!("{name}: {} in {:.1} s", run.outcome, took.as_secs_f64());
        for event in &run.events {
            if !matches!(event, Event::Slept(_)) {
                eprintln!("    {event}");
            }
        }
        eprintln!("    stale request answered: {:?}", run.half_open_answers);
        match case.ends {
            Ends::Works => assert_eq!(run.outcome, Outcome::Works, "{name}: {}", case.because),
            Ends::WrongBytes => assert_eq!(
                run.outcome.to_string(),
                "fails: reports success, but the attachment's bytes differ",
                "{name}: {}",
                case.because
            ),
        }
        assert_eq!(
            run.half_open_answers,
            [Some("409 fragmentSuperseded".to_owned())],
            "{name}: the retry took the fragment over"
        );
        check_recovery(name, &case, &run);
        assert!(took < BOUND, "{name} took {took:?}");
    }
    let elapsed = started.elapsed();
    eprintln!("all models: {:.1} s", elapsed.as_secs_f64());
    assert!(
        elapsed < BOUND && BOUND < BODY_IDLE,
        "{elapsed:?}: something waited for the idle timeout"
    );
    h.server.shutdown().await;
}

/// Go with its 2nd and 3rd PUTs half-open: the 3rd, its second attempt at the same
/// slice, takes the fragment over from the 2nd; when that one is lost too, Go moves
/// on to the next slice (it goes on after a failed slice), another offset, which the
/// half-open 3rd still holds the session against: 409 `fragmentInProgress`, every
/// time, and the upload fails. Only a request for the same offset takes over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_for_another_offset_waits_for_a_half_open_fragment() {
    let h = harness().await;
    // The server's minimum (2 MiB) and then some: 10 of Go's slices.
    let file = matrix::file(3 * MIB);
    let options = Options::new().half_open_put(2).half_open_put(3);
    let started = Instant::now();
    let run =
        driver::run_with_options(&h.client, &mut Go::new(), &h.base, TOKEN, &file, &options).await;
    for event in &run.events {
        eprintln!("    {event}");
    }
    let Outcome::Fails { reason } = &run.outcome else {
        panic!("Go got past a held fragment: {:?}", run.events)
    };
    assert!(
        reason.starts_with("409 fragmentInProgress"),
        "{reason}: {:?}",
        run.events
    );
    assert_eq!(
        run.half_open_answers,
        [Some("409 fragmentSuperseded".to_owned()), None],
        "the same offset took over; the other offset did not"
    );
    assert!(started.elapsed() < BOUND);
    h.server.shutdown().await;
}
