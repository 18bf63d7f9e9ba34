//! createUploadSession bodies: any bytes are refused or read into an item that
//! `to_request_json` writes back to the same item.
#![no_main]

use libfuzzer_sys::fuzz_target;
use upsession_core::wire::AttachmentItem;

fuzz_target!(|data: &[u8]| {
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
