//! How answers must look in the dialect being checked. Every expectation here is
//! read off the core's own rendering (`Dialect::created`, `Dialect::answer`,
//! `Dialect::status`) and routes (`ItemPath::outlook_attachment_path`): the status
//! of each answer, the uploadSession property names (`expirationDateTime` or
//! `ExpirationDateTime`, `@odata.context`), the form of `nextExpectedRanges`
//! entries (closed, open or bare), and Outlook REST `Location`s. Nothing about a
//! dialect is written out by hand in this crate.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::Url;
use serde_json::{Map, Value};
use upsession_core::dialect::LocationStyle;
use upsession_core::header::parse_expected_ranges;
use upsession_core::route::{ItemPath, Route};
use upsession_core::session::Answer;
use upsession_core::time::parse_graph_time;
use upsession_core::{Dialect, RangeSet};

use super::http::Reply;
use super::verdict::{Violation, violation};
use crate::rule::Rule;

/// How far an `expirationDateTime` may lag our clock (a remote server's clock may
/// be off by this much).
const CLOCK_SKEW: Duration = Duration::from_secs(300);

/// Stand-ins for what the core renders but the server chooses.
const ANY_URL: &str = "http://upsession.invalid/uploads/x";

/// Which answer of an upload session: to a fragment `PUT` or to a status `GET`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Via {
    Put,
    Status,
}

/// An answer as the dialect writes it: its status and its JSON properties.
#[derive(Debug)]
pub(super) struct Written {
    pub(super) status: u16,
    properties: Map<String, Value>,
}

impl Written {
    fn of(res: &http::Response<Vec<u8>>) -> Self {
        let properties = match serde_json::from_slice(res.body()) {
            Ok(Value::Object(map)) => map,
            _ => Map::new(),
        };
        Self {
            status: res.status().as_u16(),
            properties,
        }
    }

    /// The property the dialect spells like `name` (ignoring case), as it spells it.
    fn key(&self, name: &str) -> String {
        self.properties
            .keys()
            .find(|k| k.eq_ignore_ascii_case(name))
            .cloned()
            .unwrap_or_else(|| name.to_owned())
    }

    /// The `nextExpectedRanges` entries.
    fn entries(&self) -> Vec<String> {
        self.properties
            .get(&self.key("nextExpectedRanges"))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The properties besides the ones checked one by one (Outlook's
    /// `@odata.context`): they must be there too.
    fn others(&self) -> impl Iterator<Item = (&String, &Value)> {
        self.properties.iter().filter(|(k, _)| {
            !["uploadUrl", "expirationDateTime", "nextExpectedRanges"]
                .iter()
                .any(|n| k.eq_ignore_ascii_case(n))
        })
    }
}

/// The dialect's answer to createUploadSession expecting `expected`.
pub(super) fn created(dialect: &Dialect, expected: &RangeSet) -> Written {
    Written::of(&dialect.created(ANY_URL, UNIX_EPOCH, expected))
}

/// The dialect's answer `answer` to a `PUT` or a status `GET`.
pub(super) fn answer(dialect: &Dialect, answer: &Answer, via: Via) -> Written {
    let res = match via {
        Via::Put => dialect.answer(answer, ANY_URL),
        Via::Status => dialect.status(answer, ANY_URL),
    };
    Written::of(&res)
}

fn progress(dialect: &Dialect, expected: RangeSet, via: Via) -> Written {
    let answer_ = Answer::Progress {
        next_expected: expected,
        expires_at: UNIX_EPOCH,
    };
    answer(dialect, &answer_, via)
}

/// `camelCase` or `PascalCase`, for messages.
fn casing(key: &str) -> &'static str {
    if key.starts_with(|c: char| c.is_ascii_uppercase()) {
        "PascalCase"
    } else {
        "camelCase"
    }
}

/// Checks that `obj` has every other property the dialect writes (`@odata.context`).
fn others_present(
    obj: &Map<String, Value>,
    written: &Written,
    dialect: &Dialect,
    rule: Rule,
    keys: &dyn Fn() -> String,
) -> Result<(), Violation> {
    for (key, value) in written.others() {
        let same_type = obj
            .get(key)
            .is_some_and(|got| std::mem::discriminant(got) == std::mem::discriminant(value));
        if !same_type {
            return Err(violation(
                rule,
                format!(
                    "no `{key}` {}, which the {} dialect writes (properties: {})",
                    kind(value),
                    dialect.name,
                    keys()
                ),
            ));
        }
    }
    Ok(())
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
        _ => "property",
    }
}

/// The member `name` of an answer, in the casing `written` uses, read as a JSON
/// `kind` by `read` (`Value::as_str`, `Value::as_array`); or why it is missing.
fn member<'v, T: ?Sized>(
    obj: &'v Map<String, Value>,
    written: &Written,
    name: &str,
    (kind, read): (&str, fn(&'v Value) -> Option<&'v T>),
) -> Result<&'v T, String> {
    let key = written.key(name);
    obj.get(&key).and_then(read).ok_or_else(|| {
        let keys = obj.keys().cloned().collect::<Vec<_>>().join(", ");
        format!("no {} `{key}` {kind} (properties: {keys})", casing(&key))
    })
}

/// What every uploadSession answer has, checked under `rule`: an
/// `expirationDateTime` that reads as a time to come, the `nextExpectedRanges`
/// (returned), and no member the dialect does not write.
fn session_members<'v>(
    obj: &'v Map<String, Value>,
    written: &Written,
    dialect: &Dialect,
    rule: Rule,
) -> Result<&'v Vec<Value>, Violation> {
    let fail = |m: String| violation(rule, m);
    let expiry = member(
        obj,
        written,
        "expirationDateTime",
        ("string", Value::as_str),
    );
    check_expiry(expiry.map_err(fail)?, rule)?;
    let entries = member(
        obj,
        written,
        "nextExpectedRanges",
        ("array", Value::as_array),
    );
    let entries = entries.map_err(fail)?;
    let keys = || obj.keys().cloned().collect::<Vec<_>>().join(", ");
    others_present(obj, written, dialect, rule, &keys)?;
    Ok(entries)
}

/// Checks a createUploadSession answer's body (its status is checked already) and
/// returns its uploadUrl. `closed`: the `closed-ranges` rule applies.
pub(super) fn created_json(
    reply: &Reply,
    size: u64,
    dialect: &Dialect,
    closed: bool,
) -> Result<Url, Violation> {
    let create = |m: String| violation(Rule::CreateSession, m);
    let written = created(dialect, &RangeSet::full(size));
    let value: Value = serde_json::from_slice(&reply.body)
        .map_err(|e| create(format!("the answer is not JSON ({e})")))?;
    let obj = value
        .as_object()
        .ok_or_else(|| create("the answer is not a JSON object".into()))?;
    let text = member(obj, &written, "uploadUrl", ("string", Value::as_str)).map_err(create)?;
    let url = Url::parse(text)
        .ok()
        .filter(|u| u.scheme() == "http" || u.scheme() == "https")
        .ok_or_else(|| create("the uploadUrl is not an absolute http(s) URL".into()))?;
    let entries = session_members(obj, &written, dialect, Rule::CreateSession)?;
    let form = |set: RangeSet| created(dialect, &set).entries();
    let set = ranges_of(entries, size, closed, dialect, &form, Rule::CreateSession)?;
    if set != RangeSet::full(size) {
        return Err(create(format!(
            "a new session must expect the whole file {}, but expects {}",
            show(&RangeSet::full(size)),
            show(&set)
        )));
    }
    Ok(url)
}

/// Checks an uploadSession progress answer's shape (its status is checked
/// already) and returns its ranges.
pub(super) fn progress_json(
    reply: &Reply,
    size: u64,
    dialect: &Dialect,
    via: Via,
    closed: bool,
) -> Result<RangeSet, Violation> {
    let shape = |m: String| violation(Rule::ProgressShape, m);
    let status = reply.status;
    let ct = reply.header("content-type").unwrap_or("");
    if !ct.to_ascii_lowercase().starts_with("application/json") {
        return Err(shape(format!(
            "the {status} answer's Content-Type is `{ct}`, not application/json"
        )));
    }
    let value: Value = serde_json::from_slice(&reply.body)
        .map_err(|e| shape(format!("the {status} answer's body is not JSON ({e})")))?;
    let Some(obj) = value.as_object() else {
        return Err(shape(format!(
            "the {status} answer's body is not a JSON object"
        )));
    };
    if let Some(key) = obj.keys().find(|k| k.eq_ignore_ascii_case("id")) {
        return Err(shape(format!(
            "the {status} answer has an `{key}` property; one SDK takes a 200 with an id as completion"
        )));
    }
    let written = progress(dialect, RangeSet::new(), via);
    let entries = session_members(obj, &written, dialect, Rule::ProgressShape)?;
    let form = |set: RangeSet| progress(dialect, set, via).entries();
    ranges_of(entries, size, closed, dialect, &form, Rule::ProgressShape)
}

/// Reads `nextExpectedRanges` entries: strings, each written in the dialect's form
/// (`closed`: the closed form, under `closed-ranges`; else as `form` renders the
/// range the entry reads as, under `rule`), within the file; compared as sets.
fn ranges_of(
    entries: &[Value],
    size: u64,
    closed: bool,
    dialect: &Dialect,
    form: &dyn Fn(RangeSet) -> Vec<String>,
    rule: Rule,
) -> Result<RangeSet, Violation> {
    let mut texts = Vec::with_capacity(entries.len());
    for entry in entries {
        let Some(text) = entry.as_str() else {
            return Err(violation(
                Rule::ProgressShape,
                format!("nextExpectedRanges entry {entry} is not a string"),
            ));
        };
        if closed {
            if !is_closed(text) {
                return Err(violation(
                    Rule::ClosedRanges,
                    format!(
                        "nextExpectedRanges entry `{text}` is not the closed form `start-end` \
                         (SDKs parse both ends)"
                    ),
                ));
            }
        } else if let Ok(one) = parse_expected_ranges([text], size)
            && !one.is_empty()
        {
            // The entry's range, written as the dialect writes it.
            let want = form(one);
            if want.len() == 1 && want[0] != text {
                return Err(violation(
                    rule,
                    format!(
                        "nextExpectedRanges entry `{text}` is not written as the {} dialect writes \
                         it: `{}`",
                        dialect.name, want[0]
                    ),
                ));
            }
        }
        texts.push(text);
    }
    parse_expected_ranges(&texts, size).map_err(|e| violation(Rule::ProgressShape, e.to_string()))
}

/// Whether a `nextExpectedRanges` entry is the closed `start-end` form.
pub(super) fn is_closed(entry: &str) -> bool {
    entry.split_once('-').is_some_and(|(a, b)| {
        !a.is_empty()
            && !b.is_empty()
            && a.bytes().all(|c| c.is_ascii_digit())
            && b.bytes().all(|c| c.is_ascii_digit())
    })
}

pub(super) fn show(set: &RangeSet) -> String {
    format!("{:?}", upsession_core::header::format_expected_ranges(set))
}

fn check_expiry(text: &str, rule: Rule) -> Result<(), Violation> {
    let Some(at) = parse_graph_time(text) else {
        return Err(violation(
            rule,
            format!("expirationDateTime `{text}` is not an RFC 3339 time"),
        ));
    };
    if !text.ends_with('Z') {
        return Err(violation(
            rule,
            format!("expirationDateTime `{text}` is not in UTC with a `Z`"),
        ));
    }
    if at + CLOCK_SKEW < SystemTime::now() {
        return Err(violation(
            rule,
            format!("expirationDateTime `{text}` is in the past"),
        ));
    }
    Ok(())
}

/// Checks that a completion's `Location` is written in the dialect's style for
/// `item`. Only Outlook REST's style is checked: the Graph style's `Location` may
/// point anywhere the server serves the attachment.
pub(super) fn location_style(
    location: &str,
    item: &ItemPath,
    dialect: &Dialect,
) -> Result<(), String> {
    if dialect.location != LocationStyle::OutlookRest {
        return Ok(());
    }
    let example = item.outlook_attachment_path("AID");
    let wrong = || {
        format!(
            "the {} dialect writes the Location as Outlook REST's `…{example}` (AID: the \
             attachment's id), not `{location}`",
            dialect.name
        )
    };
    let url = Url::parse(location).map_err(|_| wrong())?;
    let path = url.path();
    let suffix = path
        .find("/api/v2.0/")
        .map(|at| &path[at..])
        .ok_or_else(wrong)?;
    match Route::parse(suffix) {
        Ok(Route::Attachment(got, aid))
            if got.kind == item.kind
                && got.user == item.user
                && got.id == item.id
                && got.outlook_attachment_path(&aid) == suffix =>
        {
            Ok(())
        }
        _ => Err(wrong()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::pedantic)] // test code favours brevity over pedantry
    use super::*;
    use upsession_core::ByteRange;
    use upsession_core::route::{ItemKind, User, Version};

    fn rest(start: u64, size: u64) -> RangeSet {
        RangeSet::from_range(ByteRange::new(start, size).unwrap())
    }

    #[test]
    fn closed_form_is_digits_dash_digits() {
        for (entry, closed) in [("0-9", true), ("10-", false), ("10", false), ("a-b", false)] {
            assert_eq!(is_closed(entry), closed, "{entry}");
        }
    }

    #[test]
    fn each_dialect_is_read_off_the_core() {
        let d = Dialect::ONEDRIVE;
        let put = progress(&d, rest(5, 10), Via::Put);
        assert_eq!((put.status, put.entries()), (202, vec!["5-".to_owned()]));
        assert_eq!(progress(&d, rest(5, 10), Via::Status).status, 200);
        assert_eq!(created(&d, &RangeSet::full(10)).status, 200);
        let docs = Dialect::OUTLOOK
            .with_casing(upsession_core::dialect::Casing::Pascal)
            .with_range_forms(upsession_core::dialect::RangeForms::Outlook);
        let o = progress(&docs, rest(5, 10), Via::Put);
        assert_eq!(o.entries(), ["5"]);
        assert_eq!(o.key("expirationdatetime"), "ExpirationDateTime");
        assert_eq!(
            o.others().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            ["@odata.context"]
        );
        let u = created(&Dialect::UPSESSION, &RangeSet::full(10));
        assert_eq!((u.status, u.entries()), (201, vec!["0-9".to_owned()]));
        assert_eq!(u.others().count(), 0);
    }

    #[test]
    fn outlook_locations_are_checked_against_the_core_route() {
        let item = ItemPath {
            version: Version::V1,
            user: User::Me,
            kind: ItemKind::Message,
            id: "M1".into(),
        };
        let good = format!("http://h:1{}", item.outlook_attachment_path("A1"));
        assert_eq!(location_style(&good, &item, &Dialect::OUTLOOK), Ok(()));
        let graph = format!("http://h:1{}", item.attachment_path("A1"));
        assert!(location_style(&graph, &item, &Dialect::OUTLOOK).is_err());
        assert_eq!(location_style(&graph, &item, &Dialect::UPSESSION), Ok(()));
        let other = good.replace("M1", "M2");
        assert!(location_style(&other, &item, &Dialect::OUTLOOK).is_err());
        let lower = good.replace("Attachments", "attachments");
        assert!(location_style(&lower, &item, &Dialect::OUTLOOK).is_err());
    }
}
