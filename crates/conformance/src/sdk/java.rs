//! Java: msgraph-sdk-java-core's `LargeFileUploadTask.upload()`
//! (`src/main/java/com/microsoft/graph/core/tasks/LargeFileUploadTask.java`), its
//! `UploadResponseHandler` and kiota-java's retry handler, at the profile's commit.
//! `T` is `FileAttachment`, as in Graph's "upload large attachment" sample.
//!
//! - Slices are planned from **all** ranges of the session, per pass
//!   (`getRangesRemaining`): Java's `split("-")` drops trailing empty strings, so
//!   `"a-"` and a bare `"a"` both mean "to the end", and `"a-b"` is read as is.
//! - The off-by-one: `while (currentRangeBegin < currentEnd)` skips a range of
//!   exactly one byte, so a file of `k × 5 MiB + 1` bytes never gets its last byte;
//!   each pass plans nothing, and after three passes the task throws
//!   `CancellationException` (msgraph-sdk-java#2581).
//! - Slices are read from the stream in order, never seeking (`chunkInputStream`):
//!   a second pass reads on from where the first stopped (msgraph-sdk-java#2503),
//!   and a read past the end leaves the rest of the buffer zero.
//! - Every HTTP error on a slice is thrown at once (the handler always says
//!   "generalException", which `handleApiException` records and rethrows).
//! - Complete: a 201 (with `Location` when the body is empty), or a 200/202 whose
//!   session has no or empty `nextExpectedRanges`, read in camelCase only: a
//!   PascalCase answer counts as complete after the first slice.
//! - After a pass: `GET` the session, sleep 2 s, then 8 s; retry handler for
//!   429/503/504 (the last answer is passed on when retries run out).
//! - Expiry is checked only by `resume()` and `deleteSession()` (a missing one counts
//!   as expired there), so `upload()` never looks at it.
//! - A transport error is an `IOException`, which kiota-java's `OkHttpRequestAdapter`
//!   rethrows as a `RuntimeException` (not an `ApiException`): it leaves `upload()`
//!   at once. `resume()` is `updateSessionStatus()` (`GET`), the expiry, `upload()`;
//!   as the stream is not repositioned, the slices it plans carry the bytes after
//!   the ones last read (msgraph-sdk-java#2503). [`Java::repositioning_on_resume`]
//!   resumes as that issue suggests instead.

use std::time::SystemTime;

use serde_json::Value;

use super::passes::{self, Pass, Tries, UploadResult};
use super::retry::{Middleware, Retry};
use super::{Answer, Profile, Request, SdkFailure, SdkModel, Step, Stream, field, quoted, strings};

/// 5 MiB: `DEFAULT_MAX_SLICE_SIZE = (long) 5*1024*1024`.
const CHUNK: i64 = 5 * 1024 * 1024;
/// The issue of the off-by-one.
const ONE_BYTE_ISSUE: &str = "microsoftgraph/msgraph-sdk-java#2581";

static PROFILE: Profile = Profile {
    name: "Java",
    package: "microsoft-graph-core 3.6.5",
    repo: "microsoftgraph/msgraph-sdk-java-core",
    path: "src/main/java/com/microsoft/graph/core/tasks/LargeFileUploadTask.java",
    commit: "4a27304e182aba0cf3fcb55d269cde610d34bb5a",
    chunk: 5 * 1024 * 1024,
    chunk_source: "default `maxSliceSize`",
    client_error: "ODataError",
    summary: "Plans slices from all of the session's ranges; `begin < end` never sends a \
              one-byte last slice; reads its stream in order without seeking; camelCase only \
              (PascalCase reads as complete); errors thrown at once; retries 429/503/504",
    live_issues: &[
        (
            ONE_BYTE_ISSUE,
            "a file one byte longer than a multiple of the slice never completes",
        ),
        (
            "microsoftgraph/msgraph-sdk-java#2503",
            "a second pass or a resume sends the wrong bytes: the stream is never repositioned",
        ),
    ],
};

/// What is in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum InFlight {
    /// A slice.
    Slice,
    /// `updateSessionStatus`'s `GET`, after a pass.
    Status,
    /// `updateSessionStatus`'s `GET`, as the application resumes.
    Resume,
}

/// The Java SDK's upload task.
#[derive(Clone, Debug, Default)]
pub struct Java {
    url: String,
    size: i64,
    stream: Stream,
    ranges: Vec<(i64, i64)>,
    /// The pass's slices (`getUploadSliceRequests`), as far as they were sent.
    pass: Pass,
    /// A one-byte range was skipped by `begin < end`.
    dropped_a_byte: bool,
    tries: Tries,
    in_flight: Option<InFlight>,
    retry: Middleware,
    /// The application resumes as msgraph-sdk-java#2503 suggests.
    reposition: bool,
}

impl Java {
    /// A task not yet started.
    pub fn new() -> Self {
        Self::default()
    }

    upsession_core::setters! {
        /// The same task, whose application resumes as msgraph-sdk-java#2503 suggests,
        /// not with `resume()`: it calls `updateSessionStatus()`, moves the stream it gave
        /// the task to the first byte the session expects (say, `FileChannel.position`),
        /// and calls `upload()`. `upload()` checks no expiry.
        repositioning_on_resume() => reposition = true;
    }

    /// The application's resume after its `GET`: the session's ranges, then either
    /// `resume()`'s expiry check (a missing expiry counts as expired) or the
    /// repositioned stream, then `upload()` with its tries counted afresh.
    fn on_resume_answer(&mut self, now: SystemTime, answer: &Answer) -> Step {
        let expiry = match self.update_session(answer) {
            Ok(expiry) => expiry,
            Err(raised) => return raised,
        };
        if self.reposition {
            let first = self.ranges.first().map_or(0, |r| r.0);
            self.stream.seek(u64::try_from(first).unwrap_or(0));
        } else {
            let unparsable = SdkFailure::new(
                "DateTimeParseException: expirationDateTime could not be parsed",
                "DateTimeParseException on expirationDateTime",
            );
            if let Err(raised) = passes::resume_expiry(now, expiry.as_deref(), unparsable) {
                return raised;
            }
        }
        self.tries.restart();
        self.begin_pass()
    }

    /// `updateSessionStatus()`'s answer: the session's ranges become the ranges
    /// remaining (`getRangesRemaining` on a null `result.uploadSession` throws); its
    /// expiry as sent, for `resume()`.
    fn update_session(&mut self, answer: &Answer) -> Result<Option<String>, Step> {
        let result = handle_response(answer)?;
        let Some(ranges) = result.session else {
            return Err(Step::fail(
                "NullPointerException: the status answer has no nextExpectedRanges",
                "NullPointerException (no nextExpectedRanges)",
            ));
        };
        self.ranges = ranges_remaining(Some(&ranges), self.size)?;
        Ok(result.expiry)
    }

    /// `getUploadSliceRequests()`: `begin < end` stops one byte short of every
    /// range one byte longer than a multiple of the slice.
    fn begin_pass(&mut self) -> Step {
        let one_byte_short = |&(begin, end): &(i64, i64)| {
            end.checked_sub(begin)
                .is_some_and(|d| d >= 0 && d % CHUNK == 0)
        };
        self.dropped_a_byte |= self.ranges.iter().any(one_byte_short);
        self.pass = Pass::default();
        self.next_slice()
    }

    fn next_slice(&mut self) -> Step {
        let Some((begin, end)) = self
            .pass
            .next(&self.ranges, CHUNK, |begin, end| begin < end)
        else {
            self.in_flight = Some(InFlight::Status);
            return self.retry.send(Request::get(&self.url));
        };
        // `chunkInputStream(uploadStream, rangeLength)`: the next bytes of the
        // stream, whatever the range; a `new byte[length]` keeps zeros where the
        // stream ran dry.
        let length = u64::try_from(end - begin + 1).unwrap_or(0);
        let mut body = self.stream.read(length);
        body.zero_fill = length - body.len;
        self.in_flight = Some(InFlight::Slice);
        let range = format!("bytes {begin}-{end}/{}", self.size);
        self.retry.send(Request::put(&self.url, range, body))
    }

    fn on_status_answer(&mut self, answer: &Answer) -> Step {
        if let Err(raised) = self.update_session(answer) {
            return raised;
        }
        if let Some(sleep) = self.tries.next_pass() {
            return sleep;
        }
        let failure = Step::fail(
            "CancellationException: The upload task was retried the maximum number of times \
             without success and has been cancelled.",
            if self.dropped_a_byte {
                "the one-byte last slice is never sent (`begin < end`); CancellationException"
            } else {
                "CancellationException (retried the maximum number of times)"
            },
        );
        match failure {
            Step::Failed(f) if self.dropped_a_byte => Step::Failed(f.with_issue(ONE_BYTE_ISSUE)),
            other => other,
        }
    }
}

impl SdkModel for Java {
    fn profile(&self) -> &'static Profile {
        &PROFILE
    }

    fn begin(&mut self, _now: SystemTime, session: &Value, file_size: u64) -> Step {
        self.size = i64::try_from(file_size).unwrap_or(i64::MAX);
        self.stream = Stream::new(file_size);
        let Some(url) = field(session, "uploadUrl").and_then(Value::as_str) else {
            return Step::fail(
                "NullPointerException: uploadUrl is null",
                "NullPointerException: no uploadUrl",
            );
        };
        url.clone_into(&mut self.url);
        let ranges = field(session, "nextExpectedRanges").and_then(strings);
        match ranges_remaining(ranges.as_ref(), self.size) {
            Ok(r) => self.ranges = r,
            Err(raised) => return raised,
        }
        self.begin_pass()
    }

    fn on_answer(&mut self, now: SystemTime, answer: &Answer) -> Step {
        if let Retry::After(delay) = self.retry.judge(now, answer) {
            return Step::Wait(delay);
        }
        match self.in_flight.take() {
            Some(InFlight::Slice) => match handle_response(answer) {
                Ok(result) if result.succeeded() => Step::Done {
                    location: result.location,
                },
                Ok(_) => self.next_slice(),
                Err(raised) => raised,
            },
            Some(InFlight::Status) => self.on_status_answer(answer),
            Some(InFlight::Resume) => self.on_resume_answer(now, answer),
            None => Step::fail("IllegalStateException: nothing in flight", "model misused"),
        }
    }

    fn on_transport_error(&mut self, what: &str) -> Step {
        Step::fail(
            format!("RuntimeException: java.io.IOException: {what}"),
            "RuntimeException (IOException)",
        )
    }

    fn on_wait_over(&mut self) -> Step {
        match self.retry.resend() {
            Some(resend) => resend,
            None if self.tries.wake() => self.begin_pass(),
            None => Step::fail("IllegalStateException: no wait", "model misused"),
        }
    }

    fn resume(&mut self) -> Step {
        if self.url.is_empty() {
            return Step::fail(
                "IllegalArgumentException: sessionUrl cannot be null or empty",
                "IllegalArgumentException: no uploadUrl",
            );
        }
        self.in_flight = Some(InFlight::Resume);
        self.retry.send(Request::get(&self.url))
    }
}

/// `getRangesRemaining`: Java's `split("-")` (trailing empty strings removed),
/// `Long.valueOf` on the start, `Long.parseLong` on an end if there are exactly two
/// parts, else the end of the file.
fn ranges_remaining(ranges: Option<&Vec<String>>, size: i64) -> Result<Vec<(i64, i64)>, Step> {
    let Some(ranges) = ranges else {
        return Err(Step::fail(
            "NullPointerException: nextExpectedRanges is null",
            "NullPointerException (no nextExpectedRanges)",
        ));
    };
    let mut out = Vec::with_capacity(ranges.len());
    for range in ranges {
        let mut parts: Vec<&str> = range.split('-').collect();
        while parts.last() == Some(&"") {
            parts.pop();
        }
        let Some(first) = parts.first() else {
            return Err(Step::fail(
                "ArrayIndexOutOfBoundsException: Index 0 out of bounds for length 0",
                format!("ArrayIndexOutOfBoundsException on range {}", quoted(range)),
            ));
        };
        let begin = parse_long(first, range)?;
        let end = if parts.len() == 2 {
            parse_long(parts[1], range)?
        } else {
            size - 1
        };
        out.push((begin, end));
    }
    Ok(out)
}

/// `Long.parseLong`: an optional sign and decimal digits, nothing else.
fn parse_long(text: &str, range: &str) -> Result<i64, Step> {
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    let ok = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
    ok.then(|| text.parse().ok()).flatten().ok_or_else(|| {
        Step::fail(
            format!("NumberFormatException: For input string: \"{text}\""),
            format!("NumberFormatException on range {}", quoted(range)),
        )
    })
}

/// `UploadResponseHandler.handleResponse`; every failure propagates from the task.
/// An ongoing session's ranges are never empty here: empty ones read as complete.
fn handle_response(answer: &Answer) -> Result<UploadResult, Step> {
    let mut result = UploadResult::default();
    let empty_length = answer.header("content-length").map(str::trim) == Some("0");
    // The "no body" check comes before the status check.
    if answer.media_type().is_none() || empty_length {
        if answer.status == 201
            && let Some(location) = answer.header("location").filter(|l| !l.is_empty())
        {
            result.location = Some(location.to_owned());
            return Ok(result);
        }
        return Err(Step::fail(
            format!(
                "ApiException: No Response Received for upload. (status {})",
                answer.status
            ),
            "ApiException: No Response Received for upload.",
        ));
    }
    if !answer.is_success() {
        return Err(Step::fail(
            format!("ApiException: generalException (status {})", answer.status),
            "ApiException generalException",
        ));
    }
    let media = answer.media_type().unwrap_or_default();
    if !media.eq_ignore_ascii_case("application/json") {
        return Err(Step::fail(
            format!(
                "IllegalArgumentException: content type {media} does not have a factory registered to be parsed"
            ),
            "IllegalArgumentException: not JSON",
        ));
    }
    // Gson reads an empty body as JsonNull: an object with nothing set.
    let json = if answer.body.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        answer.json_body().ok_or_else(|| {
            Step::fail("JsonSyntaxException: malformed JSON", "JsonSyntaxException")
        })?
    };
    if answer.status == 201 {
        result.item = true;
        return Ok(result);
    }
    match field(&json, "nextExpectedRanges").and_then(strings) {
        Some(ranges) if !ranges.is_empty() => {
            result.session = Some(ranges);
            result.expiry = field(&json, "expirationDateTime")
                .and_then(Value::as_str)
                .map(str::to_owned);
        }
        _ => result.item = true,
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::sdk::Body;
    use crate::sdk::test_support::{
        MIB, Script, closed, created, done, error, open, pascal, progress,
    };

    #[test]
    fn a_file_one_byte_over_three_slices_never_sends_its_last_byte() {
        let s = 15 * MIB + 1;
        let f = Script::new(Java::new(), s)
            .sends("bytes 0-5242879/15728641", Body::file(0, 5 * MIB))
            .answer(closed(5 * MIB, s))
            .sends(
                "bytes 5242880-10485759/15728641",
                Body::file(5 * MIB, 5 * MIB),
            )
            .answer(closed(10 * MIB, s))
            .sends(
                "bytes 10485760-15728639/15728641",
                Body::file(10 * MIB, 5 * MIB),
            )
            .answer(closed(15 * MIB, s))
            .gets()
            .answer(progress("15728640-15728640"))
            .waits(Duration::from_secs(2))
            .gets()
            .answer(open(15 * MIB))
            .waits(Duration::from_secs(8))
            .gets()
            .answer(progress("15728640"))
            .fails_with("CancellationException");
        assert_eq!(f.issue, Some(ONE_BYTE_ISSUE));
    }

    #[test]
    fn a_second_pass_reads_on_from_the_stream_and_pads_with_zeros() {
        let s = 6 * MIB;
        Script::new(Java::new(), s)
            .sends("bytes 0-5242879/6291456", Body::file(0, 5 * MIB))
            .answer(closed(5 * MIB, s))
            .sends("bytes 5242880-6291455/6291456", Body::file(5 * MIB, MIB))
            .answer(closed(5 * MIB, s))
            .gets()
            .answer(closed(5 * MIB, s))
            .waits(Duration::from_secs(2))
            .sends(
                "bytes 5242880-6291455/6291456",
                Body {
                    offset: s,
                    len: 0,
                    zero_fill: MIB,
                },
            )
            .answer(done())
            .ends_with_location();
    }

    #[test]
    fn pascal_case_reads_as_complete_and_errors_throw_at_once() {
        let s = 15 * MIB + 1;
        assert_eq!(
            Script::new(Java::new(), s)
                .sends("bytes 0-5242879/15728641", Body::file(0, 5 * MIB))
                .answer(pascal("5242880-15728640"))
                .ends(),
            None
        );
        Script::new(Java::new(), s)
            .sends("bytes 0-5242879/15728641", Body::file(0, 5 * MIB))
            .answer(error(413, "invalidRequest"))
            .fails_with("ApiException: generalException (status 413)");
    }

    #[test]
    fn open_and_bare_session_ranges_mean_to_the_end() {
        for r in ["0-", "0"] {
            Script::with_session(Java::new(), 3_000_000, &created(&[r]))
                .sends("bytes 0-2999999/3000000", Body::file(0, 3_000_000))
                .answer(done())
                .ends_with_location();
        }
        Script::with_session(Java::new(), 3_000_000, &created(&["x-"]))
            .fails_with("NumberFormatException: For input string: \"x\"");
    }

    #[test]
    fn resume_reads_on_from_the_stream_unless_the_application_repositions_it() {
        let s = 15 * MIB;
        for (java, read_from) in [
            (Java::new(), 10 * MIB), // msgraph-sdk-java#2503
            (Java::new().repositioning_on_resume(), 5 * MIB),
        ] {
            Script::with_session(java, s, &created(&["0-15728639"]))
                // The second slice is read from the stream, then lost.
                .answer(closed(5 * MIB, s))
                .transport_error()
                .resumes("RuntimeException")
                .answer(closed(5 * MIB, s))
                .sends(
                    "bytes 5242880-10485759/15728640",
                    Body::file(read_from, 5 * MIB),
                );
        }
        let no_expiry = Answer::json(200, &serde_json::json!({"nextExpectedRanges": ["0-"]}));
        Script::with_session(Java::new(), s, &created(&["0-"]))
            .transport_error()
            .resumes("RuntimeException")
            .answer(no_expiry)
            .fails_with("ClientException");
    }
}
