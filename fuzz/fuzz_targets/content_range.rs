//! `Content-Range` parsing: any string is refused or read into a header that
//! prints back to itself and lies inside its total.
#![no_main]

use libfuzzer_sys::fuzz_target;
use upsession_core::ContentRange;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(cr) = text.parse::<ContentRange>() else {
        return;
    };
    assert!(
        cr.range().end() <= cr.total(),
        "{text:?} read as {cr:?}, past its total"
    );
    assert_eq!(ContentRange::new(cr.range(), cr.total()), Some(cr));
    let printed = cr.to_string();
    assert_eq!(
        printed.parse::<ContentRange>(),
        Ok(cr),
        "{text:?} printed as {printed:?} does not read back"
    );
});
