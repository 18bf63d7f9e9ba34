//! createUploadSession bodies: any bytes are refused or read into an item that
//! `to_request_json` writes back to the same item; a drive item's body (and a
//! query string of the same bytes) is refused or read without a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use upsession_core::drive::DriveUpload;
use upsession_core::wire::AttachmentItem;

fuzz_target!(|data: &[u8]| {
    let query = String::from_utf8_lossy(data);
    if let Ok(up) = DriveUpload::from_request(data, Some(&query)) {
        assert!(up.name.as_deref().is_none_or(|n| data.len() >= n.len()));
    }
    let Ok(item) = AttachmentItem::from_request_json(data) else {
        return;
    };
    assert_eq!(item.attachment_type, "file");
    assert!(!item.name.trim().is_empty() && !item.name.chars().any(char::is_control));
    assert!(item.name.len() <= 1024);
    assert_ne!(item.content_type.as_deref(), Some(""));
    if item.is_inline == Some(true) {
        assert!(item.content_id.as_deref().is_some_and(|id| !id.is_empty()));
    }
    let written = item.to_request_json().to_string();
    let back = AttachmentItem::from_request_json(written.as_bytes())
        .unwrap_or_else(|e| panic!("{written} (from {item:?}) does not read back: {e}"));
    assert_eq!(back, item, "{written}");
});
