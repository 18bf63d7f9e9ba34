//! What a finished upload returns, whichever client ran it.

use http::StatusCode;
use http::header::LOCATION;
use serde::Serialize;
use upsession_core::RemoteError;
use upsession_core::drive::DriveItem;
use upsession_core::planner::Completion;

use crate::resume::FileIdentity;

use crate::error::{Error, Result};

/// A finished upload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Uploaded {
    /// The attachment's name.
    pub name: String,
    /// Bytes uploaded.
    pub size: u64,
    /// The attachment's id, from the final answer's body or its `Location`.
    pub attachment_id: Option<String>,
    /// The attachment's URL, the final answer's `Location`.
    pub location: Option<String>,
    /// CRC-64/NVME of the file, 16 lowercase hex digits (file uploads only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crc64: Option<String>,
    /// SHA-256 of the file, lowercase hex (file uploads that asked for it, and
    /// drive files).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Set when the file changed while its last bytes were being sent: the
    /// attachment exists (its id and location are above) and holds the bytes that
    /// were sent, which may not be the file as it is now. Says what changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_changed: Option<String>,
    /// A drive file, as the final answer described it (its id is also
    /// `attachment_id`); its hashes were checked against the file's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drive_item: Option<DriveItem>,
}

impl Uploaded {
    /// A session upload of `total` bytes named `name`, completed as the planner
    /// says, of the file `identity` (if from a file), which changed during the
    /// last fragment if `file_changed` says so.
    pub fn completed(
        name: String,
        total: u64,
        completion: Completion,
        identity: Option<&FileIdentity>,
        file_changed: Option<String>,
    ) -> Self {
        let mut uploaded = Self::new(name, total, completion.attachment_id, completion.location);
        if let Some(identity) = identity {
            uploaded.set_file_hashes(identity);
        }
        uploaded.file_changed = file_changed;
        uploaded.drive_item = completion.drive_item.map(|item| *item);
        uploaded
    }

    /// Reports the file's hashes, as `identity` has them.
    pub fn set_file_hashes(&mut self, identity: &FileIdentity) {
        self.crc64 = identity.crc64.map(crate::crc64_hex);
        self.sha256.clone_from(&identity.sha256);
    }

    /// Why the drive file's hashes are not those of the file sent (`identity`'s),
    /// if they are not: each hash the answer carries and the file's is compared
    /// (OneDrive for Business gives only `quickXorHash`).
    pub fn drive_hashes_differ(&self, identity: Option<&FileIdentity>) -> Option<String> {
        let hashes = &self.drive_item.as_ref()?.file.as_ref()?.hashes;
        let identity = identity?;
        // Hex in any case; base64 exactly.
        let differ = |what: &str, theirs: &str, ours: Option<&String>| {
            let same = |ours: &str| match what {
                "sha256Hash" => theirs.eq_ignore_ascii_case(ours),
                _ => theirs == ours,
            };
            ours.filter(|ours| !theirs.is_empty() && !same(ours))
                .map(|ours| {
                    format!(
                        "the drive file's {what} is {theirs}, but the bytes sent hash to {ours}; the file on the drive is not this file"
                    )
                })
        };
        differ("sha256Hash", &hashes.sha256_hash, identity.sha256.as_ref()).or_else(|| {
            differ(
                "quickXorHash",
                &hashes.quick_xor_hash,
                identity.quick_xor.as_ref(),
            )
        })
    }

    /// A finished upload of `size` bytes named `name`, as the final answer gave
    /// it (`attachment_id`, `location`); no file hash, no change noticed.
    pub fn new(
        name: String,
        size: u64,
        attachment_id: Option<String>,
        location: Option<String>,
    ) -> Self {
        Self {
            name,
            size,
            attachment_id,
            location,
            crc64: None,
            sha256: None,
            file_changed: None,
            drive_item: None,
        }
    }
}

/// Graph's error from an answer, with its `request-id`.
pub fn remote_error<B: AsRef<[u8]>>(answer: &http::Response<B>) -> RemoteError {
    let request_id = answer
        .headers()
        .get("request-id")
        .and_then(|v| v.to_str().ok());
    RemoteError::from_response(answer.status(), answer.body().as_ref(), request_id)
}

/// What the answer to a small file's `POST …/attachments` means: the attachment
/// `name` of `total` bytes, or the refusal. Graph answers the attachment itself;
/// without a `Location`, its URL is `url_of(id)`, the item's.
pub fn attached<B: AsRef<[u8]>>(
    answer: &http::Response<B>,
    name: &str,
    total: u64,
    url_of: impl FnOnce(&str) -> String,
) -> Result<Uploaded> {
    if !answer.status().is_success() {
        return Err(Error::Remote(remote_error(answer)));
    }
    let attachment: Option<serde_json::Value> = serde_json::from_slice(answer.body().as_ref()).ok();
    let header = answer.headers().get(LOCATION).and_then(|v| v.to_str().ok());
    let id = attachment
        .as_ref()
        .and_then(|a| a.get("id")?.as_str())
        .map(str::to_owned);
    if answer.status() != StatusCode::CREATED && id.is_none() {
        return Err(Error::Protocol(format!(
            "adding an attachment was answered {} without the attachment",
            answer.status().as_u16()
        )));
    }
    let location = header
        .map(str::to_owned)
        .or_else(|| id.as_deref().map(url_of));
    Ok(Uploaded::new(name.to_owned(), total, id, location))
}

/// What the answer to `POST …/messages` means: the new draft, or the refusal.
pub fn created_draft<B: AsRef<[u8]>>(
    answer: &http::Response<B>,
) -> Result<upsession_core::target::Target> {
    if !answer.status().is_success() {
        return Err(Error::Remote(remote_error(answer)));
    }
    let item: upsession_core::wire::Item =
        serde_json::from_slice(answer.body().as_ref()).map_err(|e| {
            Error::Protocol(format!(
                "the created draft is not a message with an id: {e}"
            ))
        })?;
    Ok(upsession_core::target::Target::Message(item.id))
}

/// How long to wait before sending a single request again after `answer` (the
/// `attempt`-th), if its throttling is to be waited out at `now`: the core's
/// [`throttle_wait`](upsession_core::planner::throttle_wait) on the answer's status
/// and `Retry-After`.
pub fn throttled<B>(
    answer: &http::Response<B>,
    attempt: u32,
    now: std::time::SystemTime,
) -> Option<std::time::Duration> {
    let retry_after = answer
        .headers()
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok());
    upsession_core::planner::throttle_wait(answer.status(), retry_after, attempt, now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use upsession_core::drive::{ContentHasher, DriveItem};

    fn item(quick_xor: &str, sha256: &str) -> DriveItem {
        serde_json::from_value(serde_json::json!({
            "id": "01F", "name": "a.bin", "size": 3, "eTag": "e", "cTag": "c",
            "createdDateTime": "2026-12-07T00:00:00Z", "lastModifiedDateTime": "2026-12-07T00:00:00Z",
            "file": {"mimeType": "application/octet-stream",
                     "hashes": {"quickXorHash": quick_xor, "sha256Hash": sha256}},
        }))
        .unwrap()
    }

    #[test]
    fn a_drive_files_hashes_are_checked_against_the_bytes_sent() {
        let mut h = ContentHasher::default();
        h.update(b"abc");
        let hashes = h.finish();
        let identity = FileIdentity {
            path: "/x".into(),
            size: 3,
            modified: None,
            crc64: None,
            sha256: Some(hashes.sha256_hash.to_ascii_lowercase()),
            quick_xor: Some(hashes.quick_xor_hash.clone()),
            sent_crc64: None,
            sent_hashes: None,
        };
        let mut up = Uploaded::new("a.bin".into(), 3, Some("01F".into()), None);
        up.drive_item = Some(item(&hashes.quick_xor_hash, &hashes.sha256_hash));
        assert_eq!(up.drive_hashes_differ(Some(&identity)), None);
        // OneDrive for Business gives quickXorHash alone.
        up.drive_item = Some(item(&hashes.quick_xor_hash, ""));
        assert_eq!(up.drive_hashes_differ(Some(&identity)), None);
        // Either one wrong is said.
        up.drive_item = Some(item("AAAA", ""));
        assert!(
            up.drive_hashes_differ(Some(&identity))
                .unwrap()
                .contains("quickXorHash")
        );
        up.drive_item = Some(item(&hashes.quick_xor_hash, "00"));
        assert!(
            up.drive_hashes_differ(Some(&identity))
                .unwrap()
                .contains("sha256Hash")
        );
        // An attachment has no drive item to check.
        up.drive_item = None;
        assert_eq!(up.drive_hashes_differ(Some(&identity)), None);
    }
}
