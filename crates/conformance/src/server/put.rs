//! Plain `PUT`s, sent through reqwest: the fragment each operation sends as the
//! model stands (the next one, a re-send, one out of line, one with a wrong
//! `Content-Range`), and the rest of a file sent in order.

use http::Method;

use super::exec::Exec;
use super::model::{Kind, rule_for};
use super::ops::{BAD_RANGE_VARIANTS, Len, Op};
use super::verdict::Violation;

/// A plain `PUT`: its `Content-Range` (or none), the file bytes of its body, what
/// it tests, and whether it carries an `Authorization` header the server must ignore.
#[derive(Debug)]
struct PutPlan {
    header: Option<String>,
    body: (u64, u64),
    kind: Kind,
    auth: bool,
}

/// A `Content-Range` that is wrong in one of [`BAD_RANGE_VARIANTS`] ways (`None`:
/// no header at all), for the fragment `a..=b` of an `n`-byte file.
fn bad_range(variant: u8, a: u64, b: u64, n: u64) -> Option<String> {
    Some(match variant % BAD_RANGE_VARIANTS {
        0 => return None,
        1 => format!("bytes={a}-{b}/{n}"),
        2 => format!("bytes {a}-{b}"),
        3 => format!("bytes */{n}"),
        4 => format!("bytes {a}-{b}/*"),
        5 => format!("items {a}-{b}/{n}"),
        6 => format!("bytes {}-{a}/{n}", a + 1),
        7 => format!("bytes {a}-{n}/{n}"),
        8 => format!("bytes  {a}-{b}/{n}"),
        9 => format!("bytes -{b}/{n}"),
        10 => format!("bytes {a}-{b}/{n}x"),
        11 => format!("bytes 0x{a:x}-{b}/{n}"),
        12 => format!("bytes {a}-18446744073709551616/{n}"),
        _ => format!("bytes +{a}-{b}/{n}"),
    })
}

impl Exec<'_> {
    /// A `PUT` of the bytes `first..=last` with their `Content-Range`.
    async fn put(&mut self, i: usize, first: u64, last: u64, kind: Kind) -> Result<(), Violation> {
        let header = format!("bytes {first}-{last}/{}", self.sessions[i].size());
        self.put_with(i, Some(header), (first, last), kind, &[])
            .await
    }

    /// A `PUT` with this `Content-Range` (or none) and the bytes `body` of the file.
    async fn put_with(
        &mut self,
        i: usize,
        content_range: Option<String>,
        body: (u64, u64),
        kind: Kind,
        extra: &[(&str, &str)],
    ) -> Result<(), Violation> {
        let dialect = self.dialect();
        let m = &mut self.sessions[i];
        let cancelled = m.cancelled();
        let len = body.1 - body.0 + 1;
        let (expect, wrote) = m.expect_put(dialect, content_range.as_deref(), Some(len));
        let rule = rule_for(kind, &expect, cancelled);
        let mut req = self.upload_request(i, Method::PUT);
        if let Some(h) = content_range {
            req = req.header("Content-Range", h);
        }
        for (name, value) in extra {
            req = req.header(name, *value);
        }
        let m = &self.sessions[i];
        let req = req.bytes(m.slice(body.0, body.1), m.note(body.0, body.1));
        let (step, reply) = self.send(&req).await;
        self.judge(i, step, &reply, &expect, rule)?;
        self.sessions[i].acked.extend(wrote);
        Ok(())
    }

    /// The plain `PUT` `op` makes of session `i`, if it makes one there.
    pub(super) async fn plain_put(&mut self, i: usize, op: &Op) -> Result<(), Violation> {
        let Some(plan) = self.plan_put(i, op) else {
            return Ok(());
        };
        let extra: &[(&str, &str)] = if plan.auth {
            &[("Authorization", "Bearer not-needed-on-upload-urls")]
        } else {
            &[]
        };
        self.put_with(i, plan.header, plan.body, plan.kind, extra)
            .await
    }

    /// The `PUT` a plain operation makes of session `i` as the model stands, or
    /// `None` when the operation makes no sense there (nothing acknowledged yet,
    /// nothing left to skip to, ...).
    fn plan_put(&self, i: usize, op: &Op) -> Option<PutPlan> {
        let model = &self.sessions[i];
        let size = model.size();
        let plain = |first: u64, last: u64, kind: Kind| PutPlan {
            header: Some(format!("bytes {first}-{last}/{size}")),
            body: (first, last),
            kind,
            auth: false,
        };
        match *op {
            Op::PutNext { len, auth, .. } => {
                let (first, last) = self.next_fragment(i, len)?;
                Some(PutPlan {
                    auth,
                    ..plain(first, last, Kind::Next)
                })
            }
            Op::Resend { back, .. } => {
                let acked = &model.acked;
                let count = acked.len();
                let range = *acked.get(count.checked_sub(1)? - usize::from(back) % count)?;
                Some(plain(range.start(), range.last(), Kind::Resend))
            }
            Op::ResendFinal { .. } => {
                model.location.as_ref()?;
                let range = model.acked.iter().rev().find(|r| r.end() == size)?;
                Some(plain(range.start(), range.last(), Kind::ResendFinal))
            }
            Op::SkipAhead { .. }
            | Op::Overlap { .. }
            | Op::OddLength { .. }
            | Op::TooLarge { .. } => {
                let (first, last, kind) = self.out_of_line(i, op)?;
                Some(plain(first, last, kind))
            }
            Op::BadRange { variant, .. } => {
                let (first, last) = self.some_fragment(i);
                Some(PutPlan {
                    header: bad_range(variant, first, last, size),
                    ..plain(first, last, Kind::BadRange)
                })
            }
            Op::WrongTotal { delta, .. } => {
                let (first, last) = self.some_fragment(i);
                let shift = u64::from(delta.unsigned_abs());
                let mut total = if delta > 0 {
                    size + shift
                } else {
                    size.saturating_sub(shift).max(last + 1)
                };
                if total == size {
                    total = size + 1;
                }
                Some(PutPlan {
                    header: Some(format!("bytes {first}-{last}/{total}")),
                    ..plain(first, last, Kind::WrongTotal)
                })
            }
            _ => None,
        }
    }

    /// The bytes `first..=last` of session `i` that an operation out of the line of
    /// fragments sends (ahead of the next byte, over stored bytes, not a multiple of
    /// the quantum, or too large), or `None` when the session leaves no room for it.
    fn out_of_line(&self, i: usize, op: &Op) -> Option<(u64, u64, Kind)> {
        let model = &self.sessions[i];
        let size = model.size();
        let max = self.limits.max_fragment;
        let quantum = self.quantum();
        match *op {
            Op::SkipAhead { gap, len, .. } => {
                let next = model.next_start()?;
                if next + 1 >= size {
                    return None;
                }
                let start = next + 1 + u64::from(gap) % (size - next - 1);
                let n = len.pick_allowed(size - start, max, quantum, 0)?;
                Some((start, start + n - 1, Kind::Skip))
            }
            Op::Overlap { back, len, .. } => {
                let next = model.next_start()?;
                if next == 0 || max < 2 {
                    return None;
                }
                let old = 1 + u64::from(back) % next.min(max - 1);
                // Longer than the `old` bytes it repeats: it reaches past them.
                let start = next - old;
                let n = len.pick_allowed(size - start, max, quantum, old)?;
                Some((start, start + n - 1, Kind::Overlap))
            }
            Op::OddLength { len, .. } => {
                let next = model.next_start()?;
                // Shorter than the rest of the file: not the last fragment.
                let cap = max.min(size - next - 1);
                if quantum < 2 || cap == 0 {
                    return None;
                }
                let mut n = 1 + u64::from(len) % cap;
                if n.is_multiple_of(quantum) {
                    n -= 1;
                }
                Some((next, next + n - 1, Kind::OddLength))
            }
            Op::TooLarge { extra, .. } => {
                let n = max + u64::from(extra);
                let start = match model.next_start() {
                    Some(next) if next + n <= size => next,
                    _ if size >= n => size - n,
                    _ => return None,
                };
                Some((start, start + n - 1, Kind::TooLarge))
            }
            _ => None,
        }
    }

    /// The next fragment if there is one, else the first.
    fn some_fragment(&self, i: usize) -> (u64, u64) {
        self.next_fragment(i, Len::Full).unwrap_or_else(|| {
            let size = self.sessions[i].size();
            (0, size.min(self.limits.max_fragment) - 1)
        })
    }

    /// Sends the rest of session `i`'s file, in order, in fragments as long as
    /// allowed.
    pub(super) async fn finish(&mut self, i: usize) -> Result<(), Violation> {
        let full = (self.limits.max_fragment / self.quantum() * self.quantum()).max(1);
        let bound = self.sessions[i].size() / full + 2;
        for _ in 0..bound {
            let Some((first, last)) = self.next_fragment(i, Len::Full) else {
                break;
            };
            self.put(i, first, last, Kind::Next).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::pedantic)] // test code favours brevity over pedantry
    use super::*;
    use upsession_core::ContentRange;

    #[test]
    fn every_bad_range_variant_is_refused_by_the_core_parser() {
        for v in 1..BAD_RANGE_VARIANTS {
            let h = bad_range(v, 0, 9, 100).unwrap();
            assert!(h.parse::<ContentRange>().is_err(), "{h} parsed");
        }
        assert_eq!(bad_range(0, 0, 9, 100), None);
    }
}
