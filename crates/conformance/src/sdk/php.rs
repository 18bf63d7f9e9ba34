//! PHP: msgraph-sdk-php-core's `LargeFileUploadTask::upload()`
//! (`src/Tasks/LargeFileUploadTask.php`) over kiota-http-guzzle-php and
//! msgraph-sdk-php-core's `GraphRetryHandler`, at the profile's commit.
//!
//! - The chunk is 4 MiB (`int $maxChunkSize = 4 * 1024 * 1024`), not a multiple of
//!   320 KiB.
//! - The same range logic as Python's, with PHP's forgiving `intval`: ranges come
//!   from `nextExpectedRanges[0]` of each answer with `-` appended; `"a-"` and a bare
//!   `"a"` read as "from a, one chunk" (`intval('') === 0` takes the `$end === 0`
//!   branch), and a closed `"a-b"` sends one byte more than the chunk
//!   (`min($end, $this->maxChunkSize + $start)`).
//! - The iteration budget is `ceil(S / C)`, each iteration waiting the previous
//!   request; an answer whose session has no ranges (absent, empty, PascalCase, or
//!   no body) ends the upload, reported as success. A request made in the last
//!   iteration is never waited for: the model does not send it.
//! - Errors propagate (`wait()` throws); `GraphRetryHandler` resends 429/503/504.
//!   Expiry is checked at the start of `upload()`.
//! - `resume()` takes the session object it is given, never asking the server;
//!   [`SdkModel::resume`] is the application's way in: its own `GET uploadUrl`, the
//!   answer read into a `LargeFileUploadSession`, a new task, `resume()`.

use std::time::SystemTime;

use serde_json::Value;
use upsession_core::time::parse_graph_time;

use super::ported::{self, Port, Task};
use super::retry::{Middleware, Retry};
use super::{Answer, Body, Profile, Request, SdkModel, Step, Stream, field, strings};

static PROFILE: Profile = Profile {
    name: "PHP",
    package: "microsoft/microsoft-graph-core 2.3.1",
    repo: "microsoftgraph/msgraph-sdk-php-core",
    path: "src/Tasks/LargeFileUploadTask.php",
    commit: "fd8cc94968d9bfe7f7012a6deda01bfc3f96ac20",
    chunk: CHUNK,
    chunk_source: "default `$maxChunkSize`",
    client_error: "ODataError",
    summary: "4 MiB chunks (not a 320 KiB multiple); reads `nextExpectedRanges[0]` of each answer \
              with `intval` (every form works); closed ranges give chunk + 1 B slices; camelCase \
              only (PascalCase reads as complete); retries 429/503/504",
    live_issues: &[],
};

/// 4 MiB: `int $maxChunkSize = 4 * 1024 * 1024`.
const CHUNK: u64 = 4 * 1024 * 1024;

/// Where the port differs from Python's task.
static PORT: Port = Port {
    chunk: CHUNK,
    budget,
    read,
    runtime_error: "RuntimeException",
    unreadable: [
        "RuntimeException: The was a problem parsing the response.",
        "RuntimeException: unreadable status answer",
    ],
};

/// The PHP SDK's upload task.
#[derive(Clone, Debug, Default)]
pub struct Php {
    task: Task,
    /// `$this->nextRange` (starts as `false`, coerced to `""`).
    next_range: String,
    /// A request is in flight.
    in_flight: bool,
    retry: Middleware,
    /// The application's `GET uploadUrl` is in flight: it is about to resume.
    resuming: bool,
}

impl Php {
    /// A task not yet started.
    pub fn new() -> Self {
        Self::default()
    }

    /// `nextChunk($file, $rangeStart, $rangeEnd)`: the uploadUrl checked first,
    /// then Python's range logic, each half read with `intval`, which never fails.
    fn next_chunk(&mut self, range_start: u64, range_end: u64) -> Result<Request, Step> {
        self.task.check_url(&PORT)?;
        if php_empty(&self.next_range) {
            self.next_range = format!("{range_start}-{range_end}");
        }
        let parts: Vec<&str> = self.next_range.split('-').collect();
        let start = intval(parts[0]);
        let end = parts.get(1).map_or(0, |p| intval(p));
        self.task.chunk(&PORT, start, end)
    }

    /// `upload()` up to its first `nextChunk`: `rewind()`, then the range
    /// `$this->nextRange` names, or the first chunk when it is empty.
    fn first_chunk(&mut self) -> Step {
        let first_end = self.task.rewind(&PORT);
        match self.next_chunk(0, first_end) {
            Ok(request) => self.send(request),
            Err(raised) => raised,
        }
    }

    /// The application's resume on the answer to its `GET uploadUrl`: the session
    /// as kiota's JSON parser builds it, with the uploadUrl kept; a new task on the
    /// same stream (the constructor: a fresh budget, `$nextRange` empty); its
    /// `resume()`: the expiry, `nextExpectedRanges[0]` as `$this->nextRange`,
    /// `upload()`, which checks the expiry again.
    fn resume_from(&mut self, now: SystemTime, answer: &Answer) -> Step {
        let json = match self.task.renew(answer, &PORT) {
            Ok(json) => json,
            Err(raised) => return raised,
        };
        if let Err(raised) = check_expiry(now, &json) {
            return raised;
        }
        // `checkValueExists`: a PascalCase key is in `additionalData`, looked at
        // first when set (`isset`); else the getter, `[]` by default.
        let ranges = field(&json, "NextExpectedRanges")
            .filter(|v| !v.is_null())
            .or_else(|| field(&json, "nextExpectedRanges"))
            .and_then(strings)
            .unwrap_or_default();
        let Some(first) = ranges.into_iter().next() else {
            return Step::fail(
                "RuntimeException: No more bytes expected.",
                "RuntimeException: No more bytes expected.",
            );
        };
        self.next_range = first;
        self.first_chunk()
    }

    fn send(&mut self, request: Request) -> Step {
        self.in_flight = true;
        self.retry.send(request)
    }

    /// One iteration of `while ($this->chunks > 0)` on the session an answer was
    /// parsed into (`None`: null).
    fn iterate(&mut self, ranges: Option<Vec<String>>) -> Step {
        // `if (empty($nextRange)) return $lfuSession;`: every later iteration
        // re-waits the same resolved promise and sends nothing.
        let Some(first) = ranges.and_then(|r| r.into_iter().next()) else {
            return Step::Done { location: None };
        };
        self.next_range = format!("{first}-");
        let request = match self.next_chunk(0, 0) {
            Ok(request) => request,
            Err(raised) => return raised,
        };
        self.task.chunks -= 1;
        if self.task.chunks > 0 {
            self.send(request)
        } else {
            // Made in the last iteration, never waited for: `upload()` returns the
            // previous promise.
            Step::Done { location: None }
        }
    }
}

impl SdkModel for Php {
    fn profile(&self) -> &'static Profile {
        &PROFILE
    }

    fn begin(&mut self, now: SystemTime, session: &Value, file_size: u64) -> Step {
        self.task = Task::new(session, file_size, &PORT);
        if let Err(raised) = check_expiry(now, session) {
            return raised;
        }
        self.first_chunk()
    }

    fn on_answer(&mut self, now: SystemTime, answer: &Answer) -> Step {
        if let Retry::After(delay) = self.retry.judge(now, answer) {
            return Step::Wait(delay);
        }
        if !std::mem::take(&mut self.in_flight) {
            return Step::fail("LogicException: nothing in flight", "model misused");
        }
        if std::mem::take(&mut self.resuming) {
            return self.resume_from(now, answer);
        }
        match parse_session(answer) {
            Ok(ranges) => self.iterate(ranges),
            Err(raised) => raised,
        }
    }

    fn on_transport_error(&mut self, what: &str) -> Step {
        self.resuming = false;
        Step::fail(
            format!("GuzzleHttp\\Exception\\ConnectException: {what}"),
            "ConnectException",
        )
    }

    fn on_wait_over(&mut self) -> Step {
        self.retry
            .resend()
            .unwrap_or_else(|| Step::fail("LogicException: no wait", "model misused"))
    }

    fn resume(&mut self) -> Step {
        if let Err(raised) = self.task.check_url(&PORT) {
            return raised;
        }
        // The application's GET, through the same Guzzle stack as the task.
        self.resuming = true;
        let request = Request::get(&self.task.upload_url);
        self.send(request)
    }
}

/// `$this->chunks = (int)ceil($this->fileSize / $maxChunkSize)`.
fn budget(size: u64) -> i64 {
    i64::try_from(size.div_ceil(CHUNK)).unwrap_or(i64::MAX)
}

/// `uploadSessionExpired()` on the session from createUploadSession: camelCase
/// `expirationDateTime` through the generated model, or a PascalCase key found in
/// `additionalData` first (a string, on which `->format()` fails).
fn check_expiry(now: SystemTime, json: &Value) -> Result<(), Step> {
    if field(json, "ExpirationDateTime").is_some_and(|v| !v.is_null()) {
        return Err(Step::fail(
            "Error: Call to a member function format() on string",
            "Error: PascalCase ExpirationDateTime on creation",
        ));
    }
    let Some(then) = field(json, "expirationDateTime")
        .and_then(Value::as_str)
        .and_then(parse_graph_time)
    else {
        return Err(Step::fail(
            "InvalidArgumentException: The upload session does not contain a valid expiry date.",
            "InvalidArgumentException: no expiry",
        ));
    };
    // `$now->diff($then)->invert`, to the second (both go through ATOM).
    let secs = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    };
    if secs(then) < secs(now) {
        return Err(Step::fail(
            "RuntimeException: The upload session is expired.",
            "RuntimeException: session expired",
        ));
    }
    Ok(())
}

/// `sendAsync(…, LargeFileUploadSession)`: `Ok(None)` for null, else the
/// session's ranges (`[]` by default; camelCase only).
fn parse_session(answer: &Answer) -> Result<Option<Vec<String>>, Step> {
    if !(200..400).contains(&answer.status) {
        let body = String::from_utf8_lossy(&answer.body);
        return Err(Step::fail(
            format!(
                "ApiException: the server returned an unexpected status code and no error class \
                 is registered for this code {} {body}.",
                answer.status
            ),
            "ApiException",
        ));
    }
    if answer.status == 204 {
        return Ok(None);
    }
    let Some(media) = answer
        .header("content-type")
        .map(|v| v.split(';').next().unwrap_or(v))
    else {
        return Ok(None);
    };
    if !media.eq_ignore_ascii_case("application/json") {
        return Err(Step::fail(
            "InvalidArgumentException: expected a application/json content type.",
            "InvalidArgumentException: not JSON",
        ));
    }
    if answer.body.is_empty() {
        return Err(Step::fail(
            "InvalidArgumentException: $rawResponse cannot be empty.",
            "InvalidArgumentException on an empty JSON body",
        ));
    }
    let Some(json) = answer.json_body() else {
        return Err(Step::fail(
            "RuntimeException: The was a problem parsing the response.",
            "RuntimeException: unreadable JSON",
        ));
    };
    let ranges = field(&json, "nextExpectedRanges")
        .and_then(strings)
        .unwrap_or_default();
    Ok(Some(ranges))
}

/// PHP's `empty()` on a string: `""` and `"0"`.
fn php_empty(s: &str) -> bool {
    s.is_empty() || s == "0"
}

/// PHP's `intval($string)`: leading whitespace, a sign, the digits that follow; 0
/// without any.
fn intval(text: &str) -> i128 {
    let t = text.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let (negative, rest) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let value = rest
        .bytes()
        .take_while(u8::is_ascii_digit)
        .fold(0_i128, |acc, d| {
            (acc * 10 + i128::from(d - b'0')).min(i128::from(i64::MAX))
        });
    if negative { -value } else { value }
}

/// Guzzle's `Stream::read($length)`.
fn read(stream: &mut Stream, length: i128) -> Result<Body, Step> {
    if length < 0 {
        return Err(Step::fail(
            "RuntimeException: Length parameter cannot be negative",
            "RuntimeException: negative read length",
        ));
    }
    Ok(stream.read(ported::offset(length)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sdk::test_support::{
        EXPIRY, MIB, Script, URL, bare, closed, created, done, error, open, pascal, progress,
    };

    #[test]
    fn closed_ranges_give_chunk_plus_one_slices() {
        let s = 15 * MIB + 1;
        Script::new(Php::new(), s)
            .sends("bytes 0-4194303/15728641", Body::file(0, 4 * MIB))
            .answer(closed(4 * MIB, s))
            .sends(
                "bytes 4194304-8388608/15728641",
                Body::file(4 * MIB, 4 * MIB + 1),
            )
            .answer(closed(8 * MIB + 1, s))
            .sends(
                "bytes 8388609-12582913/15728641",
                Body::file(8 * MIB + 1, 4 * MIB + 1),
            )
            .answer(closed(12 * MIB + 2, s))
            .sends(
                "bytes 12582914-15728640/15728641",
                Body::file(12 * MIB + 2, 3 * MIB - 1),
            )
            .answer(done())
            .ends();
    }

    #[test]
    fn open_and_bare_ranges_send_one_chunk_from_their_start() {
        for second in [open(4 * MIB), bare(4 * MIB)] {
            Script::new(Php::new(), 6 * MIB)
                .sends("bytes 0-4194303/6291456", Body::file(0, 4 * MIB))
                .answer(second)
                .sends(
                    "bytes 4194304-6291455/6291456",
                    Body::file(4 * MIB, 2 * MIB),
                )
                .answer(done())
                .ends();
        }
    }

    #[test]
    fn pascal_case_answers_read_as_complete() {
        assert_eq!(
            Script::new(Php::new(), 15 * MIB + 1)
                .sends("bytes 0-4194303/15728641", Body::file(0, 4 * MIB))
                .answer(pascal("4194304-15728640"))
                .ends(),
            None
        );
    }

    #[test]
    fn the_request_of_the_last_iteration_is_never_sent() {
        // Budget 2 (ceil(5 MiB / 4 MiB)); the server asks from byte 1 each time.
        Script::new(Php::new(), 5 * MIB)
            .sends("bytes 0-4194303/5242880", Body::file(0, 4 * MIB))
            .answer(closed(1, 5 * MIB))
            .sends("bytes 1-4194305/5242880", Body::file(1, 4 * MIB + 1))
            .answer(closed(1, 5 * MIB))
            .ends();
    }

    #[test]
    fn errors_throw() {
        Script::new(Php::new(), 15 * MIB + 1)
            .sends("bytes 0-4194303/15728641", Body::file(0, 4 * MIB))
            .answer(error(400, "invalidRange"))
            .fails_with("ApiException: the server returned an unexpected status code");
    }

    #[test]
    fn a_missing_or_pascal_case_expiry_throws_before_any_request() {
        let missing = Answer::json(201, &serde_json::json!({"uploadUrl": URL}));
        Script::with_session(Php::new(), 3_000_000, &missing).fails_with(
            "InvalidArgumentException: The upload session does not contain a valid expiry date.",
        );
        let pascal = Answer::json(
            201,
            &serde_json::json!({"uploadUrl": URL, "ExpirationDateTime": EXPIRY}),
        );
        Script::with_session(Php::new(), 3_000_000, &pascal)
            .fails_with("Error: Call to a member function format() on string");
    }

    #[test]
    fn intval_is_forgiving() {
        assert_eq!(intval(" 12abc"), 12);
        assert_eq!(intval(""), 0);
        assert_eq!(intval("x"), 0);
    }

    #[test]
    fn the_application_resumes_a_new_task_from_the_status_it_reads() {
        let s = 15 * MIB;
        let failed = || {
            Script::with_session(Php::new(), s, &created(&["0-15728639"]))
                .answer(closed(4 * MIB, s))
                .transport_error()
                .resumes("GuzzleHttp\\Exception\\ConnectException")
        };
        // `$this->nextRange` is the range as sent: a closed one gives C + 1 bytes.
        failed().answer(progress("4194304-15728639")).sends(
            "bytes 4194304-8388608/15728640",
            Body::file(4 * MIB, 4 * MIB + 1),
        );
        let none_left = Answer::json(
            200,
            &serde_json::json!({"expirationDateTime": EXPIRY, "nextExpectedRanges": []}),
        );
        let raised = failed().answer(none_left).fails_with("RuntimeException");
        assert_eq!(
            raised.exception,
            "RuntimeException: No more bytes expected."
        );
    }
}
