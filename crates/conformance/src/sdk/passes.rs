//! What .NET's and Java's upload tasks share: both upload in passes over the
//! session's remaining ranges (Microsoft.Graph.Core's `LargeFileUploadTask.cs`,
//! msgraph-sdk-java-core's `LargeFileUploadTask.java`), read every answer with an
//! `UploadResponseHandler` into the same `UploadResult`, ask the session (`GET`)
//! after a pass, sleep, and try again, three passes at most; and both resume by
//! checking the session's expiry.
//!
//! What differs stays in each model and comes in here as an argument: how a range
//! is parsed, the slicing loop's condition (Java's `begin < end` is an
//! off-by-one), what a slice's bytes are, and the names of the exceptions.

use std::time::{Duration, SystemTime};

use upsession_core::time::parse_graph_time;

use super::{SdkFailure, Step};

/// `UploadAsync(progress, maxTries = 3)` (.NET); `upload()` is `upload(3, null)`
/// (Java).
const MAX_TRIES: u32 = 3;

/// `UploadResult<T>` as `UploadResponseHandler` fills it.
#[derive(Debug, Default)]
pub(crate) struct UploadResult {
    /// `ItemResponse != null` / `itemResponse != null`.
    pub(crate) item: bool,
    pub(crate) location: Option<String>,
    /// The session's ranges when it is ongoing.
    pub(crate) session: Option<Vec<String>>,
    /// Its `expirationDateTime` as sent, when it is ongoing.
    pub(crate) expiry: Option<String>,
}

impl UploadResult {
    /// `UploadSucceeded` / `isUploadSuccessful()`: an item or a location.
    pub(crate) fn succeeded(&self) -> bool {
        self.item || self.location.is_some()
    }
}

/// Where a pass has got to: the slices `GetUploadSliceRequests` (.NET, lazily) and
/// `getUploadSliceRequests` (Java, as a list) make from the remaining ranges
/// (inclusive), in order. From each range's begin, a slice of
/// `min(end - begin + 1, chunk)` bytes while `more(begin, end)`: `begin <= end`
/// in .NET, `begin < end` in Java. The ranges do not change during a pass, so
/// walking them lazily gives Java's list too.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Pass {
    /// The range being cut, and the begin of its next slice.
    at: Option<(usize, i64)>,
}

impl Pass {
    /// The next slice `(begin, end)`, inclusive, or `None` when the pass is over.
    pub(crate) fn next(
        &mut self,
        ranges: &[(i64, i64)],
        chunk: i64,
        more: fn(i64, i64) -> bool,
    ) -> Option<(i64, i64)> {
        let (mut index, mut begin) = self.at.unwrap_or((0, ranges.first()?.0));
        loop {
            let &(_, end) = ranges.get(index)?;
            if more(begin, end) {
                let last = end.min(begin.saturating_add(chunk - 1));
                self.at = Some((index, last.saturating_add(1)));
                return Some((begin, last));
            }
            index += 1;
            begin = ranges.get(index).map_or(0, |r| r.0);
            self.at = Some((index, begin));
        }
    }
}

/// `uploadTries`, and the sleep between two passes.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Tries {
    count: u32,
    sleeping: bool,
}

impl Tries {
    /// After a pass and its `GET`, one more try: the sleep before the next pass
    /// (`2000 * uploadTries * uploadTries` ms: 2 s, then 8 s), or `None` when the
    /// tries are spent and the task throws.
    pub(crate) fn next_pass(&mut self) -> Option<Step> {
        self.count += 1;
        self.sleeping = self.count < MAX_TRIES;
        let secs = 2 * u64::from(self.count * self.count);
        self.sleeping.then(|| Step::Wait(Duration::from_secs(secs)))
    }

    /// A sleep is over: whether it was the one before the next pass.
    pub(crate) fn wake(&mut self) -> bool {
        std::mem::take(&mut self.sleeping)
    }

    /// The resume calls `UploadAsync` / `upload()` anew: no try counted yet.
    pub(crate) fn restart(&mut self) {
        *self = Self::default();
    }
}

/// The resume's expiry check on the session's `expirationDateTime` (as sent):
/// `unparsable` when it cannot be read, and a `ClientException` unless it is later
/// than `now` (a missing one counts as expired: .NET's `?? DateTimeOffset.Now`).
pub(crate) fn resume_expiry(
    now: SystemTime,
    expiry: Option<&str>,
    unparsable: SdkFailure,
) -> Result<(), Step> {
    let expiry = match expiry.map(parse_graph_time) {
        None => None,
        Some(Some(t)) => Some(t),
        Some(None) => return Err(Step::Failed(unparsable)),
    };
    if expiry.is_none_or(|t| t <= now) {
        return Err(Step::fail(
            "ClientException: Upload session expired. Upload cannot resume",
            "ClientException: session expired",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk(ranges: &[(i64, i64)], more: fn(i64, i64) -> bool) -> Vec<(i64, i64)> {
        let mut pass = Pass::default();
        std::iter::from_fn(|| pass.next(ranges, 10, more)).collect()
    }

    #[test]
    fn a_pass_cuts_every_range_into_chunks_and_java_skips_a_last_byte_alone() {
        let ranges = [(0, 24), (30, 30), (40, 50)];
        assert_eq!(
            walk(&ranges, |b, e| b <= e),
            [(0, 9), (10, 19), (20, 24), (30, 30), (40, 49), (50, 50)]
        );
        assert_eq!(
            walk(&ranges, |b, e| b < e),
            [(0, 9), (10, 19), (20, 24), (40, 49)]
        );
        assert_eq!(walk(&[], |b, e| b <= e), []);
    }

    #[test]
    fn passes_sleep_2_then_8_seconds_then_give_up() {
        let mut tries = Tries::default();
        assert_eq!(tries.next_pass(), Some(Step::Wait(Duration::from_secs(2))));
        assert!(tries.wake() && !tries.wake());
        assert_eq!(tries.next_pass(), Some(Step::Wait(Duration::from_secs(8))));
        assert_eq!(tries.next_pass(), None);
        assert!(!tries.wake());
        tries.restart();
        assert_eq!(tries.next_pass(), Some(Step::Wait(Duration::from_secs(2))));
    }
}
