//! Graph's JSON bodies: what the server writes and what the client reads back.
//!
//! Writers are tidy (camelCase, the closed range form, seven-digit UTC times); readers
//! are lenient the way real Graph needs (PascalCase, `@odata.*` extras, open ranges).
//! Serde lives here and on the snapshot types only, never on a state machine.

use std::time::SystemTime;

use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{CreateError, GraphError, RemoteError};
use crate::header::{ExpectedRangeError, format_expected_ranges, parse_expected_ranges};
use crate::range::RangeSet;
use crate::time::{format_graph_time, parse_graph_time};

/// Graph's `uploadSession` resource.
///
/// Serialises in camelCase; deserialises camelCase or PascalCase, ignoring
/// `@odata.*` and other extra properties.
///
/// ```
/// use upsession_core::{ByteRange, RangeSet, wire::UploadSession};
/// use std::time::UNIX_EPOCH;
///
/// let expected = RangeSet::from_range(ByteRange::new(0, 5_000_000).unwrap());
/// let s = UploadSession::new(None, UNIX_EPOCH, &expected);
/// assert_eq!(
///     serde_json::to_string(&s).unwrap(),
///     r#"{"expirationDateTime":"1970-01-01T00:00:00.0000000Z","nextExpectedRanges":["0-4999999"]}"#
/// );
///
/// let back: UploadSession =
///     serde_json::from_str(r#"{"@odata.context":"x","ExpirationDateTime":"2026-01-01T00:00:00Z","NextExpectedRanges":["4096"]}"#).unwrap();
/// assert_eq!(back.next_expected(5_000_000).unwrap().ranges(), &[ByteRange::new(4096, 5_000_000).unwrap()]);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct UploadSession {
    /// The URL fragments are `PUT` to. Present when a session is created.
    #[serde(default, alias = "UploadUrl", skip_serializing_if = "Option::is_none")]
    pub upload_url: Option<String>,
    /// When the session expires, as Graph writes it.
    #[serde(
        default,
        alias = "ExpirationDateTime",
        skip_serializing_if = "Option::is_none"
    )]
    pub expiration_date_time: Option<String>,
    /// The ranges still expected, in any form a peer writes; `None` when the answer
    /// had no such property (which a progress answer must have).
    #[serde(default, alias = "NextExpectedRanges")]
    pub next_expected_ranges: Option<Vec<String>>,
    /// Present only on a completion answer that carries the finished item (OneDrive
    /// style); never written by our server on a 200.
    #[serde(default, alias = "Id", skip_serializing)]
    pub id: Option<Value>,
}

impl UploadSession {
    /// The body our server writes.
    pub fn new(upload_url: Option<String>, expires: SystemTime, expected: &RangeSet) -> Self {
        Self {
            upload_url,
            expiration_date_time: Some(format_graph_time(expires)),
            next_expected_ranges: Some(format_expected_ranges(expected)),
            id: None,
        }
    }

    /// The expiry, if present and readable.
    pub fn expires(&self) -> Option<SystemTime> {
        self.expiration_date_time
            .as_deref()
            .and_then(parse_graph_time)
    }

    /// The expected ranges as a set within `0..total`.
    pub fn next_expected(&self, total: u64) -> Result<RangeSet, ExpectedRangeError> {
        parse_expected_ranges(self.next_expected_ranges.iter().flatten(), total)
    }
}

/// The `AttachmentItem` of a createUploadSession request.
///
/// Its `Deserialize` is the strict camelCase form, for records; requests from peers
/// are read with [`AttachmentItem::from_request_json`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct AttachmentItem {
    /// Always `file` for upload sessions.
    pub attachment_type: String,
    /// The attachment's display name.
    pub name: String,
    /// Size of the whole file in bytes.
    pub size: u64,
    /// MIME type; Graph guesses one when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// Whether the attachment is shown inline in the body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_inline: Option<bool>,
    /// The `cid:` an HTML body refers to, for inline attachments.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_id: Option<String>,
}

impl AttachmentItem {
    /// A file attachment of `name` and `size`, with no optional properties.
    pub fn file(name: impl Into<String>, size: u64) -> Self {
        Self {
            attachment_type: "file".into(),
            name: name.into(),
            size,
            content_type: None,
            is_inline: None,
            content_id: None,
        }
    }

    crate::setters! {
        /// Sets the MIME type.
        with_content_type(content_type: impl Into<String>)
            => content_type = Some(content_type.into());
        /// Marks the attachment inline with the given content id.
        inline(content_id: impl Into<String>)
            => is_inline = Some(true), content_id = Some(content_id.into());
    }

    /// The request body for createUploadSession, as Graph's documents write it.
    pub fn to_request_json(&self) -> Value {
        serde_json::json!({ "AttachmentItem": self })
    }

    /// Reads a createUploadSession body. Property names match case-insensitively at
    /// every level (`AttachmentItem`, `attachmentItem`, `Name`, …); unknown
    /// properties are ignored. The item is checked for what Graph would refuse
    /// regardless of size limits, which are the session's concern.
    ///
    /// ```
    /// use upsession_core::wire::AttachmentItem;
    ///
    /// let item = AttachmentItem::from_request_json(
    ///     br#"{"attachmentItem":{"AttachmentType":"file","name":"a.bin","size":3500000}}"#,
    /// ).unwrap();
    /// assert_eq!((item.name.as_str(), item.size), ("a.bin", 3_500_000));
    /// ```
    pub fn from_request_json(body: &[u8]) -> Result<Self, CreateError> {
        #[derive(Deserialize)]
        struct Lower {
            attachmenttype: Option<String>,
            name: Option<String>,
            size: Option<u64>,
            contenttype: Option<String>,
            isinline: Option<bool>,
            contentid: Option<String>,
        }
        let invalid = |m: String| CreateError::InvalidBody(m);
        let value: Value = serde_json::from_slice(body).map_err(|e| invalid(e.to_string()))?;
        let Value::Object(top) = lowercase_keys(value) else {
            return Err(invalid("expected a JSON object".into()));
        };
        let item = top
            .get("attachmentitem")
            .cloned()
            .ok_or_else(|| invalid("missing the AttachmentItem property".into()))?;
        let l: Lower = serde_json::from_value(item).map_err(|e| invalid(e.to_string()))?;
        let attachment_type = l.attachmenttype.unwrap_or_else(|| "file".into());
        if !attachment_type.eq_ignore_ascii_case("file") {
            return Err(CreateError::UnsupportedAttachmentType(attachment_type));
        }
        let name = l
            .name
            .ok_or_else(|| invalid("AttachmentItem.name is required".into()))?;
        let size = l
            .size
            .ok_or_else(|| invalid("AttachmentItem.size is required".into()))?;
        Self::checked(name, size, l.contenttype, l.isinline, l.contentid)
    }

    /// A file attachment from a request's properties, refused as Graph would: a
    /// name that is empty, too long or has control characters; inline without a
    /// content id.
    fn checked(
        name: String,
        size: u64,
        content_type: Option<String>,
        is_inline: Option<bool>,
        content_id: Option<String>,
    ) -> Result<Self, CreateError> {
        if name.trim().is_empty() || name.chars().any(char::is_control) || name.len() > 1024 {
            return Err(CreateError::InvalidName);
        }
        if is_inline == Some(true) && content_id.as_deref().is_none_or(str::is_empty) {
            return Err(CreateError::MissingContentId);
        }
        Ok(Self {
            attachment_type: "file".into(),
            name,
            size,
            content_type: content_type.filter(|c| !c.is_empty()),
            is_inline,
            content_id,
        })
    }
}

/// A small file attachment as `POST …/{id}/attachments` carries it: Graph's
/// `#microsoft.graph.fileAttachment` with the bytes as base64 `contentBytes`, for
/// files below the upload-session minimum.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct NewFileAttachment {
    /// Name, content type, inline and content id; `size` is the bytes' length.
    pub item: AttachmentItem,
    /// The file's bytes.
    pub bytes: Vec<u8>,
}

impl NewFileAttachment {
    /// The largest attachment this request takes: 3 MiB (3,145,728 bytes), the
    /// generous reading of Graph's "under 3 MB" (the unit is never defined).
    pub const MAX_SIZE: u64 = 3 * 1024 * 1024;

    /// The attachment `item` (its size is taken from `bytes`) with `bytes`.
    pub fn new(mut item: AttachmentItem, bytes: Vec<u8>) -> Self {
        item.size = bytes.len() as u64;
        Self { item, bytes }
    }

    /// The request body, as Graph's documents write it (camelCase, base64 with
    /// padding).
    pub fn to_request_json(&self) -> Value {
        use base64::Engine as _;
        let item = &self.item;
        let mut json = serde_json::json!({
            "@odata.type": "#microsoft.graph.fileAttachment",
            "name": item.name,
            "contentBytes": base64::engine::general_purpose::STANDARD.encode(&self.bytes),
        });
        let object = json.as_object_mut().expect("a JSON object");
        if let Some(t) = &item.content_type {
            object.insert("contentType".into(), t.clone().into());
        }
        if let Some(inline) = item.is_inline {
            object.insert("isInline".into(), inline.into());
        }
        if let Some(cid) = &item.content_id {
            object.insert("contentId".into(), cid.clone().into());
        }
        json
    }

    /// Reads a `POST …/attachments` body. Property names match case-insensitively;
    /// unknown ones are ignored. `@odata.type` must name a file attachment, `name`
    /// and `contentBytes` (standard base64) are required and the bytes must not be
    /// empty; size limits are the caller's ([`NewFileAttachment::MAX_SIZE`]).
    ///
    /// ```
    /// use upsession_core::wire::NewFileAttachment;
    ///
    /// let new = NewFileAttachment::from_request_json(
    ///     br##"{"@odata.type":"#microsoft.graph.fileAttachment","name":"a.txt","contentBytes":"aGk="}"##,
    /// ).unwrap();
    /// assert_eq!((new.item.name.as_str(), new.bytes.as_slice()), ("a.txt", &b"hi"[..]));
    /// assert!(NewFileAttachment::from_request_json(br#"{"name":"a.txt","contentBytes":"%%"}"#).is_err());
    /// ```
    pub fn from_request_json(body: &[u8]) -> Result<Self, CreateError> {
        use base64::Engine as _;
        #[derive(Deserialize)]
        struct Lower {
            #[serde(rename = "@odata.type")]
            odata_type: Option<String>,
            name: Option<String>,
            contentbytes: Option<String>,
            contenttype: Option<String>,
            isinline: Option<bool>,
            contentid: Option<String>,
        }
        let invalid = |m: &str| CreateError::InvalidBody(m.to_owned());
        let value: Value = serde_json::from_slice(body).map_err(|e| invalid(&e.to_string()))?;
        let l: Lower =
            serde_json::from_value(lowercase_keys(value)).map_err(|e| invalid(&e.to_string()))?;
        let kind = l
            .odata_type
            .ok_or_else(|| invalid("@odata.type is required (#microsoft.graph.fileAttachment)"))?;
        if !kind.eq_ignore_ascii_case("#microsoft.graph.fileAttachment") {
            return Err(CreateError::UnsupportedAttachmentType(kind));
        }
        let name = l.name.ok_or_else(|| invalid("name is required"))?;
        let encoded = l
            .contentbytes
            .ok_or_else(|| invalid("contentBytes is required"))?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|e| invalid(&format!("contentBytes is not base64: {e}")))?;
        if bytes.is_empty() {
            return Err(invalid(
                "contentBytes is empty; an attachment needs at least one byte",
            ));
        }
        let size = bytes.len() as u64;
        let item = AttachmentItem::checked(name, size, l.contenttype, l.isinline, l.contentid)?;
        Ok(Self { item, bytes })
    }
}

/// Returns `value` with every object key lower-cased (ASCII), recursively.
fn lowercase_keys(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), lowercase_keys(v)))
                .collect::<Map<_, _>>(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(lowercase_keys).collect()),
        other => other,
    }
}

/// Graph's `fileAttachment` resource, as listed and fetched.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct FileAttachment {
    /// Always `#microsoft.graph.fileAttachment`.
    #[serde(rename = "@odata.type")]
    pub odata_type: String,
    /// The attachment id.
    pub id: String,
    /// When the upload completed (RFC 3339, UTC).
    pub last_modified_date_time: String,
    /// Display name.
    pub name: String,
    /// MIME type.
    pub content_type: String,
    /// Size in bytes.
    pub size: u64,
    /// Whether it is an inline attachment.
    pub is_inline: bool,
    /// Content id for inline attachments.
    pub content_id: Option<String>,
}

impl FileAttachment {
    /// The resource for an attachment that completed at `modified`.
    pub fn new(id: String, item: &AttachmentItem, modified: SystemTime) -> Self {
        Self {
            odata_type: "#microsoft.graph.fileAttachment".into(),
            id,
            last_modified_date_time: format_graph_time(modified),
            name: item.name.clone(),
            content_type: item
                .content_type
                .clone()
                .unwrap_or_else(|| "application/octet-stream".into()),
            size: item.size,
            is_inline: item.is_inline.unwrap_or(false),
            content_id: item.content_id.clone(),
        }
    }
}

/// A draft message or an event: the parent an attachment hangs on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Item {
    /// The item id.
    #[serde(alias = "Id")]
    pub id: String,
    /// Subject line.
    #[serde(default, alias = "Subject")]
    pub subject: String,
    /// When it was created (RFC 3339, UTC).
    #[serde(default, alias = "CreatedDateTime")]
    pub created_date_time: String,
    /// Whether any attachment has completed on it.
    #[serde(default, alias = "HasAttachments")]
    pub has_attachments: bool,
}

impl Item {
    /// An item created at `created`.
    pub fn new(id: String, subject: String, created: SystemTime) -> Self {
        Self {
            id,
            subject,
            created_date_time: format_graph_time(created),
            has_attachments: false,
        }
    }

    /// Reads the `subject` of a `POST /me/messages` or `/me/events` body
    /// (case-insensitive; other properties are ignored).
    pub fn subject_from_request_json(body: &[u8]) -> Result<String, CreateError> {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| CreateError::InvalidBody(e.to_string()))?;
        match lowercase_keys(value) {
            Value::Object(map) => match map.get("subject") {
                Some(Value::String(s)) => Ok(s.clone()),
                Some(_) => Err(CreateError::InvalidBody("subject must be a string".into())),
                None => Err(CreateError::InvalidBody("subject is required".into())),
            },
            _ => Err(CreateError::InvalidBody("expected a JSON object".into())),
        }
    }
}

/// A Graph collection: `{"value": [...]}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Collection<T> {
    /// The members.
    pub value: Vec<T>,
}

/// Graph's error body: `{"error": {"code", "message", "innerError": {"code"?, "request-id", "date"}}}`.
///
/// The top-level code is Graph's broad one; the detailed code of upload sessions
/// goes in `innerError.code`, as the live service answers. Readers take
/// `innerError` in any casing (the docs' schema writes `innererror`).
///
/// ```
/// use std::time::UNIX_EPOCH;
/// use upsession_core::{error::RequestError, wire::ErrorBody};
///
/// let body = ErrorBody::new(&RequestError::SessionNotFound, "req-1", UNIX_EPOCH);
/// let json = serde_json::to_value(&body).unwrap();
/// assert_eq!(json["error"]["code"], "itemNotFound");
/// assert_eq!(json["error"]["innerError"]["code"], "uploadSessionNotFound");
/// assert_eq!(json["error"]["innerError"]["request-id"], "req-1");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// The `error` object of [`ErrorBody`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ErrorDetail {
    /// Machine-readable code, e.g. `invalidRange`.
    #[serde(alias = "Code")]
    pub code: String,
    /// Human-readable message.
    #[serde(default, alias = "Message")]
    pub message: String,
    /// Request correlation.
    #[serde(
        default,
        alias = "innererror",
        alias = "InnerError",
        skip_serializing_if = "Option::is_none"
    )]
    pub inner_error: Option<InnerError>,
}

/// The `innerError` object of [`ErrorDetail`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct InnerError {
    /// The detailed code, e.g. `fragmentOverlap`, where Graph has one.
    #[serde(default, alias = "Code", skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// The server's id for the request.
    #[serde(rename = "request-id", default)]
    pub request_id: Option<String>,
    /// When the error happened (RFC 3339, UTC).
    #[serde(default)]
    pub date: Option<String>,
}

impl ErrorBody {
    /// The body for `err`, stamped with the request id and the time of the answer.
    pub fn new<E: GraphError + ?Sized>(err: &E, request_id: &str, now: SystemTime) -> Self {
        Self {
            error: ErrorDetail {
                code: err.code().into(),
                message: err.to_string(),
                inner_error: Some(InnerError {
                    code: err.inner_code().map(Into::into),
                    request_id: Some(request_id.into()),
                    // Graph writes whole seconds here.
                    date: Some(format_graph_time(whole_seconds(now)).replace(".0000000Z", "Z")),
                }),
            },
        }
    }
}

/// `t` without its fraction of a second (times before 1970 become 1970).
fn whole_seconds(t: SystemTime) -> SystemTime {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs)
}

impl RemoteError {
    /// Reads an error answer; a body that is not Graph's JSON still yields an error
    /// carrying the status and a short excerpt of the body.
    pub fn from_response(status: StatusCode, body: &[u8], request_id_header: Option<&str>) -> Self {
        match serde_json::from_slice::<ErrorBody>(body) {
            Ok(parsed) => {
                let (inner_code, request_id) = parsed
                    .error
                    .inner_error
                    .map_or((None, None), |i| (i.code, i.request_id));
                Self {
                    status,
                    code: parsed.error.code,
                    inner_code,
                    message: parsed.error.message,
                    request_id: request_id.or_else(|| request_id_header.map(str::to_owned)),
                }
            }
            Err(_) => Self {
                status,
                code: status.canonical_reason().unwrap_or("error").to_owned(),
                inner_code: None,
                message: String::from_utf8_lossy(&body[..body.len().min(200)])
                    .trim()
                    .to_owned(),
                request_id: request_id_header.map(str::to_owned),
            },
        }
    }
}

#[cfg(test)]
#[allow(clippy::pedantic)] // test code favours brevity over pedantry
mod tests {
    use super::*;
    use crate::error::FragmentError;

    #[test]
    fn attachment_item_keys_are_case_insensitive_at_every_level() {
        for body in [
            r#"{"AttachmentItem":{"attachmentType":"file","name":"n","size":5}}"#,
            r#"{"attachmentItem":{"ATTACHMENTTYPE":"File","NAME":"n","Size":5}}"#,
            r#"{"ATTACHMENTITEM":{"name":"n","size":5},"@odata.type":"x"}"#,
        ] {
            let item = AttachmentItem::from_request_json(body.as_bytes()).unwrap();
            assert_eq!((item.name.as_str(), item.size), ("n", 5), "{body}");
        }
    }

    #[test]
    fn attachment_item_refusals_say_why() {
        let check = |body: &str, expected: fn(&CreateError) -> bool| {
            let err = AttachmentItem::from_request_json(body.as_bytes()).unwrap_err();
            assert!(expected(&err), "{body}: {err:?}");
        };
        check("", |e| matches!(e, CreateError::InvalidBody(_)));
        check("[]", |e| matches!(e, CreateError::InvalidBody(_)));
        check(r#"{"item":{}}"#, |e| {
            matches!(e, CreateError::InvalidBody(_))
        });
        check(r#"{"AttachmentItem":{"name":"n","size":-1}}"#, |e| {
            matches!(e, CreateError::InvalidBody(_))
        });
        check(r#"{"AttachmentItem":{"name":"n","size":"5"}}"#, |e| {
            matches!(e, CreateError::InvalidBody(_))
        });
        check(r#"{"AttachmentItem":{"size":5}}"#, |e| {
            matches!(e, CreateError::InvalidBody(_))
        });
        check(r#"{"AttachmentItem":{"name":"","size":5}}"#, |e| {
            *e == CreateError::InvalidName
        });
        check(r#"{"AttachmentItem":{"name":"a\u0000b","size":5}}"#, |e| {
            *e == CreateError::InvalidName
        });
        check(
            r#"{"AttachmentItem":{"attachmentType":"reference","name":"n","size":5}}"#,
            |e| matches!(e, CreateError::UnsupportedAttachmentType(_)),
        );
        check(
            r#"{"AttachmentItem":{"name":"n","size":5,"isInline":true}}"#,
            |e| *e == CreateError::MissingContentId,
        );
    }

    #[test]
    fn request_json_round_trips_through_the_reader() {
        let item = AttachmentItem::file("report.pdf", 7_000_000)
            .with_content_type("application/pdf")
            .inline("cid1");
        let body = serde_json::to_vec(&item.to_request_json()).unwrap();
        assert_eq!(AttachmentItem::from_request_json(&body).unwrap(), item);
    }

    #[test]
    fn upload_session_json_never_carries_an_id() {
        let mut s = UploadSession::new(None, SystemTime::UNIX_EPOCH, &RangeSet::new());
        s.id = Some(Value::String("x".into()));
        let json = serde_json::to_value(&s).unwrap();
        assert!(json.get("id").is_none());
    }

    #[test]
    fn error_dates_are_whole_seconds_in_utc() {
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_790_000_000_123);
        let body = ErrorBody::new(&FragmentError::Busy, "abc", at);
        let date = body.error.inner_error.unwrap().date.unwrap();
        assert_eq!(date, "2026-09-21T14:13:20Z");
    }

    #[test]
    fn remote_error_reads_graph_json_and_plain_text() {
        let body = ErrorBody::new(&FragmentError::Busy, "abc", SystemTime::UNIX_EPOCH);
        let bytes = serde_json::to_vec(&body).unwrap();
        let e = RemoteError::from_response(StatusCode::CONFLICT, &bytes, None);
        assert_eq!(
            (e.code.as_str(), e.inner_code.as_deref()),
            ("invalidRange", Some("fragmentInProgress"))
        );
        assert_eq!(e.request_id.as_deref(), Some("abc"));
        assert!(
            e.to_string().contains("invalidRange/fragmentInProgress"),
            "{e}"
        );
        // The docs' schema spelling, as OneDrive answered it.
        let lower = br#"{"error":{"code":"invalidRange","message":"Uploaded fragment overlaps with existing data.","innererror":{"code":"fragmentOverlap"}}}"#;
        let e = RemoteError::from_response(StatusCode::RANGE_NOT_SATISFIABLE, lower, None);
        assert_eq!(e.inner_code.as_deref(), Some("fragmentOverlap"));
        let e =
            RemoteError::from_response(StatusCode::BAD_GATEWAY, b"<html>oops</html>", Some("h"));
        assert_eq!(e.code, "Bad Gateway");
        assert_eq!(e.request_id.as_deref(), Some("h"));
    }
}
