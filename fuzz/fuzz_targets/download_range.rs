//! A download's `Range` header: any value, against any size, is answered with the
//! whole file, a part inside it, or 416, and a part's `Content-Range` reads back
//! as the upload side's `Content-Range` of the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use upsession_core::ContentRange;
use upsession_core::download::{RangeRequest, range_request};

fuzz_target!(|input: (u64, bool, &[u8])| {
    let (total, if_range, data) = input;
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let answer = range_request(Some(text), if_range, total);
    if if_range {
        assert_eq!(answer, RangeRequest::Whole);
    }
    if let RangeRequest::Part(range) = answer {
        assert!(range.end() <= total, "{text:?} of {total}: {range:?}");
        let printed = answer.content_range(total).expect("a part has a Content-Range");
        let read = printed.parse::<ContentRange>().expect("it reads back");
        assert_eq!((read.range(), read.total()), (range, total));
    }
});
