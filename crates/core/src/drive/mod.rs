//! OneDrive's side of upload sessions, as data: the body of a drive item's
//! `createUploadSession` ([`DriveUpload`], with its [`ConflictBehavior`]), the name
//! a `rename` conflict gives ([`renamed`]), and the `driveItem` a completed upload
//! answers ([`DriveItem`]); a drive's folders and files ([`Tree`], in [`tree`]) and
//! the hashes taken while a file streams in ([`ContentHasher`], in [`hash`]). The
//! routes are [`crate::route::DrivePath`]; the file hash is [`crate::quickxor`].
//!
//! ```
//! use upsession_core::drive::{ConflictBehavior, DriveUpload};
//!
//! let up = DriveUpload::from_request(
//!     br#"{"item": {"@microsoft.graph.conflictBehavior": "rename", "name": "q3.xlsx"}}"#,
//!     None,
//! ).unwrap();
//! assert_eq!(up.conflict, ConflictBehavior::Rename);
//! assert_eq!(up.name.as_deref(), Some("q3.xlsx"));
//! ```

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::CreateError;

pub mod hash;
pub mod tree;

pub use hash::ContentHasher;
pub use tree::{Entry, FileEntry, NewFile, Put, Target, Tree, valid_name};

/// The largest file a drive upload takes: OneDrive's 250 GB.
pub const MAX_FILE_SIZE: u64 = 250_000_000_000;

/// The type of every drive upsession serves (`parentReference.driveType`).
pub const DRIVE_TYPE: &str = "business";

/// What a new file does when its name is taken (`@microsoft.graph.conflictBehavior`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ConflictBehavior {
    /// Refuse: 409 `nameAlreadyExists`.
    Fail,
    /// Replace the existing file's bytes (a new version of the same item). Taken
    /// when the request names no behaviour, as OneDrive's `PUT …/content` documents
    /// (its upload-session page does not say).
    #[default]
    Replace,
    /// Take a free name (`report 1.pdf`).
    Rename,
}

impl ConflictBehavior {
    /// Reads `fail`, `replace` or `rename` (any case).
    #[must_use]
    pub fn by_name(name: &str) -> Option<Self> {
        [
            ("fail", Self::Fail),
            ("replace", Self::Replace),
            ("rename", Self::Rename),
        ]
        .into_iter()
        .find_map(|(n, b)| n.eq_ignore_ascii_case(name.trim()).then_some(b))
    }
}

/// The query parameter (and body property) naming the conflict behaviour.
pub const CONFLICT_PARAM: &str = "@microsoft.graph.conflictBehavior";

/// A drive item's `createUploadSession` request: `{"item": {…}, "deferCommit": …}`,
/// every part optional. OneDrive also takes the conflict behaviour in the query
/// string (its docs say so for `driveItem` writes), which wins over the body.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DriveUpload {
    /// What to do when the name is taken.
    pub conflict: ConflictBehavior,
    /// The file's name, when the body gives one (it must match the path's).
    pub name: Option<String>,
    /// The file's size, when the body gives one (checked against the
    /// `Content-Range` totals).
    pub file_size: Option<u64>,
    /// A description.
    pub description: Option<String>,
    /// The file is created only by an explicit commit (an empty `POST` to the
    /// uploadUrl) after its last byte.
    pub defer_commit: bool,
}

impl DriveUpload {
    /// Reads the request's `body` (empty is fine) and its `query`.
    ///
    /// # Errors
    /// [`CreateError::InvalidBody`] for JSON that is not an object, a property of
    /// the wrong type, or an unknown conflict behaviour.
    pub fn from_request(body: &[u8], query: Option<&str>) -> Result<Self, CreateError> {
        let invalid = |m: String| CreateError::InvalidBody(m);
        let mut up = Self::default();
        let body =
            std::str::from_utf8(body).map_err(|_| invalid("the body is not UTF-8".into()))?;
        if !body.trim().is_empty() {
            let value: Value = serde_json::from_str(body).map_err(|e| invalid(e.to_string()))?;
            let Value::Object(top) = value else {
                return Err(invalid("expected a JSON object".into()));
            };
            let find = |map: &serde_json::Map<String, Value>, key: &str| {
                map.iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(key))
                    .map(|(_, v)| v.clone())
            };
            if let Some(defer) = find(&top, "deferCommit") {
                up.defer_commit = defer
                    .as_bool()
                    .ok_or_else(|| invalid("deferCommit must be true or false".into()))?;
            }
            match find(&top, "item") {
                None | Some(Value::Null) => {}
                Some(Value::Object(item)) => {
                    let text = |key: &str| -> Result<Option<String>, CreateError> {
                        match find(&item, key) {
                            None | Some(Value::Null) => Ok(None),
                            Some(Value::String(s)) => Ok(Some(s)),
                            Some(_) => Err(invalid(format!("item.{key} must be a string"))),
                        }
                    };
                    if let Some(c) = text(CONFLICT_PARAM)? {
                        up.conflict = conflict(&c)?;
                    }
                    up.name = text("name")?;
                    up.description = text("description")?;
                    up.file_size = match find(&item, "fileSize") {
                        None | Some(Value::Null) => None,
                        Some(v) => Some(v.as_u64().ok_or_else(|| {
                            invalid("item.fileSize must be a number of bytes".into())
                        })?),
                    };
                }
                Some(_) => return Err(invalid("item must be an object".into())),
            }
        }
        for pair in query.unwrap_or_default().split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let key = percent_encoding::percent_decode_str(key).decode_utf8_lossy();
            if key.eq_ignore_ascii_case(CONFLICT_PARAM) {
                let value = percent_encoding::percent_decode_str(value).decode_utf8_lossy();
                up.conflict = conflict(&value)?;
            }
        }
        Ok(up)
    }
}

fn conflict(name: &str) -> Result<ConflictBehavior, CreateError> {
    ConflictBehavior::by_name(name).ok_or_else(|| {
        CreateError::InvalidBody(format!(
            "{CONFLICT_PARAM} must be fail, replace or rename (got `{}`)",
            name.chars().take(40).collect::<String>()
        ))
    })
}

/// The name OneDrive gives a file whose `name` is taken, under `rename`: the
/// first of `name 1.ext`, `name 2.ext`, … that `taken` says is free.
///
/// ```
/// use upsession_core::drive::renamed;
///
/// let taken = ["a.txt", "a 1.txt"];
/// assert_eq!(renamed("a.txt", |n| taken.contains(&n)), "a 2.txt");
/// assert_eq!(renamed(".profile", |_| false), ".profile 1");
/// assert_eq!(renamed("archive.tar.gz", |_| false), "archive.tar 1.gz");
/// ```
pub fn renamed(name: &str, taken: impl Fn(&str) -> bool) -> String {
    // A leading dot is part of the stem (`.profile`), not an extension.
    let (stem, ext) = match name.rfind('.') {
        Some(dot) if dot > 0 => name.split_at(dot),
        _ => (name, ""),
    };
    (1..u64::MAX)
        .map(|n| format!("{stem} {n}{ext}"))
        .find(|candidate| !taken(candidate))
        .unwrap_or_default()
}

/// Where a drive item lives (`parentReference`). Read leniently, as every type
/// here: a property the live service leaves out reads as empty.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ParentReference {
    /// The drive's id.
    pub drive_id: String,
    /// `personal` or `business`.
    pub drive_type: String,
    /// The parent folder's id.
    pub id: String,
    /// The parent's path: `/drive/root:` or `/drive/root:/a/b`.
    pub path: String,
}

/// A file's hashes (`file.hashes`). OneDrive for Business gives only
/// `quickXorHash`; a missing one reads as empty.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Hashes {
    /// [`crate::quickxor::QuickXorHash`], base64.
    pub quick_xor_hash: String,
    /// SHA-256, upper-case hex (as OneDrive writes it).
    pub sha256_hash: String,
}

/// A file's facet (`file`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct FileFacet {
    /// Its MIME type.
    pub mime_type: String,
    /// Its hashes.
    pub hashes: Hashes,
}

/// A folder's facet (`folder`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct FolderFacet {
    /// How many items it holds directly.
    pub child_count: usize,
}

/// An empty facet (`root: {}`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

/// The `driveItem` of a file or folder, as a completed upload answers it and `GET
/// …/drive/items/{id}` reads it. Written whole; read leniently (the live service's
/// default property set varies), a missing property empty.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct DriveItem {
    /// The item's id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// Changes with the item or its metadata: `"{id},{version}"`, quoted.
    pub e_tag: String,
    /// Changes with its content: `"c:{id},{version}"`, quoted.
    pub c_tag: String,
    /// RFC 3339, UTC.
    pub created_date_time: String,
    /// RFC 3339, UTC.
    pub last_modified_date_time: String,
    /// Where it lives (not for the root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_reference: Option<ParentReference>,
    /// A file's facet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileFacet>,
    /// A folder's facet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folder: Option<FolderFacet>,
    /// The root's facet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<Empty>,
    /// A description, when one was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl DriveItem {
    /// The eTag of version `version` of item `id`.
    #[must_use]
    pub fn e_tag_of(id: &str, version: u64) -> String {
        format!("\"{{{id}}},{version}\"")
    }

    /// The cTag of version `version` of item `id`.
    #[must_use]
    pub fn c_tag_of(id: &str, version: u64) -> String {
        format!("\"c:{{{id}}},{version}\"")
    }

    /// Whether an `If-Match` header value names this item's current eTag or cTag
    /// (`*` matches any): a stale one is answered 412.
    #[must_use]
    pub fn matches(&self, if_match: &str) -> bool {
        entity_tags(if_match).into_iter().any(|tag| {
            let tag = tag.strip_prefix("W/").unwrap_or(tag);
            tag == "*" || tag == self.e_tag || tag == self.c_tag
        })
    }
}

/// The entity tags of an `If-Match` list (RFC 9110 §8.8.3): quoted strings, maybe
/// `W/`-prefixed, separated by commas, which OneDrive's tags themselves contain;
/// or `*`.
fn entity_tags(list: &str) -> Vec<&str> {
    let mut tags = Vec::new();
    let mut rest = list.trim_start_matches([' ', ',', '\t']);
    while !rest.is_empty() {
        let start = usize::from(rest.starts_with("W/")) * 2;
        let end = if rest[start..].starts_with('"') {
            // To the closing quote.
            rest[start + 1..]
                .find('"')
                .map_or(rest.len(), |q| start + q + 2)
        } else {
            rest.find(',').unwrap_or(rest.len())
        };
        tags.push(rest[..end].trim());
        rest = rest[end..].trim_start_matches([' ', ',', '\t']);
    }
    tags
}

/// The SHA-256 of a file as OneDrive writes it: upper-case hex.
#[must_use]
pub fn sha256_hex(digest: &[u8]) -> String {
    digest.iter().fold(String::with_capacity(64), |mut s, b| {
        use std::fmt::Write as _;
        let _ = write!(s, "{b:02X}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_bodies_as_the_sdks_and_the_docs_write_them() {
        // Empty: every default.
        let up = DriveUpload::from_request(b"", None).unwrap();
        assert_eq!(up, DriveUpload::default());
        assert_eq!(up.conflict, ConflictBehavior::Replace);
        // The documented body, case-insensitively, with deferCommit.
        let up = DriveUpload::from_request(
            br#"{"Item": {"@microsoft.graph.conflictBehavior": "FAIL", "name": "a.bin",
                "fileSize": 12345, "description": "d"}, "deferCommit": true}"#,
            None,
        )
        .unwrap();
        assert_eq!(up.conflict, ConflictBehavior::Fail);
        assert_eq!(
            (
                up.name.as_deref(),
                up.file_size,
                up.description.as_deref(),
                up.defer_commit
            ),
            (Some("a.bin"), Some(12345), Some("d"), true)
        );
        // The query string wins (percent-encoded or not).
        for query in [
            "@microsoft.graph.conflictBehavior=rename",
            "%40microsoft.graph.conflictBehavior=rename&x=1",
        ] {
            let up = DriveUpload::from_request(
                br#"{"item": {"@microsoft.graph.conflictBehavior": "fail"}}"#,
                Some(query),
            )
            .unwrap();
            assert_eq!(up.conflict, ConflictBehavior::Rename, "{query}");
        }
        // `{"item": null}`, an `@odata.type` and unknown properties are fine.
        assert!(
            DriveUpload::from_request(
                br#"{"item": {"@odata.type": "microsoft.graph.driveItemUploadableProperties", "x": 1}}"#,
                None
            )
            .is_ok()
        );
        assert!(DriveUpload::from_request(br#"{"item": null}"#, None).is_ok());
    }

    #[test]
    fn bad_request_bodies_say_why() {
        for (body, query, says) in [
            (&b"[1]"[..], None, "object"),
            (b"{", None, "EOF"),
            (b"{\"item\": 3}", None, "item must be an object"),
            (b"{\"deferCommit\": \"yes\"}", None, "deferCommit"),
            (b"{\"item\": {\"fileSize\": -1}}", None, "fileSize"),
            (b"{\"item\": {\"name\": 7}}", None, "name"),
            (
                b"{\"item\": {\"@microsoft.graph.conflictBehavior\": \"merge\"}}",
                None,
                "fail, replace or rename",
            ),
            (b"", Some("@microsoft.graph.conflictBehavior=keep"), "keep"),
        ] {
            let err = DriveUpload::from_request(body, query)
                .unwrap_err()
                .to_string();
            assert!(err.contains(says), "{body:?} {query:?}: {err}");
        }
    }

    #[test]
    fn renaming_takes_the_first_free_number_before_the_extension() {
        assert_eq!(renamed("a.txt", |_| false), "a 1.txt");
        assert_eq!(renamed("noext", |n| n == "noext 1"), "noext 2");
        assert_eq!(renamed("a.b.c", |_| false), "a.b 1.c");
    }

    #[test]
    fn drive_items_render_as_onedrive_writes_them() {
        let item = DriveItem {
            id: "01ABC".into(),
            name: "a.bin".into(),
            size: 3,
            e_tag: DriveItem::e_tag_of("01ABC", 2),
            c_tag: DriveItem::c_tag_of("01ABC", 2),
            created_date_time: "2026-12-07T00:00:00Z".into(),
            last_modified_date_time: "2026-12-07T00:00:01Z".into(),
            parent_reference: Some(ParentReference {
                drive_id: "b!d".into(),
                drive_type: "business".into(),
                id: "01ROOT".into(),
                path: "/drive/root:".into(),
            }),
            file: Some(FileFacet {
                mime_type: "application/octet-stream".into(),
                hashes: Hashes {
                    quick_xor_hash: "AAAAAAAAAAAAAAAAAAAAAAAAAAA=".into(),
                    sha256_hash: sha256_hex(&[0xab; 32]),
                },
            }),
            folder: None,
            root: None,
            description: None,
        };
        let json = serde_json::to_value(&item).unwrap();
        assert_eq!(json["eTag"], "\"{01ABC},2\"");
        assert_eq!(json["cTag"], "\"c:{01ABC},2\"");
        assert_eq!(json["parentReference"]["driveId"], "b!d");
        assert_eq!(
            json["file"]["hashes"]["quickXorHash"],
            "AAAAAAAAAAAAAAAAAAAAAAAAAAA="
        );
        assert!(
            json["file"]["hashes"]["sha256Hash"]
                .as_str()
                .unwrap()
                .starts_with("ABAB")
        );
        assert!(json.get("description").is_none());
        // The live service's answers leave properties out: read all the same.
        let business: DriveItem = serde_json::from_str(
            r#"{"id":"01X","name":"a.bin","size":3,"file":{"hashes":{"quickXorHash":"Q"}}}"#,
        )
        .unwrap();
        let file = business.file.unwrap();
        assert_eq!(
            (
                file.hashes.quick_xor_hash.as_str(),
                file.hashes.sha256_hash.as_str()
            ),
            ("Q", "")
        );
        assert!(item.matches("\"{01ABC},2\""));
        assert!(item.matches("\"c:{01ABC},2\""));
        assert!(item.matches("*"));
        assert!(item.matches("W/\"{01ABC},2\""));
        assert!(!item.matches("\"{01ABC},1\""));
        assert!(item.matches("\"{X},1\", \"{01ABC},2\""));
        assert!(!item.matches("\"{X},1\", W/\"{01ABC},3\""));
    }
}
