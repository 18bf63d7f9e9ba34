//! Go: msgraph-sdk-go-core's `largeFileUploadTask.Upload()`
//! (`fileuploader/large_file_upload_task.go`, slices in `fileuploader/upload_slice.go`)
//! over kiota-http-go, at the profile's commit. `T` is `FileAttachmentable`, as in
//! Graph's "upload large attachment" sample, whose 320 KiB slice the model uses:
//! `NewLargeFileUploadTask` has no default.
//!
//! - Slices are planned once, from **all** ranges of the session
//!   (`getRangesRemaining`): `strings.Split(r, "-")`, then `rangeValues[1]`, so a bare
//!   `"a"` panics (index out of range); an unparsable number silently becomes 0; an
//!   empty end means the end of the file. The answers to the slices are never read
//!   for ranges, so casing and range forms after creation do not matter.
//! - A slice is `min(range end, start + C - 1, size - 1)`: exact, read with `ReadAt`.
//! - `uploadWithRetry` makes 2 attempts per slice, sleeping 1 s after the first
//!   failure and 2 s after the second, and the upload **goes on** with the next
//!   slice after a slice fails; success means no slice failed. kiota's retry handler
//!   resends 429/503/504 underneath.
//! - The result's location is the `Location` of the last slice's answer.
//! - A session without ranges plans no slice and reports success at once.
//! - Expiry is checked only by `Resume` (a nil one panics there), never by `Upload`.
//! - `Resume` is `RefreshUploadStatus` (`GET uploadUrl` through the adapter, whose
//!   nil result panics the type assertion), a check that ranges remain and that
//!   the session has not expired, then `Upload` planned from the refreshed ranges.

use std::time::{Duration, SystemTime};

use serde_json::Value;
use upsession_core::time::parse_graph_time;

use super::retry::{Middleware, Retry};
use super::{Answer, Body, Profile, Request, SdkModel, Step, field, quoted, strings};

/// 320 KiB, `maxSliceSize := int64(320 * 1024)` in the Go tab of "Upload large
/// attachment to Outlook message" (learn.microsoft.com/graph/sdks/large-file-upload).
const CHUNK: i64 = 320 * 1024;
/// `maxRetriesPerRequest := 3`, used as `for retry := 1; retry < maxRetry`: two tries.
const ATTEMPTS: u32 = 2;

static PROFILE: Profile = Profile {
    name: "Go",
    package: "msgraph-sdk-go-core, main after v1.4.1",
    repo: "microsoftgraph/msgraph-sdk-go-core",
    path: "fileuploader/large_file_upload_task.go",
    commit: "7ab7079ad6e6fff6b2ddf5688e29caaa9004db7f",
    chunk: 320 * 1024,
    client_error: "ODataError",
    chunk_source: "no default; 320 KiB as in the Go sample of Graph's \"Upload large files \
                   using the Microsoft Graph SDKs\"",
    summary: "Plans all slices once from the session's ranges (`rangeValues[1]`: a bare \"a\" \
              panics); never reads an answer's ranges; 2 tries per slice and goes on after a \
              failed slice; retries 429/503/504",
    live_issues: &[],
};

/// The Go SDK's upload task.
#[derive(Clone, Debug, Default)]
pub struct Go {
    url: String,
    size: i64,
    /// The planned slices, reversed (the next pops off the end).
    slices: Vec<(i64, i64)>,
    /// The slice in flight and its attempt (1 or 2).
    current: Option<((i64, i64), u32)>,
    /// `responseErrors`.
    errors: Vec<String>,
    /// `location = uploadLocation` of the last slice.
    location: Option<String>,
    /// `time.Sleep(time.Duration(retry) * time.Second)` between two tries.
    sleeping: bool,
    retry: Middleware,
    /// `RefreshUploadStatus`'s `GET` is in flight (`Resume`).
    refreshing: bool,
}

impl Go {
    /// A task not yet started.
    pub fn new() -> Self {
        Self::default()
    }

    /// The next slice's first try, or the result.
    fn next_slice(&mut self) -> Step {
        let Some(slice) = self.slices.pop() else {
            if let Some(first) = self.errors.first() {
                return Step::fail(
                    format!(
                        "UploadResult.GetUploadSucceeded() is false; {} slice(s) failed, the \
                         first with: {first}",
                        self.errors.len()
                    ),
                    format!(
                        "UploadSucceeded false ({} slice(s) failed)",
                        self.errors.len()
                    ),
                );
            }
            return Step::Done {
                location: self.location.clone(),
            };
        };
        self.current = Some((slice, 1));
        self.send_slice(slice)
    }

    /// A try at `slice`, read with `ReadAt`: exactly its bytes.
    fn send_slice(&mut self, (begin, end): (i64, i64)) -> Step {
        let length = u64::try_from(end - begin + 1).unwrap_or(0);
        let body = Body::file(u64::try_from(begin).unwrap_or(0), length);
        let range = format!("bytes {begin}-{end}/{}", self.size);
        self.retry.send(Request::put(&self.url, range, body))
    }

    /// A try failed with `error`: the second try after 1 s, or the next slice
    /// after 2 s more.
    fn attempt_failed(&mut self, error: String) -> Step {
        let Some((slice, attempt)) = self.current else {
            return Step::fail("panic: nothing in flight", "model misused");
        };
        if attempt >= ATTEMPTS {
            self.errors.push(error);
        }
        self.current = Some((slice, attempt + 1));
        self.sleeping = true;
        Step::Wait(Duration::from_secs(u64::from(attempt)))
    }

    /// `Resume` after `RefreshUploadStatus`'s answer: `Upload` from the session's
    /// refreshed ranges, or the error `Resume` returns, or its panic.
    fn on_refresh(&mut self, now: SystemTime, answer: &Answer) -> Step {
        let json = match status_result(answer) {
            Ok(json) => json,
            Err(failed) => return failed,
        };
        let ranges = field(&json, "nextExpectedRanges")
            .and_then(strings)
            .unwrap_or_default();
        if ranges.is_empty() {
            return Step::fail(
                "Resume: UploadSession does not have next expected ranges",
                "Resume: no next expected ranges",
            );
        }
        let expiry = match field(&json, "expirationDateTime").filter(|v| !v.is_null()) {
            // `GetExpirationDateTime().Before(...)` on a nil pointer.
            None => {
                return Step::fail(
                    "panic: runtime error: invalid memory address or nil pointer dereference",
                    "panic: no expirationDateTime on Resume",
                );
            }
            Some(v) => match v.as_str().and_then(parse_graph_time) {
                Some(t) => t,
                // kiota's `GetTimeValue` fails, and so does `Send`.
                None => {
                    return Step::fail(
                        "Resume: parsing time: cannot parse expirationDateTime",
                        "Resume returned an error",
                    );
                }
            },
        };
        if expiry < now {
            return Step::fail(
                "Resume: UploadSession has expired",
                "Resume: session expired",
            );
        }
        match plan(&ranges, self.size) {
            Ok(planned) => self.slices = planned.into_iter().rev().collect(),
            Err(panic) => return panic,
        }
        // `Upload` starts a new result: no errors, no location yet.
        self.errors.clear();
        self.location = None;
        self.next_slice()
    }
}

impl SdkModel for Go {
    fn profile(&self) -> &'static Profile {
        &PROFILE
    }

    fn begin(&mut self, _now: SystemTime, session: &Value, file_size: u64) -> Step {
        self.size = i64::try_from(file_size).unwrap_or(i64::MAX);
        let ranges = field(session, "nextExpectedRanges")
            .and_then(strings)
            .unwrap_or_default();
        let planned = match plan(&ranges, self.size) {
            Ok(p) => p,
            Err(panic) => return panic,
        };
        if !planned.is_empty() {
            // `*l.uploadSession.GetUploadUrl()` on a nil pointer panics.
            let Some(url) = field(session, "uploadUrl").and_then(Value::as_str) else {
                return Step::fail(
                    "panic: runtime error: invalid memory address or nil pointer dereference",
                    "panic: no uploadUrl",
                );
            };
            url.clone_into(&mut self.url);
        }
        self.slices = planned.into_iter().rev().collect();
        self.next_slice()
    }

    fn on_answer(&mut self, now: SystemTime, answer: &Answer) -> Step {
        if let Retry::After(delay) = self.retry.judge(now, answer) {
            return Step::Wait(delay);
        }
        if std::mem::take(&mut self.refreshing) {
            return self.on_refresh(now, answer);
        }
        // The headers-inspection option captures the answer's `Location`, error or not.
        self.location = answer.header("location").map(str::to_owned);
        match send_result(answer) {
            Ok(()) => self.next_slice(),
            Err(error) => self.attempt_failed(error),
        }
    }

    fn on_transport_error(&mut self, what: &str) -> Step {
        if std::mem::take(&mut self.refreshing) {
            return Step::fail(format!("Resume: Get: {what}"), "Resume returned an error");
        }
        self.location = None;
        self.attempt_failed(format!("Put: {what}"))
    }

    fn on_wait_over(&mut self) -> Step {
        if let Some(resend) = self.retry.resend() {
            return resend;
        }
        if !std::mem::take(&mut self.sleeping) {
            return Step::fail("panic: no wait", "model misused");
        }
        match self.current {
            Some((slice, attempt)) if attempt <= ATTEMPTS => self.send_slice(slice),
            _ => self.next_slice(),
        }
    }

    fn resume(&mut self) -> Step {
        if self.url.is_empty() {
            return Step::fail(
                "panic: runtime error: invalid memory address or nil pointer dereference",
                "panic: no uploadUrl",
            );
        }
        self.slices.clear();
        self.current = None;
        self.sleeping = false;
        self.refreshing = true;
        self.retry.send(Request::get(&self.url))
    }
}

/// kiota-http-go `Send` of `RefreshUploadStatus` (`CreateUploadSessionDiscriminator`):
/// the session's JSON, an error `Resume` returns, or the panic of
/// `result.(UploadSessionResponse)` on a nil result.
fn status_result(answer: &Answer) -> Result<Value, Step> {
    if answer.status >= 400 {
        return Err(Step::fail(
            format!(
                "Resume: The server returned an unexpected status code and no error factory is \
                 registered for this code: {}",
                answer.status
            ),
            "Resume returned an error",
        ));
    }
    let nil = || {
        Step::fail(
            "panic: interface conversion: interface is nil, not fileuploader.UploadSessionResponse",
            "panic: no session in the status answer",
        )
    };
    let content_length_zero = answer.header("content-length").map(str::trim) == Some("0");
    if answer.status == 204 || content_length_zero {
        return Err(nil());
    }
    let Some(media) = answer.media_type() else {
        return Err(nil());
    };
    if !media.trim().eq_ignore_ascii_case("application/json") {
        return Err(Step::fail(
            format!("Resume: content type {media} does not have a factory registered to be parsed"),
            "Resume returned an error",
        ));
    }
    if answer.body.is_empty() {
        return Err(Step::fail(
            "Resume: content is empty",
            "Resume returned an error",
        ));
    }
    answer.json_body().ok_or_else(|| {
        Step::fail(
            "Resume: invalid character in JSON",
            "Resume returned an error",
        )
    })
}

/// `createUploadSlices()` over `getRangesRemaining()`.
fn plan(ranges: &[String], size: i64) -> Result<Vec<(i64, i64)>, Step> {
    let mut slices = Vec::new();
    for range in ranges {
        let values: Vec<&str> = range.split('-').collect();
        let start = values[0].parse::<i64>().unwrap_or(0); // a parse error leaves 0
        let Some(second) = values.get(1) else {
            return Err(Step::fail(
                "panic: runtime error: index out of range [1] with length 1",
                format!("panic: index out of range on bare range {}", quoted(range)),
            ));
        };
        let end = if second.trim().is_empty() {
            size - 1
        } else {
            // `endRange` is compared while still 0, so the parsed value always wins.
            second.parse::<i64>().unwrap_or(0)
        };
        let mut begin = start;
        while begin < size && begin <= end {
            let last = end.min(begin.saturating_add(CHUNK) - 1).min(size - 1);
            slices.push((begin, last));
            begin = last + 1;
        }
    }
    Ok(slices)
}

/// kiota-http-go `Send` with `FileAttachment`'s factory: `Ok` unless it returns an
/// error.
fn send_result(answer: &Answer) -> Result<(), String> {
    if answer.status >= 400 {
        return Err(format!(
            "The server returned an unexpected status code and no error factory is registered \
             for this code: {}",
            answer.status
        ));
    }
    let content_length_zero = answer.header("content-length").map(str::trim) == Some("0");
    if answer.status == 204 || content_length_zero {
        return Ok(());
    }
    let Some(media) = answer.media_type() else {
        return Ok(());
    };
    if !media.trim().eq_ignore_ascii_case("application/json") {
        return Err(format!(
            "content type {media} does not have a factory registered to be parsed"
        ));
    }
    if answer.body.is_empty() {
        return Err("content is empty".to_owned());
    }
    answer
        .json_body()
        .map(|_| ())
        .ok_or_else(|| "invalid character in JSON".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sdk::test_support::{Script, bare, created, done, error, pascal, progress};

    #[test]
    fn slices_of_320_kib_ignore_the_answers_ranges() {
        let s = 700_000;
        Script::with_session(Go::new(), s, &created(&["0-"]))
            .sends("bytes 0-327679/700000", Body::file(0, 327_680))
            .answer(bare(327_680))
            .sends("bytes 327680-655359/700000", Body::file(327_680, 327_680))
            .answer(pascal("999-"))
            .sends("bytes 655360-699999/700000", Body::file(655_360, 44_640))
            .answer(done())
            .ends_with_location();
    }

    #[test]
    fn a_bare_session_range_panics() {
        let f = Script::with_session(Go::new(), 3_000_000, &created(&["0"]))
            .fails_with("panic: runtime error: index out of range [1] with length 1");
        assert_eq!(f.short, "panic: index out of range on bare range \"0\"");
    }

    #[test]
    fn a_failed_slice_is_tried_twice_and_the_upload_goes_on() {
        let s = 400_000;
        Script::new(Go::new(), s)
            .sends("bytes 0-327679/400000", Body::file(0, 327_680))
            .answer(error(416, "invalidRange"))
            .waits(Duration::from_secs(1))
            .sends("bytes 0-327679/400000", Body::file(0, 327_680))
            .answer(error(416, "invalidRange"))
            .waits(Duration::from_secs(2))
            .sends("bytes 327680-399999/400000", Body::file(327_680, 72_320))
            .answer(done())
            .fails_with("UploadResult.GetUploadSucceeded() is false; 1 slice(s) failed");
    }

    #[test]
    fn no_ranges_means_success_without_a_request() {
        let session = created(&[]);
        assert_eq!(
            Script::with_session(Go::new(), 3_000_000, &session).ends(),
            None
        );
    }

    #[test]
    fn a_lost_slice_is_tried_again_and_resume_plans_from_the_refreshed_ranges() {
        let s = 700_000;
        Script::new(Go::new(), s)
            .sends("bytes 0-327679/700000", Body::file(0, 327_680))
            .transport_error()
            .waits(Duration::from_secs(1))
            .sends("bytes 0-327679/700000", Body::file(0, 327_680))
            .answer(done())
            .sends("bytes 327680-655359/700000", Body::file(327_680, 327_680));
        let none_left = Answer::json(200, &serde_json::json!({"nextExpectedRanges": []}));
        Script::with_session(Go::new(), s, &created(&["0-"]))
            .resume()
            .gets()
            .answer(progress("655360-"))
            .sends("bytes 655360-699999/700000", Body::file(655_360, 44_640))
            .resume()
            .gets()
            .answer(none_left)
            .fails_with("Resume: UploadSession does not have next expected ranges");
    }
}
