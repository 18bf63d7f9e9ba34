//! Python: msgraph-core's `LargeFileUploadTask.upload()`
//! (`src/msgraph_core/tasks/large_file_upload.py`, line numbers below are that
//! file's at the profile's commit), over kiota-python's httpx adapter.
//!
//! What makes it peculiar, all modelled:
//!
//! - Ranges come from `nextExpectedRanges[0]` of each PUT answer; the loop stores it
//!   with a `-` appended (line 129) and `next_chunk` reads both halves with `int()`
//!   (lines 161-163), so `"a-"` and a bare `"a"` raise
//!   `ValueError: invalid literal for int() with base 10: ''`, and a closed `"a-b"`
//!   sends `min(b, C + a) - a + 1` bytes: one more than the chunk (line 175).
//! - Two branches read from the stream's current position without seeking (lines
//!   165 and 168), so the body can disagree with the `Content-Range`.
//! - The iteration budget is `int(S / C + 0.5)` (line 44); when it reaches 0 the last
//!   range is sent again (`last_chunk`, line 110), even after the upload completed:
//!   for a file that fits one chunk with an empty body (msgraph-sdk-python-core#718).
//! - Status codes are never looked at: a 2xx answer whose parsed session has no
//!   `nextExpectedRanges` (absent, empty, PascalCase, or no body at all) stops the
//!   new slices. Errors inside the loop are logged and swallowed (line 132); errors
//!   of the first and the last PUT propagate.
//! - No retry: kiota's retry handler skips `application/octet-stream` bodies.
//! - `resume()` (lines 278-297) takes the session object it is given, never asking
//!   the server; [`SdkModel::resume`] is the application's way in: its own
//!   `GET uploadUrl`, kiota's parser for the session, a new task, `resume()`.

use std::time::SystemTime;

use serde_json::Value;
use upsession_core::time::parse_graph_time;

use super::ported::{self, Port, Task};
use super::{Answer, Body, Profile, Request, SdkModel, Step, Stream, field, quoted, strings};

static PROFILE: Profile = Profile {
    name: "Python",
    package: "msgraph-core, main after 1.4.0",
    repo: "microsoftgraph/msgraph-sdk-python-core",
    path: "src/msgraph_core/tasks/large_file_upload.py",
    commit: "d6e481af8981ed0d886c842c427a3eb921c7e17b",
    chunk: CHUNK,
    chunk_source: "default `max_chunk_size`",
    client_error: "ODataError",
    summary: "Reads `nextExpectedRanges[0]` of each answer with `int()` on both halves \
              (\"a-\" and bare \"a\" raise ValueError); closed ranges give chunk + 1 B slices; \
              camelCase only; re-sends its last range after completion; no slice retry",
    live_issues: &[(
        "microsoftgraph/msgraph-sdk-python-core#718",
        "a file under one chunk fails, as its re-send after completion has an empty body, \
         which the live service answers 400",
    )],
};

/// 5 MiB: `max_chunk_size: int = 5 * 1024 * 1024` (line 29).
const CHUNK: u64 = 5 * 1024 * 1024;

/// Where PHP's port does otherwise.
static PORT: Port = Port {
    chunk: CHUNK,
    budget,
    read: read_signed,
    runtime_error: "RuntimeError",
    unreadable: [
        "JSONDecodeError: the status answer is not JSON",
        "JSONDecodeError on the status answer",
    ],
};

/// The parsed `LargeFileUploadSession` of a PUT answer: only its ranges matter.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Session {
    /// `next_expected_ranges`: `None` when absent (PascalCase lands in
    /// `additional_data`) or null.
    ranges: Option<Vec<String>>,
}

/// The PUT in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum InFlight {
    /// `next_chunk` before the loop (line 95): its errors propagate.
    First,
    /// `next_chunk` inside the loop (line 130): its errors are swallowed.
    Loop,
    /// `last_chunk` (line 110): its errors propagate; then the same iteration goes on.
    Last,
}

/// The Python SDK's upload task.
#[derive(Clone, Debug, Default)]
pub struct Python {
    task: Task,
    /// `self.next_range`.
    next_range: Option<String>,
    /// The server's range `next_range` was made from, for messages.
    server_range: Option<String>,
    /// `process_next`: the result of the last successful `next_chunk`.
    process_next: Option<Session>,
    in_flight: Option<InFlight>,
    /// The application's `GET uploadUrl` is in flight: it is about to resume.
    resuming: bool,
}

impl Python {
    /// A task not yet started.
    pub fn new() -> Self {
        Self::default()
    }

    /// `upload()` up to its first `next_chunk` (lines 95-97), whose errors propagate.
    fn first_chunk(&mut self) -> Step {
        // Line 90; the expiry check of line 91 was made on the same session.
        let first_end = self.task.rewind(&PORT);
        match self.chunk_request(0, first_end) {
            Ok(request) => {
                self.in_flight = Some(InFlight::First);
                Step::Send(request)
            }
            Err(raised) => raised,
        }
    }

    /// The `while self.chunks >= 0` loop (lines 106-135), from the top of an
    /// iteration; `last_sent` when this iteration's `last_chunk` was answered.
    fn iterate(&mut self, mut last_sent: bool) -> Step {
        loop {
            if self.task.chunks < 0 {
                // `upload_result.location = self.upload_session.upload_url` (line 139).
                return Step::Done {
                    location: Some(self.task.upload_url.clone()),
                };
            }
            if self.task.chunks == 0 && !last_sent {
                return match self.chunk_request(0, 0) {
                    Ok(request) => {
                        self.in_flight = Some(InFlight::Last);
                        Step::Send(request)
                    }
                    Err(raised) => raised, // not inside the try: propagates
                };
            }
            last_sent = false;
            // The try block, on `session = process_next`.
            let first = self
                .process_next
                .as_ref()
                .and_then(|s| s.ranges.as_ref())
                .and_then(|r| r.first())
                .cloned();
            if let Some(first) = first {
                let head = first.split('-').next().unwrap_or_default();
                if py_int(head).is_ok() {
                    self.next_range = Some(format!("{first}-"));
                    self.server_range = Some(first);
                    if let Ok(request) = self.chunk_request(0, 0) {
                        self.in_flight = Some(InFlight::Loop);
                        return Step::Send(request);
                    }
                }
                // A ValueError here is logged and swallowed (line 132).
            }
            self.task.chunks -= 1; // `finally`
        }
    }

    /// `next_chunk` / `last_chunk` (lines 150-184 and 186-227, the same range logic):
    /// the uploadUrl checked first (`get_validated_upload_url`), then the request
    /// for `self.next_range`, each half read with `int()`, or the `ValueError` it
    /// raises.
    fn chunk_request(&mut self, range_start: u64, range_end: u64) -> Result<Request, Step> {
        self.task.check_url(&PORT)?;
        let next = self
            .next_range
            .get_or_insert_with(|| format!("{range_start}-{range_end}"))
            .clone();
        let shown = self.server_range.clone().unwrap_or_else(|| next.clone());
        let parts: Vec<&str> = next.split('-').collect();
        let start = py_int(parts[0]).map_err(|e| value_error(&e, &shown))?;
        let end = match parts.get(1) {
            Some(p) => py_int(p).map_err(|e| value_error(&e, &shown))?,
            None => 0,
        };
        self.task.chunk(&PORT, start, end)
    }

    /// The application's resume on the answer to its `GET uploadUrl`: the session as
    /// kiota's JSON parser builds it, with the uploadUrl kept; a new task on the same
    /// stream (the constructor: a fresh budget, no range); its `resume()` (lines
    /// 278-297): the expiry, `nextExpectedRanges[0]` as `self.next_range`, `upload()`.
    fn resume_from(&mut self, now: SystemTime, answer: &Answer) -> Step {
        let json = match self.task.renew(answer, &PORT) {
            Ok(json) => json,
            Err(raised) => return raised,
        };
        if let Err(raised) = check_expiry(now, field(&json, "expirationDateTime")) {
            return raised;
        }
        // `check_value_exists`: a PascalCase key is in `additional_data`, looked at
        // first, whatever its value; else the attribute, None when absent.
        let ranges = match field(&json, "NextExpectedRanges") {
            Some(pascal) => strings(pascal),
            None => next_expected_ranges(&json),
        };
        let first = match ranges.as_deref() {
            None => {
                return Step::fail(
                    "TypeError: object of type 'NoneType' has no len()",
                    "TypeError: no nextExpectedRanges to resume from",
                );
            }
            Some([]) => {
                return Step::fail(
                    "RuntimeError: No more bytes expected.",
                    "RuntimeError: No more bytes expected.",
                );
            }
            Some([first, ..]) => first.clone(),
        };
        self.next_range = Some(first.clone());
        self.server_range = Some(first);
        self.first_chunk()
    }
}

impl SdkModel for Python {
    fn profile(&self) -> &'static Profile {
        &PROFILE
    }

    fn begin(&mut self, now: SystemTime, session: &Value, file_size: u64) -> Step {
        self.task = Task::new(session, file_size, &PORT);
        if let Err(raised) = check_expiry(now, field(session, "expirationDateTime")) {
            return raised;
        }
        self.first_chunk()
    }

    fn on_answer(&mut self, now: SystemTime, answer: &Answer) -> Step {
        if std::mem::take(&mut self.resuming) {
            return self.resume_from(now, answer);
        }
        let Some(in_flight) = self.in_flight.take() else {
            return Step::fail("RuntimeError: no request in flight", "model misused");
        };
        let parsed = if in_flight == InFlight::Last {
            // `send_primitive_async(info, "bytes")`: only the status can raise.
            check_status(answer).map(|()| None)
        } else {
            parse_session(answer)
        };
        match (in_flight, parsed) {
            (InFlight::First | InFlight::Last, Err(raised)) => raised,
            (InFlight::First, Ok(session)) => {
                self.process_next = session;
                self.iterate(false)
            }
            (InFlight::Loop, result) => {
                // A failed PUT leaves `process_next` as it was: the next iteration
                // sends the same range again.
                if let Ok(session) = result {
                    self.process_next = session;
                }
                self.task.chunks -= 1;
                self.iterate(false)
            }
            (InFlight::Last, Ok(_)) => self.iterate(true),
        }
    }

    fn on_transport_error(&mut self, what: &str) -> Step {
        self.resuming = false;
        match self.in_flight.take() {
            Some(InFlight::Loop) => {
                self.task.chunks -= 1;
                self.iterate(false)
            }
            _ => Step::fail(
                format!("httpx.TransportError: {what}"),
                "httpx.TransportError",
            ),
        }
    }

    fn on_wait_over(&mut self) -> Step {
        Step::fail(
            "RuntimeError: the Python task never sleeps",
            "model misused",
        )
    }

    fn resume(&mut self) -> Step {
        if let Err(raised) = self.task.check_url(&PORT) {
            return raised;
        }
        self.in_flight = None;
        self.resuming = true;
        Step::Send(Request::get(&self.task.upload_url))
    }
}

/// `int((self.file_size / max_chunk_size) + 0.5)` (line 44), in floats as Python.
#[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
fn budget(size: u64) -> i64 {
    (size as f64 / CHUNK as f64 + 0.5) as i64
}

/// `upload_session_expired` (lines 67-86) on the session from createUploadSession,
/// whose `expiration_date_time` kiota parsed with `datetime.fromisoformat`.
fn check_expiry(now: SystemTime, expiry: Option<&Value>) -> Result<(), Step> {
    let text = expiry.and_then(Value::as_str).filter(|t| t.len() >= 10);
    let Some(then) = text.and_then(parse_graph_time) else {
        return Err(Step::fail(
            "ValueError: Expiry is None",
            "ValueError: Expiry is None",
        ));
    };
    let aware = text.is_some_and(|t| {
        let time = t.split_once('T').map_or("", |(_, time)| time);
        time.ends_with('Z') || time.ends_with('z') || time.contains(['+', '-'])
    });
    if !aware {
        return Err(Step::fail(
            "TypeError: can't subtract offset-naive and offset-aware datetimes",
            "TypeError on an expiry without offset",
        ));
    }
    if now >= then {
        return Err(Step::fail(
            "RuntimeError: The upload session is expired.",
            "RuntimeError: session expired",
        ));
    }
    Ok(())
}

/// kiota's `throw_failed_responses`: anything but 2xx and 304 raises `APIError`.
fn check_status(answer: &Answer) -> Result<(), Step> {
    if answer.is_success() || answer.status == 304 {
        Ok(())
    } else {
        Err(Step::fail(
            format!(
                "APIError: The server returned an unexpected status code and no error class \
                 is registered for this code {}",
                answer.status
            ),
            "APIError",
        ))
    }
}

/// `send_async(info, LargeFileUploadSession, {})`: `None` for 204, 304, an empty
/// body or no content type; camelCase fields only.
fn parse_session(answer: &Answer) -> Result<Option<Session>, Step> {
    check_status(answer)?;
    if matches!(answer.status, 204 | 304) || answer.body.is_empty() {
        return Ok(None);
    }
    let Some(media) = answer.media_type() else {
        return Ok(None);
    };
    if !media.trim().eq_ignore_ascii_case("application/json") {
        return Err(Step::fail(
            format!(
                "Exception: Content type {media} does not have a factory registered to be parsed"
            ),
            "Exception: not JSON",
        ));
    }
    let Some(json) = answer.json_body() else {
        return Err(Step::fail(
            "JSONDecodeError: the answer is not JSON",
            "JSONDecodeError",
        ));
    };
    Ok(Some(Session {
        ranges: next_expected_ranges(&json),
    }))
}

/// The session model's `next_expected_ranges` as kiota's JSON parser fills it:
/// camelCase only, `None` unless an array, and `None` for an item that is not a
/// string (`_get_str_value`), which the loop then splits as `str(None)`.
fn next_expected_ranges(json: &Value) -> Option<Vec<String>> {
    let items = field(json, "nextExpectedRanges")?.as_array()?;
    let text = |v: &Value| v.as_str().unwrap_or("None").to_owned();
    Some(items.iter().map(text).collect())
}

/// Python's `int(text)` in base 10: optional surrounding whitespace and sign,
/// digits with single underscores between them.
fn py_int(text: &str) -> Result<i128, String> {
    let invalid = || format!("invalid literal for int() with base 10: '{text}'");
    let t = text.trim();
    let (negative, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let well_formed = !digits.is_empty()
        && !digits.starts_with('_')
        && !digits.ends_with('_')
        && !digits.contains("__")
        && digits.bytes().all(|b| b.is_ascii_digit() || b == b'_');
    if !well_formed {
        return Err(invalid());
    }
    let value = digits
        .bytes()
        .filter(u8::is_ascii_digit)
        .fold(0_i128, |acc, d| {
            acc.saturating_mul(10).saturating_add(i128::from(d - b'0'))
        });
    Ok(if negative { -value } else { value })
}

/// The `ValueError` of `int()` on a piece of the server's `range`.
fn value_error(message: &str, range: &str) -> Step {
    let what = message.rsplit_once(": ").map_or("", |(_, v)| v);
    let form = if range.contains('-') {
        "range"
    } else {
        "bare range"
    };
    Step::fail(
        format!("ValueError: {message}"),
        format!("ValueError on {form} {} (int({what}))", quoted(range)),
    )
}

/// `BytesIO.read(n)`: a negative `n` reads to the end.
#[allow(clippy::unnecessary_wraps)] // a `ported::Read`: Guzzle's read can throw
fn read_signed(stream: &mut Stream, n: i128) -> Result<Body, Step> {
    Ok(if n < 0 {
        stream.read_rest()
    } else {
        stream.read(ported::offset(n))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sdk::test_support::{
        MIB, Script, bare, closed, created, done, open, pascal, progress,
    };

    /// Three chunks and a byte.
    const S: u64 = 15 * MIB + 1;
    /// The second slice of an `S`-byte file after the first was answered with the
    /// closed range after it: one byte more than the chunk.
    const SECOND_RANGE: &str = "bytes 5242880-10485760/15728641";
    const SECOND_BODY: Body = Body::file(5 * MIB, 5 * MIB + 1);

    /// An `S`-byte upload whose first slice was answered with the closed range
    /// after it.
    fn first_answered() -> Script<Python> {
        Script::new(Python::new(), S)
            .sends("bytes 0-5242879/15728641", Body::file(0, 5 * MIB))
            .answer(closed(5 * MIB, S))
    }

    #[test]
    fn closed_ranges_give_chunk_plus_one_slices_and_a_resend_after_completion() {
        let s = S;
        first_answered()
            .sends(SECOND_RANGE, SECOND_BODY)
            .answer(closed(10 * MIB + 1, s))
            .sends(
                "bytes 10485761-15728640/15728641",
                Body::file(10 * MIB + 1, 5 * MIB),
            )
            .answer(done())
            // The budget (3) is not spent yet: the last range goes again.
            .sends(
                "bytes 10485761-15728640/15728641",
                Body::file(10 * MIB + 1, 5 * MIB),
            )
            .answer(done())
            .ends_with_location();
    }

    #[test]
    fn a_file_under_one_chunk_is_resent_with_an_empty_body() {
        let s = 3_000_000;
        Script::new(Python::new(), s)
            .sends("bytes 0-2999999/3000000", Body::file(0, s))
            .answer(done())
            .sends("bytes 0-2999999/3000000", Body::file(s, 0))
            .answer(done())
            .ends_with_location();
    }

    #[test]
    fn open_and_bare_ranges_raise_value_error_at_the_last_chunk() {
        for form in [open(5 * MIB), bare(5 * MIB)] {
            Script::new(Python::new(), 15 * MIB + 1)
                .sends("bytes 0-5242879/15728641", Body::file(0, 5 * MIB))
                .answer(form)
                .fails_with("ValueError: invalid literal for int() with base 10: ''");
        }
    }

    #[test]
    fn pascal_case_answers_stop_new_slices_and_resend_the_first_range_with_later_bytes() {
        let s = 15 * MIB + 1;
        Script::new(Python::new(), s)
            .sends("bytes 0-5242879/15728641", Body::file(0, 5 * MIB))
            .answer(pascal("5242880-15728640"))
            .sends("bytes 0-5242879/15728641", Body::file(5 * MIB, 5 * MIB))
            .answer(done())
            .ends_with_location();
    }

    #[test]
    fn errors_of_the_first_put_propagate_and_loop_errors_resend_the_same_range() {
        Script::new(Python::new(), S)
            .sends("bytes 0-5242879/15728641", Body::file(0, 5 * MIB))
            .answer(Answer::new(413, Vec::new(), Vec::new()))
            .fails_with("APIError: The server returned an unexpected status code and no error class is registered for this code 413");
        first_answered()
            .sends(SECOND_RANGE, SECOND_BODY)
            .answer(Answer::new(500, Vec::new(), Vec::new()))
            .sends(SECOND_RANGE, SECOND_BODY)
            .transport_error()
            .sends(SECOND_RANGE, SECOND_BODY)
            .transport_error()
            // The budget is spent: `last_chunk` sends the range again, and its
            // error propagates.
            .sends(SECOND_RANGE, SECOND_BODY)
            .transport_error()
            .fails_with("httpx.TransportError");
    }

    #[test]
    fn a_missing_or_naive_expiry_raises_before_any_request() {
        let mut p = Python::new();
        let no_expiry = Answer::json(201, &serde_json::json!({"uploadUrl": "https://h/u"}));
        let step = p.start(SystemTime::UNIX_EPOCH, &no_expiry, 3_000_000);
        assert!(matches!(step, Step::Failed(f) if f.exception == "ValueError: Expiry is None"));
        let naive = Answer::json(
            201,
            &serde_json::json!({"uploadUrl": "https://h/u", "expirationDateTime": "2099-01-01T00:00:00"}),
        );
        let step = Python::new().start(SystemTime::UNIX_EPOCH, &naive, 3_000_000);
        assert!(matches!(step, Step::Failed(f) if f.exception.starts_with("TypeError")));
    }

    #[test]
    fn int_reads_as_python_does() {
        assert_eq!(py_int(" 12 "), Ok(12));
        assert_eq!(py_int("1_000"), Ok(1000));
        assert!(py_int("").is_err() && py_int("1__0").is_err() && py_int("0x1").is_err());
    }

    #[test]
    fn the_application_resumes_a_new_task_from_the_status_it_reads() {
        let s = 15 * MIB;
        // The first PUT is outside the loop's `try`: its error propagates.
        let lost_first = || {
            Script::with_session(Python::new(), s, &created(&["0-15728639"]))
                .transport_error()
                .resumes("httpx.TransportError")
        };
        // `self.next_range` is the range as sent: a closed one gives C + 1 bytes.
        lost_first().answer(progress("5242880-15728639")).sends(
            "bytes 5242880-10485760/15728640",
            Body::file(5 * MIB, 5 * MIB + 1),
        );
        for (status, raised) in [
            (
                open(5 * MIB),
                "ValueError: invalid literal for int() with base 10: ''",
            ),
            (
                Answer::json(
                    200,
                    &serde_json::json!({"expirationDateTime": "2099-01-01T00:00:00Z"}),
                ),
                "TypeError: object of type 'NoneType' has no len()",
            ),
            (
                Answer::json(
                    200,
                    &serde_json::json!({"expirationDateTime": "2099-01-01T00:00:00Z", "nextExpectedRanges": []}),
                ),
                "RuntimeError: No more bytes expected.",
            ),
        ] {
            let f = lost_first().answer(status).fails_with(raised);
            assert_eq!(f.exception, raised);
        }
    }
}
