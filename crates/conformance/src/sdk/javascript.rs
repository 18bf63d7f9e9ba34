//! JavaScript: `@microsoft/microsoft-graph-client`'s `LargeFileUploadTask.upload()`
//! (`src/tasks/LargeFileUploadTask.ts`), with `GraphRequest.parsePath` /
//! `buildFullUrl` (`src/GraphRequest.ts`) and `GraphResponseHandler`
//! (`src/GraphResponseHandler.ts`) at the profile's commit. Not kiota-based.
//!
//! - The first slice is `0..rangeSize` whatever the session says (constructor:
//!   `new Range(0, this.options.rangeSize - 1)`); afterwards only the *start* of
//!   `nextExpectedRanges[0]` matters (`parseRange` then `getNextRange`), read with
//!   `parseInt`, so `"a-b"`, `"a-"` and a bare `"a"` all work, and the slice is
//!   `rangeSize` bytes or the rest of the file: no off-by-one.
//! - PascalCase is read in the upload loop (`responseBody.NextExpectedRanges ||
//!   responseBody.nextExpectedRanges`, msgraph-sdk-serviceissues#39).
//! - Complete means `status === 201`, or 200 with a truthy `id`. A body without
//!   ranges throws a `TypeError`; an empty range list ends in the "Invalid Session"
//!   error on the next turn.
//! - The uploadUrl goes through `client.api(url)`: `parsePath` recognises a host only
//!   after `https://`, takes the first path segment as the "version", and rebuilds
//!   the query string from dictionaries (OData names first, duplicates collapsed).
//!   An `http://` uploadUrl is appended to `https://graph.microsoft.com/v1.0/`.
//! - Errors are thrown as the parsed error body (msgraph-sdk-javascript#1557); the
//!   retry handler skips `application/octet-stream` bodies; expiry is never checked.
//! - `resume()` is `getStatus()` (`GET uploadUrl` through the client, camelCase
//!   only, any failure a `GraphError`) then `upload()` from the start of the first
//!   range it names.

use std::time::SystemTime;

use serde_json::Value;

use super::retry::{Middleware, Retry};
use super::{Answer, Body, Profile, Request, SdkModel, Step};

/// 5 MiB: `DEFAULT_FILE_SIZE: number = 5 * 1024 * 1024`.
const CHUNK: u64 = 5 * 1024 * 1024;

/// `oDataQueryNames` in `src/GraphRequestUtil.ts`.
const ODATA_QUERY_NAMES: [&str; 8] = [
    "$select",
    "$expand",
    "$orderby",
    "$filter",
    "$top",
    "$skip",
    "$skipToken",
    "$count",
];

static PROFILE: Profile = Profile {
    name: "JavaScript",
    package: "@microsoft/microsoft-graph-client 3.0.7",
    repo: "microsoftgraph/msgraph-sdk-javascript",
    path: "src/tasks/LargeFileUploadTask.ts",
    commit: "bfb564afcd4cad6d79a2294c91427d076213d092",
    chunk: CHUNK,
    chunk_source: "default `rangeSize`",
    client_error: "GraphError",
    summary: "Uses only the start of `nextExpectedRanges[0]` (parseInt: every form works); \
              reads PascalCase; 201 or 200 with an `id` completes; needs an `https://` \
              uploadUrl and rebuilds its query string; no slice retry",
    live_issues: &[],
};

/// A JavaScript number as the task uses it: an integer or `NaN` (`None`).
type Num = Option<i64>;

/// `Range`: inclusive bounds, `(-1, -1)` when there is nothing to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Range {
    min: Num,
    max: Num,
}

/// The body `GraphResponseHandler.convertResponse` hands the loop.
enum JsBody {
    /// `undefined` (a 204).
    Undefined,
    /// Parsed JSON.
    Json(Value),
    /// A stream, blob or text: no JSON properties.
    Opaque,
}

/// What is in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum InFlight {
    /// A slice (`uploadSliceGetRawResponse`).
    Slice,
    /// `getStatus()`'s `GET`, which, not being `application/octet-stream`, the
    /// retry handler does resend on 429, 503 and 504.
    Status,
}

/// The JavaScript SDK's upload task.
#[derive(Clone, Debug, Default)]
pub struct JavaScript {
    url: String,
    size: u64,
    next_range: Option<Range>,
    in_flight: Option<InFlight>,
    /// What the retry handler sees: the status `GET`, never a slice.
    retry: Middleware,
}

impl JavaScript {
    /// A task not yet started.
    pub fn new() -> Self {
        Self::default()
    }

    /// One turn of `while (!this.uploadSession.isCancelled)`: `getNextRange`,
    /// `sliceFile`, `uploadSliceGetRawResponse`.
    fn next_slice(&mut self) -> Step {
        let Some(current) = self.next_range else {
            return Step::fail("Error: no range", "model misused");
        };
        // getNextRange(): only the start is kept.
        let range = if current.min == Some(-1) {
            current
        } else {
            let max = current.min.map(|min| {
                (min + i64::try_from(CHUNK).unwrap_or(i64::MAX) - 1).min(size_i64(self.size) - 1)
            });
            Range {
                min: current.min,
                max,
            }
        };
        if range.max == Some(-1) {
            return Step::fail(
                "Invalid Session: Task with which you are trying to upload is already completed, \
                 Please check for your uploaded file",
                "\"Invalid Session\" error (no range left)",
            );
        }
        let body = self.slice(range);
        // `"Content-Length": `${range.maxValue - range.minValue + 1}``: fetch refuses a
        // length that does not match the body.
        let declared = range.min.zip(range.max).map(|(a, b)| b - a + 1);
        if declared != i64::try_from(body.len).ok() {
            return Step::fail(
                "TypeError: fetch failed (RequestContentLengthMismatchError)",
                "TypeError: fetch failed (Content-Length ≠ body)",
            );
        }
        self.in_flight = Some(InFlight::Slice);
        Step::Send(Request::put(
            &self.url,
            format!("bytes {}-{}/{}", js(range.min), js(range.max), self.size),
            body,
        ))
    }

    /// `FileUpload.sliceFile`: `content.slice(min, max + 1)` on a Buffer.
    fn slice(&self, range: Range) -> Body {
        let size = size_i64(self.size);
        let index = |n: Num| match n {
            None => 0,
            Some(v) if v < 0 => (size + v).max(0),
            Some(v) => v.min(size),
        };
        let start = index(range.min);
        let end = index(range.max.map(|m| m + 1));
        let len = u64::try_from((end - start).max(0)).unwrap_or(0);
        Body::file(u64::try_from(start).unwrap_or(0), len)
    }

    /// The loop body after the answer: completion, or `updateTaskStatus`.
    fn after_answer(&mut self, answer: &Answer) -> Step {
        let body = match convert_response(answer) {
            Ok(body) => body,
            Err(raised) => return raised,
        };
        if !answer.is_success() {
            return Step::fail(
                format!(
                    "the error body of the {} answer, thrown as is (not a GraphError, \
                     msgraph-sdk-javascript#1557)",
                    answer.status
                ),
                "throws the error body",
            );
        }
        let id = match &body {
            JsBody::Json(v) => prop(v, "id"),
            _ => None,
        };
        if answer.status == 201 || (answer.status == 200 && truthy(id)) {
            return Step::Done {
                location: answer.header("location").map(str::to_owned),
            };
        }
        let json = match status_of(body) {
            Ok(json) => json,
            Err(raised) => return raised,
        };
        let pascal = json.as_ref().and_then(|v| prop(v, "NextExpectedRanges"));
        let ranges = if truthy(pascal) {
            pascal
        } else {
            json.as_ref().and_then(|v| prop(v, "nextExpectedRanges"))
        };
        self.update_task_status(ranges)
    }

    /// `getStatus()` on its answer, then `upload()`: a failed request or an
    /// unreadable body is a `GraphError` (`GraphRequest.send`), then
    /// `updateTaskStatus(response)` reads `response.nextExpectedRanges`.
    fn after_status(&mut self, answer: &Answer) -> Step {
        let graph_error = || {
            Step::fail(
                format!("GraphError: getStatus() answered {}", answer.status),
                "GraphError on the status",
            )
        };
        let status = match convert_response(answer) {
            Ok(body) if answer.is_success() => status_of(body),
            _ => return graph_error(),
        };
        match status {
            Ok(json) => {
                self.update_task_status(json.as_ref().and_then(|v| prop(v, "nextExpectedRanges")))
            }
            Err(raised) => raised,
        }
    }

    /// `updateTaskStatus(response)` with `ranges`, the ranges it is given, then
    /// the next turn of the loop.
    fn update_task_status(&mut self, ranges: Option<&Value>) -> Step {
        match self.parse_range(ranges) {
            Ok(range) => {
                self.next_range = Some(range);
                self.next_slice()
            }
            Err(raised) => raised,
        }
    }

    /// `parseRange(ranges)`: `ranges[0]`, split on `-`, `parseInt` both halves, a
    /// missing end meaning the end of the file.
    fn parse_range(&self, ranges: Option<&Value>) -> Result<Range, Step> {
        let nothing = Range {
            min: Some(-1),
            max: Some(-1),
        };
        let first: Option<Value> = match ranges {
            None | Some(Value::Null) => return Err(type_error("undefined", "0")),
            Some(Value::Array(items)) => items.first().cloned(),
            Some(Value::String(s)) => s.chars().next().map(|c| Value::String(c.to_string())),
            Some(Value::Object(map)) => map.get("0").cloned(),
            Some(_) => None,
        };
        let text = match first {
            None => return Ok(nothing),
            Some(Value::String(s)) if s.is_empty() => return Ok(nothing),
            Some(Value::String(s)) => s,
            Some(_) => {
                return Err(Step::fail(
                    "TypeError: rangeStr.split is not a function",
                    "TypeError: a range that is not a string",
                ));
            }
        };
        let mut parts = text.split('-');
        let min = parse_int(parts.next().unwrap_or_default());
        let max = parts
            .next()
            .and_then(parse_int)
            .or(Some(size_i64(self.size) - 1));
        Ok(Range { min, max })
    }
}

impl SdkModel for JavaScript {
    fn profile(&self) -> &'static Profile {
        &PROFILE
    }

    fn begin(&mut self, _now: SystemTime, session: &Value, file_size: u64) -> Step {
        self.size = file_size;
        // createUploadSession: `url: session.uploadUrl` (camelCase only).
        let Some(upload_url) = prop(session, "uploadUrl").and_then(Value::as_str) else {
            return type_error("undefined", "indexOf");
        };
        self.url = match full_url(upload_url) {
            Ok(url) => url,
            Err(misdirected) => {
                return Step::fail(
                    format!(
                        "the uploadUrl is not https://: GraphRequest.parsePath sends the slices \
                         to {misdirected}"
                    ),
                    "uploadUrl not https://: slices go to graph.microsoft.com (parsePath)",
                );
            }
        };
        self.next_range = Some(Range {
            min: Some(0),
            max: i64::try_from(CHUNK).ok().map(|c| c - 1),
        });
        self.next_slice()
    }

    fn on_answer(&mut self, now: SystemTime, answer: &Answer) -> Step {
        match self.in_flight.take() {
            Some(InFlight::Slice) => self.after_answer(answer),
            Some(InFlight::Status) => {
                if let Retry::After(delay) = self.retry.judge(now, answer) {
                    self.in_flight = Some(InFlight::Status);
                    return Step::Wait(delay);
                }
                self.after_status(answer)
            }
            None => Step::fail("Error: no request in flight", "model misused"),
        }
    }

    fn on_transport_error(&mut self, what: &str) -> Step {
        if self.in_flight.take() == Some(InFlight::Status) {
            // `GraphRequest.send` wraps whatever fetch threw.
            return Step::fail(
                format!("GraphError: fetch failed ({what})"),
                "GraphError: fetch failed",
            );
        }
        Step::fail(
            format!("TypeError: fetch failed ({what})"),
            "TypeError: fetch failed",
        )
    }

    fn on_wait_over(&mut self) -> Step {
        // The retry handler resends `getStatus()`'s GET; it never sees a slice.
        match (self.in_flight, self.retry.resend()) {
            (Some(InFlight::Status), Some(resend)) => resend,
            _ => Step::fail("Error: no wait", "model misused"),
        }
    }

    fn resume(&mut self) -> Step {
        if self.url.is_empty() {
            return type_error("undefined", "url");
        }
        self.in_flight = Some(InFlight::Status);
        self.retry.send(Request::get(&self.url))
    }
}

/// `GraphResponseHandler.convertResponse` without a response type.
fn convert_response(answer: &Answer) -> Result<JsBody, Step> {
    if answer.status == 204 {
        return Ok(JsBody::Undefined);
    }
    // `contentType.split(";")[0] === "application/json"`: exact, case-sensitive.
    if answer.media_type() != Some("application/json") {
        return Ok(JsBody::Opaque);
    }
    match serde_json::from_slice(&answer.body) {
        Ok(v) => Ok(JsBody::Json(v)),
        Err(_) if answer.body.is_empty() => Err(Step::fail(
            "SyntaxError: Unexpected end of JSON input",
            "SyntaxError on an empty JSON body",
        )),
        Err(_) => Err(Step::fail(
            "SyntaxError: Unexpected token in JSON",
            "SyntaxError on the body",
        )),
    }
}

/// The body `updateTaskStatus` reads properties of, JSON or not (`None`): reading
/// its `expirationDateTime` throws when it is `undefined` or `null`.
fn status_of(body: JsBody) -> Result<Option<Value>, Step> {
    match body {
        JsBody::Undefined => Err(type_error("undefined", "expirationDateTime")),
        JsBody::Json(Value::Null) => Err(type_error("null", "expirationDateTime")),
        JsBody::Json(v) => Ok(Some(v)),
        JsBody::Opaque => Ok(None),
    }
}

/// A property of a JSON value as JavaScript reads it (`undefined` is `None`).
fn prop<'a>(value: &'a Value, name: &str) -> Option<&'a Value> {
    match value {
        Value::Object(map) => map.get(name),
        _ => None,
    }
}

/// JavaScript truthiness of a property value.
fn truthy(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(_) | Value::Object(_)) => true,
    }
}

/// `TypeError: Cannot read properties of {what} (reading '{name}')`.
fn type_error(what: &str, name: &str) -> Step {
    Step::fail(
        format!("TypeError: Cannot read properties of {what} (reading '{name}')"),
        format!("TypeError reading '{name}' of {what}"),
    )
}

/// `parseInt(text, 10)`: leading whitespace, a sign, then as many digits as there
/// are; `NaN` (`None`) without any.
fn parse_int(text: &str) -> Num {
    let t = text.trim_start();
    let (negative, rest) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let digits: &str = &rest[..rest.bytes().take_while(u8::is_ascii_digit).count()];
    if digits.is_empty() {
        return None;
    }
    let value = digits.bytes().fold(0_i64, |acc, d| {
        acc.saturating_mul(10).saturating_add(i64::from(d - b'0'))
    });
    Some(if negative { -value } else { value })
}

/// A number as a template string prints it.
fn js(n: Num) -> String {
    n.map_or_else(|| "NaN".to_owned(), |v| v.to_string())
}

fn size_i64(size: u64) -> i64 {
    i64::try_from(size).unwrap_or(i64::MAX)
}

/// `client.api(url)` then `buildFullUrl()`: the URL the slice is really sent to.
/// `Err` carries that URL when it is not the upload host (no `https://`).
fn full_url(upload_url: &str) -> Result<String, String> {
    let mut host = "https://graph.microsoft.com/".to_owned();
    let mut version = "v1.0";
    let https = upload_url.contains("https://");
    let stripped = upload_url.replacen("https://", "", 1);
    let mut path = if https { stripped.as_str() } else { upload_url };
    if https {
        if let Some(end) = path.find('/') {
            host = format!("https://{}", &path[..end]);
            path = &path[end + 1..];
        }
        if let Some(end) = path.find('/') {
            version = &path[..end];
            path = &path[end + 1..];
        }
    }
    let path = path.strip_prefix('/').unwrap_or(path);
    let (path, query) = match path.split_once('?') {
        Some((p, q)) => (p, rebuild_query(q)),
        None => (path, String::new()),
    };
    let url = [host.as_str(), version, path]
        .into_iter()
        .map(str::to_owned)
        .reduce(|pre, cur| {
            format!(
                "{}/{}",
                pre.trim_end_matches('/'),
                cur.trim_start_matches('/')
            )
        })
        .unwrap_or_default()
        + &query;
    if https { Ok(url) } else { Err(url) }
}

/// `parseQueryParamenterString` for each `&`-piece, then `createQueryString`:
/// OData parameters, then others (JavaScript object key order: integer-like keys
/// first, ascending, then insertion order; a repeated key keeps its first place and
/// its last value, or joins `$select`/`$expand`/`$orderby` values with commas),
/// then pieces that are not `key=value`.
fn rebuild_query(query: &str) -> String {
    let mut odata: Vec<(String, String)> = Vec::new();
    let mut other: Vec<(String, String)> = Vec::new();
    let mut options: Vec<String> = Vec::new();
    for piece in query.split('&') {
        let eq = piece.find('=');
        let paren = piece.find('(');
        match eq {
            Some(i) if paren.is_none_or(|p| p >= i) => {
                let (key, value) = (&piece[..i], &piece[i + 1..]);
                if ODATA_QUERY_NAMES.contains(&key) {
                    let csv = matches!(key, "$expand" | "$select" | "$orderby");
                    upsert(&mut odata, key, value, csv);
                } else {
                    upsert(&mut other, key, value, false);
                }
            }
            _ => options.push(piece.to_owned()),
        }
    }
    let mut query: Vec<String> = Vec::new();
    for dict in [odata, other] {
        let (mut index, named): (Vec<_>, Vec<_>) = dict
            .into_iter()
            .partition(|(k, _)| array_index(k).is_some());
        index.sort_by_key(|(k, _)| array_index(k));
        query.extend(
            index
                .into_iter()
                .chain(named)
                .map(|(k, v)| format!("{k}={v}")),
        );
    }
    query.extend(options);
    if query.is_empty() {
        String::new()
    } else {
        format!("?{}", query.join("&"))
    }
}

/// Sets `key` in an insertion-ordered dictionary.
fn upsert(dict: &mut Vec<(String, String)>, key: &str, value: &str, csv: bool) {
    match dict.iter_mut().find(|(k, _)| k == key) {
        Some((_, v)) if csv && !v.is_empty() => *v = format!("{v},{value}"),
        Some((_, v)) => value.clone_into(v),
        None => dict.push((key.to_owned(), value.to_owned())),
    }
}

/// A key JavaScript orders as an array index: a canonical integer below 2^32 - 1.
fn array_index(key: &str) -> Option<u32> {
    let n: u32 = key.parse().ok()?;
    (n < u32::MAX && n.to_string() == key).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sdk::test_support::{
        MIB, Script, URL, bare, closed, created, done, error, open, pascal,
    };

    #[test]
    fn every_range_form_and_casing_is_followed_from_its_start() {
        let s = 12 * MIB;
        let forms: [&dyn Fn(u64) -> Answer; 4] = [&|next| closed(next, s), &open, &bare, &|next| {
            pascal(&format!("{next}-"))
        }];
        for form in forms {
            let location = Script::new(JavaScript::new(), s)
                .sends("bytes 0-5242879/12582912", Body::file(0, 5 * MIB))
                .answer(form(5 * MIB))
                .sends(
                    "bytes 5242880-10485759/12582912",
                    Body::file(5 * MIB, 5 * MIB),
                )
                .answer(form(10 * MIB))
                .sends(
                    "bytes 10485760-12582911/12582912",
                    Body::file(10 * MIB, 2 * MIB),
                )
                .answer(done())
                .ends();
            assert!(location.unwrap().ends_with("/attachments/a"));
        }
    }

    #[test]
    fn an_http_upload_url_is_sent_to_graph_instead() {
        let session = Answer::json(
            201,
            &serde_json::json!({"uploadUrl": "http://127.0.0.1:8080/uploads/s?authtoken=x", "expirationDateTime": "x"}),
        );
        let f = Script::with_session(JavaScript::new(), 3_000_000, &session)
            .fails_with("the uploadUrl is not https://");
        assert!(f.exception.contains(
            "https://graph.microsoft.com/v1.0/http://127.0.0.1:8080/uploads/s?authtoken=x"
        ));
    }

    #[test]
    fn the_query_string_is_rebuilt_from_dictionaries() {
        assert_eq!(full_url(URL).as_deref(), Ok(URL));
        assert_eq!(
            full_url("https://h/api/v2.0/x?b=1&$top=2&a&b=3&2=z&$select=a&$select=b").as_deref(),
            Ok("https://h/api/v2.0/x?$top=2&$select=a,b&2=z&b=3&a")
        );
    }

    #[test]
    fn errors_are_thrown_as_their_body_and_an_empty_range_list_ends_the_task() {
        let first_sent = || {
            Script::new(JavaScript::new(), 15 * MIB + 1)
                .sends("bytes 0-5242879/15728641", Body::file(0, 5 * MIB))
        };
        first_sent()
            .answer(error(413, "invalidRequest"))
            .fails_with("the error body of the 413 answer");
        first_sent()
            .answer(Answer::json(
                202,
                &serde_json::json!({"nextExpectedRanges": []}),
            ))
            .fails_with("Invalid Session");
        first_sent()
            .answer(Answer::json(
                200,
                &serde_json::json!({"expirationDateTime": "x"}),
            ))
            .fails_with("TypeError: Cannot read properties of undefined (reading '0')");
    }

    #[test]
    fn a_200_with_an_id_completes_and_the_session_ranges_are_ignored() {
        let s = 6 * MIB;
        Script::with_session(JavaScript::new(), s, &created(&["1048576-"]))
            .sends("bytes 0-5242879/6291456", Body::file(0, 5 * MIB))
            .answer(Answer::json(200, &serde_json::json!({"id": "AAMk"})))
            .ends();
    }

    #[test]
    fn parse_int_reads_a_prefix() {
        assert_eq!(parse_int(" 12abc"), Some(12));
        assert_eq!(parse_int("-3"), Some(-3));
        assert_eq!(parse_int(""), None);
    }

    #[test]
    fn resume_asks_the_status_and_uploads_from_its_first_range() {
        let s = 15 * MIB;
        let failed = || {
            Script::new(JavaScript::new(), s)
                .answer(closed(5 * MIB, s))
                .transport_error()
                .resumes("TypeError: fetch failed")
        };
        failed().answer(open(5 * MIB)).sends(
            "bytes 5242880-10485759/15728640",
            Body::file(5 * MIB, 5 * MIB),
        );
        failed()
            .answer(error(404, "itemNotFound"))
            .fails_with("GraphError");
        // `getStatus()` reads camelCase only.
        let f = failed().answer(pascal("5242880-")).fails_with("TypeError");
        assert!(f.exception.contains("(reading '0')"), "{f:?}");
    }
}
