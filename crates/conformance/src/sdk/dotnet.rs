//! .NET: Microsoft.Graph.Core's `LargeFileUploadTask<T>.UploadAsync()`
//! (`src/Microsoft.Graph.Core/Tasks/LargeFileUploadTask.cs`), its
//! `UploadResponseHandler` (`Requests/Upload/UploadResponseHandler.cs`) and kiota's
//! retry handler, at the profile's commit. `T` is `FileAttachment`, as in Graph's
//! "upload large attachment" sample.
//!
//! - Slices are planned from **all** ranges of the session, up front, per pass
//!   (`GetRangesRemaining`): `range.Split('-')`, `long.Parse` on both halves, an
//!   empty end meaning the end of the file, so `"a-b"` and `"a-"` work and a bare
//!   `"a"` throws `IndexOutOfRangeException` (`rangeSpecifiers[1]`). The answers to
//!   slices only say "done" or "not yet"; their ranges never steer.
//! - A slice is `min(C, rest of the range)` bytes, read after a `Seek`: exact.
//! - Each HTTP error gets one immediate second try (every non-2xx is thrown as
//!   `ServiceException("generalException")`, and `IsMatch("generalException")`
//!   always matches); the second error propagates.
//! - After a pass without completion it asks the session (`GET`), waits 2 s, then
//!   8 s, and after the third pass throws `TaskCanceledException`.
//! - Done: a 201 with a body or a `Location`, or a 200/202 whose session has no
//!   `nextExpectedRanges` (property names are case-insensitive here: dotnet-core
//!   PR #720). The createUploadSession answer itself is read by the generated
//!   `UploadSession` model, camelCase.
//! - kiota's retry handler resends 429/503/504 (3 times) and then throws
//!   `AggregateException`. Expiry is only checked by `ResumeAsync` and
//!   `DeleteSessionAsync` (a missing one counts as expired), never by `UploadAsync`.
//! - A transport error is an `HttpRequestException` (or, when `HttpClient` times out,
//!   a `TaskCanceledException`), not a `ServiceException`: `UploadSliceAsync` does
//!   not catch it, so it leaves `UploadAsync` at once. The application then calls
//!   `ResumeAsync`: `UpdateSessionStatusAsync` (`GET`), the expiry, `UploadAsync`.

use std::time::SystemTime;

use serde_json::Value;

use super::passes::{self, Pass, Tries, UploadResult};
use super::retry::{Middleware, Retry};
use super::{Answer, Body, Profile, Request, SdkFailure, SdkModel, Step, field, quoted, strings};

/// 5 MiB: `DefaultMaxSliceSize = 5 * 1024 * 1024`.
const CHUNK: i64 = 5 * 1024 * 1024;

static PROFILE: Profile = Profile {
    name: ".NET",
    package: "Microsoft.Graph.Core 4.0.1",
    repo: "microsoftgraph/msgraph-sdk-dotnet-core",
    path: "src/Microsoft.Graph.Core/Tasks/LargeFileUploadTask.cs",
    commit: "7b55c34de404f7d7029cc83d25fd582a2497b2c5",
    chunk: 5 * 1024 * 1024,
    chunk_source: "default `maxSliceSize`",
    client_error: "ODataError",
    summary: "Plans slices from all of the session's ranges (`long.Parse` on both halves: a bare \
              \"a\" throws IndexOutOfRangeException); answers only say done or not; case-insensitive; \
              one immediate re-try per slice, 3 passes with a GET between; retries 429/503/504",
    live_issues: &[(
        "microsoftgraph/msgraph-sdk-dotnet-core#984",
        "a deferCommit (OneDrive) session answers 202 with empty ranges and the task \
         loops to \"Upload failed too many times\"",
    )],
};

/// What is in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum InFlight {
    /// A slice `begin..=end`; `first_attempt` until its first error.
    Slice {
        begin: i64,
        end: i64,
        first_attempt: bool,
    },
    /// `UpdateSessionStatusAsync`'s `GET`, after a pass.
    Status,
    /// `UpdateSessionStatusAsync`'s `GET`, in `ResumeAsync`.
    Resume,
}

/// The .NET SDK's upload task.
#[derive(Clone, Debug, Default)]
pub struct DotNet {
    url: String,
    size: i64,
    /// `_rangesRemaining`, inclusive.
    ranges: Vec<(i64, i64)>,
    /// Where `GetUploadSliceRequests` (lazy, `yield return`) has got to.
    pass: Pass,
    tries: Tries,
    in_flight: Option<InFlight>,
    retry: Middleware,
}

impl DotNet {
    /// A task not yet started.
    pub fn new() -> Self {
        Self::default()
    }

    fn begin_pass(&mut self) -> Step {
        self.pass = Pass::default();
        self.next_slice()
    }

    /// The next slice of the pass (`while (currentRangeBegins <= item2)`), or the
    /// status query when the pass is over.
    fn next_slice(&mut self) -> Step {
        let within = |begin, end| begin <= end;
        if let Some((begin, end)) = self.pass.next(&self.ranges, CHUNK, within) {
            return self.send_slice(begin, end, true);
        }
        self.in_flight = Some(InFlight::Status);
        self.retry.send(Request::get(&self.url))
    }

    /// `UploadSliceAsync`'s request: `Seek(RangeBegin)` and a `ReadOnlySubStream`,
    /// exactly the range, which cannot be copied past the end of the stream.
    fn send_slice(&mut self, begin: i64, end: i64, first_attempt: bool) -> Step {
        let offset = u64::try_from(begin).unwrap_or(0);
        let wanted = u64::try_from(end - begin + 1).unwrap_or(0);
        let size = u64::try_from(self.size).unwrap_or(0);
        let body = Body::file(offset.min(size), wanted.min(size.saturating_sub(offset)));
        if body.len != wanted {
            return Step::fail(
                "HttpRequestException: Error while copying content to a stream.",
                "HttpRequestException: a slice past the end of the file",
            );
        }
        self.in_flight = Some(InFlight::Slice {
            begin,
            end,
            first_attempt,
        });
        let range = format!("bytes {begin}-{end}/{}", self.size);
        self.retry.send(Request::put(&self.url, range, body))
    }

    /// `UpdateSessionStatusAsync`'s answer: the session's ranges become
    /// `_rangesRemaining`; its expiry as sent, for `ResumeAsync`.
    fn update_session(&mut self, answer: &Answer) -> Result<Option<String>, Step> {
        let result = handle_response(answer).map_err(Handled::into_step)?;
        let Some(session) = result.session else {
            return Err(null_reference(
                "UpdateSessionStatusAsync: the status answer has no ranges",
            ));
        };
        self.ranges = ranges_remaining(Some(&session), self.size)?;
        Ok(result.expiry)
    }

    /// `ResumeAsync` after its `GET`: the session's ranges, then its expiry
    /// (`uploadSession.ExpirationDateTime ?? DateTimeOffset.Now`, expired unless
    /// later than now), then `UploadAsync` with its tries counted afresh.
    fn on_resume_answer(&mut self, now: SystemTime, answer: &Answer) -> Step {
        let unparsable = SdkFailure::new(
            "FormatException: The string was not recognized as a valid DateTime.",
            "FormatException on expirationDateTime",
        );
        let resumed = self
            .update_session(answer)
            .and_then(|expiry| passes::resume_expiry(now, expiry.as_deref(), unparsable));
        if let Err(raised) = resumed {
            return raised;
        }
        self.tries.restart();
        self.begin_pass()
    }

    fn on_slice_answer(&mut self, answer: &Answer, begin: i64, end: i64, first: bool) -> Step {
        match handle_response(answer) {
            Err(Handled::Service(e)) if first => {
                // `IsMatch("generalException")`: one more try, at once.
                let _ = e;
                self.send_slice(begin, end, false)
            }
            Err(Handled::Service(e) | Handled::Other(e)) => e,
            Ok(result) if result.succeeded() => Step::Done {
                location: result.location,
            },
            Ok(_) => self.next_slice(),
        }
    }

    fn on_status_answer(&mut self, answer: &Answer) -> Step {
        if let Err(raised) = self.update_session(answer) {
            return raised;
        }
        self.tries.next_pass().unwrap_or_else(|| {
            Step::fail(
                "TaskCanceledException: Upload failed too many times. See InnerException for \
                 list of exceptions that occured.",
                "TaskCanceledException (upload failed too many times)",
            )
        })
    }
}

impl SdkModel for DotNet {
    fn profile(&self) -> &'static Profile {
        &PROFILE
    }

    fn begin(&mut self, _now: SystemTime, session: &Value, file_size: u64) -> Step {
        self.size = i64::try_from(file_size).unwrap_or(i64::MAX);
        // The generated `UploadSession` (Microsoft.Graph) reads camelCase only.
        let ranges = field(session, "nextExpectedRanges").and_then(strings);
        match ranges_remaining(ranges.as_ref(), self.size) {
            Ok(r) => self.ranges = r,
            Err(raised) => return raised,
        }
        let Some(url) = field(session, "uploadUrl").and_then(Value::as_str) else {
            return Step::fail(
                "ArgumentNullException: Value cannot be null. (Parameter 'requestAdapter')",
                "ArgumentNullException: no uploadUrl",
            );
        };
        url.clone_into(&mut self.url);
        self.begin_pass()
    }

    fn on_answer(&mut self, now: SystemTime, answer: &Answer) -> Step {
        match self.retry.judge(now, answer) {
            Retry::After(delay) => return Step::Wait(delay),
            Retry::Exhausted => {
                return Step::fail(
                    "AggregateException: Too many retries performed. More than 3 retries \
                     encountered while sending the request.",
                    format!("AggregateException after {} answers", answer.status),
                );
            }
            Retry::Pass => {}
        }
        match self.in_flight.take() {
            Some(InFlight::Slice {
                begin,
                end,
                first_attempt,
            }) => self.on_slice_answer(answer, begin, end, first_attempt),
            Some(InFlight::Status) => self.on_status_answer(answer),
            Some(InFlight::Resume) => self.on_resume_answer(now, answer),
            None => Step::fail(
                "InvalidOperationException: nothing in flight",
                "model misused",
            ),
        }
    }

    fn on_transport_error(&mut self, what: &str) -> Step {
        // Not a ServiceException: nothing catches it.
        Step::fail(
            format!("HttpRequestException: {what}"),
            "HttpRequestException",
        )
    }

    fn on_wait_over(&mut self) -> Step {
        if let Some(resend) = self.retry.resend() {
            return resend;
        }
        if self.tries.wake() {
            return self.begin_pass();
        }
        Step::fail("InvalidOperationException: no wait", "model misused")
    }

    fn resume(&mut self) -> Step {
        if self.url.is_empty() {
            return null_reference("ResumeAsync: no uploadUrl");
        }
        self.in_flight = Some(InFlight::Resume);
        self.retry.send(Request::get(&self.url))
    }
}

/// `GetRangesRemaining(session)`.
fn ranges_remaining(ranges: Option<&Vec<String>>, size: i64) -> Result<Vec<(i64, i64)>, Step> {
    let Some(ranges) = ranges else {
        return Err(null_reference(
            "GetRangesRemaining: NextExpectedRanges is null",
        ));
    };
    let mut out = Vec::with_capacity(ranges.len());
    for range in ranges {
        let parts: Vec<&str> = range.split('-').collect();
        let begin = long_parse(parts[0], range)?;
        let Some(second) = parts.get(1) else {
            return Err(Step::fail(
                "IndexOutOfRangeException: Index was outside the bounds of the array.",
                format!("IndexOutOfRangeException on bare range {}", quoted(range)),
            ));
        };
        let end = if second.is_empty() {
            size - 1
        } else {
            long_parse(second, range)?
        };
        out.push((begin, end));
    }
    Ok(out)
}

/// `long.Parse(text)` (invariant culture, `NumberStyles.Integer`): surrounding
/// whitespace, a sign, digits.
fn long_parse(text: &str, range: &str) -> Result<i64, Step> {
    let t = text.trim();
    let digits = t.strip_prefix(['+', '-']).unwrap_or(t);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Step::fail(
            format!("FormatException: The input string '{text}' was not in a correct format."),
            format!("FormatException on range {}", quoted(range)),
        ));
    }
    t.parse().map_err(|_| {
        Step::fail(
            "OverflowException: Value was either too large or too small for an Int64.",
            format!("OverflowException on range {}", quoted(range)),
        )
    })
}

fn null_reference(context: &str) -> Step {
    Step::fail(
        format!(
            "NullReferenceException: Object reference not set to an instance of an object. ({context})"
        ),
        "NullReferenceException (no nextExpectedRanges)",
    )
}

/// How `HandleResponseAsync` fails.
enum Handled {
    /// `ServiceException` (caught by `UploadSliceAsync`).
    Service(Step),
    /// Anything else: propagates.
    Other(Step),
}

impl Handled {
    /// What propagates where nothing catches the `ServiceException`.
    fn into_step(self) -> Step {
        match self {
            Self::Service(e) | Self::Other(e) => e,
        }
    }
}

/// `UploadResponseHandler.HandleResponseAsync<T>`.
fn handle_response(answer: &Answer) -> Result<UploadResult, Handled> {
    if !answer.is_success() {
        return Err(Handled::Service(Step::fail(
            format!(
                "ServiceException: generalException (status {})",
                answer.status
            ),
            "ServiceException generalException",
        )));
    }
    let mut result = UploadResult::default();
    if answer.status == 201 {
        if !answer.body.is_empty() {
            parse_json(answer)?;
            result.item = true;
        }
        result.location = answer.header("location").map(str::to_owned);
        return Ok(result);
    }
    let json = parse_json(answer)?;
    // `UploadSession.GetFieldDeserializers()` uses `StringComparer.OrdinalIgnoreCase`;
    // of several spellings the last one read wins.
    let property = |name: &str| {
        json.as_object().and_then(|map| {
            map.iter()
                .rev()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v)
        })
    };
    match property("nextExpectedRanges") {
        Some(v) if !v.is_null() => match strings(v) {
            Some(list) => {
                result.session = Some(list);
                result.expiry = property("expirationDateTime")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
            }
            None => {
                return Err(Handled::Other(Step::fail(
                    "InvalidOperationException: The requested operation requires an element of \
                     type 'Array'",
                    "InvalidOperationException: ranges not an array",
                )));
            }
        },
        // No ranges: "Upload is most likely done", the body parsed as `T`.
        _ => result.item = true,
    }
    Ok(result)
}

/// kiota's `GetRootParseNodeAsync` on the answer's media type, lower-cased.
fn parse_json(answer: &Answer) -> Result<Value, Handled> {
    let Some(media) = answer.media_type() else {
        return Err(Handled::Other(Step::fail(
            "ArgumentNullException: Value cannot be null. (Parameter 'contentType')",
            "ArgumentNullException: an answer without Content-Type",
        )));
    };
    if !media.trim().eq_ignore_ascii_case("application/json") {
        return Err(Handled::Other(Step::fail(
            format!(
                "InvalidOperationException: Content type {media} does not have a factory registered to be parsed"
            ),
            "InvalidOperationException: not JSON",
        )));
    }
    answer.json_body().ok_or_else(|| {
        Handled::Other(Step::fail(
            "ClientException: Unable to deserialize content.",
            "ClientException: unreadable JSON",
        ))
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::sdk::test_support::{MIB, Script, bare, created, done, error, pascal, progress};

    #[test]
    fn slices_follow_the_session_not_the_answers() {
        let s = 12 * MIB;
        Script::with_session(DotNet::new(), s, &created(&["0-"]))
            .sends("bytes 0-5242879/12582912", Body::file(0, 5 * MIB))
            .answer(bare(5 * MIB))
            .sends(
                "bytes 5242880-10485759/12582912",
                Body::file(5 * MIB, 5 * MIB),
            )
            .answer(pascal("10485760-"))
            .sends(
                "bytes 10485760-12582911/12582912",
                Body::file(10 * MIB, 2 * MIB),
            )
            .answer(done())
            .ends_with_location();
    }

    #[test]
    fn a_bare_range_in_the_session_throws_index_out_of_range() {
        let bare = created(&["0"]);
        let f = Script::with_session(DotNet::new(), 3_000_000, &bare)
            .fails_with("IndexOutOfRangeException");
        assert_eq!(f.short, "IndexOutOfRangeException on bare range \"0\"");
    }

    #[test]
    fn every_error_is_tried_twice_then_thrown() {
        Script::new(DotNet::new(), 15 * MIB + 1)
            .sends("bytes 0-5242879/15728641", Body::file(0, 5 * MIB))
            .answer(error(413, "invalidRequest"))
            .sends("bytes 0-5242879/15728641", Body::file(0, 5 * MIB))
            .answer(error(413, "invalidRequest"))
            .fails_with("ServiceException: generalException (status 413)");
    }

    #[test]
    fn throttling_is_resent_by_the_middleware_then_aggregated() {
        let throttled = || error(429, "ApplicationThrottled").with_header("Retry-After", "2");
        let mut script = Script::new(DotNet::new(), 3_000_000);
        for _ in 0..3 {
            script = script
                .sends("bytes 0-2999999/3000000", Body::file(0, 3_000_000))
                .answer(throttled())
                .waits(Duration::from_secs(2));
        }
        script
            .sends("bytes 0-2999999/3000000", Body::file(0, 3_000_000))
            .answer(throttled())
            .fails_with("AggregateException");
    }

    #[test]
    fn a_pass_without_completion_asks_the_session_and_sleeps() {
        let s = 3_000_000;
        Script::new(DotNet::new(), s)
            .sends("bytes 0-2999999/3000000", Body::file(0, s))
            .answer(progress("0-2999999"))
            .gets()
            .answer(progress("0-"))
            .waits(Duration::from_secs(2))
            .sends("bytes 0-2999999/3000000", Body::file(0, s))
            .answer(progress("0-2999999"))
            .gets()
            .answer(progress("0-2999999"))
            .waits(Duration::from_secs(8))
            .sends("bytes 0-2999999/3000000", Body::file(0, s))
            .answer(progress("0-2999999"))
            .gets()
            .answer(progress("0-2999999"))
            .fails_with("TaskCanceledException");
    }

    #[test]
    fn an_answer_without_ranges_completes() {
        Script::new(DotNet::new(), 15 * MIB + 1)
            .sends("bytes 0-5242879/15728641", Body::file(0, 5 * MIB))
            .answer(Answer::json(200, &serde_json::json!({"id": "x"})))
            .ends();
    }

    #[test]
    fn a_transport_error_leaves_upload_async_and_resume_async_goes_on() {
        let s = 15 * MIB;
        let failed = || {
            Script::with_session(DotNet::new(), s, &created(&["0-"]))
                .answer(progress("5242880-"))
                // No second try: not a ServiceException.
                .transport_error()
                .resumes("HttpRequestException")
        };
        failed().answer(progress("5242880-")).sends(
            "bytes 5242880-10485759/15728640",
            Body::file(5 * MIB, 5 * MIB),
        );
        // `ExpirationDateTime ?? DateTimeOffset.Now` is never later than now.
        let no_expiry = Answer::json(
            200,
            &serde_json::json!({"nextExpectedRanges": ["5242880-"]}),
        );
        failed().answer(no_expiry).fails_with("ClientException");
    }
}
