//! How a server speaks: the differences between our tidy answers, real Outlook's and
//! OneDrive's, as data. Handlers never branch on a dialect; they hand it to the
//! session (rules) and to the renderer (answers).

use std::time::SystemTime;

use http::header::{CONTENT_TYPE, LOCATION};
use http::{HeaderValue, Response, StatusCode};
use serde_json::{Map, Value};

use crate::range::{ByteRange, RangeSet};
use crate::session::Answer;
use crate::time::format_graph_time;

/// How `nextExpectedRanges` entries are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RangeForm {
    /// `"start-end"`: what every official SDK parses.
    Closed,
    /// `"start-"`: OneDrive's form, and Outlook's first answer.
    Open,
    /// `"start"`: Outlook's form after the first fragment.
    Bare,
}

impl RangeForm {
    fn write(self, r: ByteRange) -> String {
        match self {
            Self::Closed => format!("{}-{}", r.start(), r.last()),
            Self::Open => format!("{}-", r.start()),
            Self::Bare => r.start().to_string(),
        }
    }
}

/// Where a finished attachment's `Location` points.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LocationStyle {
    /// `{base}/v1.0/me/messages/{id}/attachments/{aid}`
    Graph,
    /// Outlook REST's `{base}/api/v2.0/Users('{user}')/Messages('{id}')/Attachments('{aid}')`.
    OutlookRest,
}

/// A server dialect: every way in which answers or rules differ.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Dialect {
    /// The name on the command line.
    pub name: &'static str,
    /// Status of createUploadSession's answer.
    pub create_status: StatusCode,
    /// Status of an answer to a fragment that does not complete the file.
    pub progress_status: StatusCode,
    /// `expirationDateTime` written `ExpirationDateTime`.
    pub pascal_expiration: bool,
    /// An `@odata.context` property on upload-session answers.
    pub odata_context: bool,
    /// Form of the ranges in createUploadSession's answer.
    pub created_ranges: RangeForm,
    /// Form of the ranges after a fragment, and on status.
    pub ranges: RangeForm,
    /// Where `Location` points.
    pub location: LocationStyle,
    /// A re-send of received bytes is refused with 416 `fragmentOverlap` (OneDrive)
    /// instead of being answered as the first time.
    pub reject_resend: bool,
    /// Every fragment but the last must be a multiple of this many bytes.
    pub fragment_quantum: Option<u64>,
    /// The largest fragment, unless configured otherwise.
    pub max_fragment: u64,
}

impl Dialect {
    /// The contract's tidy answers, which every official SDK accepts.
    pub const UPSESSION: Self = Self {
        name: "upsession",
        create_status: StatusCode::CREATED,
        progress_status: StatusCode::OK,
        pascal_expiration: false,
        odata_context: false,
        created_ranges: RangeForm::Closed,
        ranges: RangeForm::Closed,
        location: LocationStyle::Graph,
        reject_resend: false,
        fragment_quantum: None,
        max_fragment: 4 * 1024 * 1024,
    };

    /// As Outlook answers, per Graph's "Attach large files to Outlook messages or
    /// events": `ExpirationDateTime`, `@odata.context`, `["0-"]` on creation then a
    /// bare `["N"]`, and an Outlook REST `Location`.
    pub const OUTLOOK: Self = Self {
        name: "outlook",
        create_status: StatusCode::CREATED,
        progress_status: StatusCode::OK,
        pascal_expiration: true,
        odata_context: true,
        created_ranges: RangeForm::Open,
        ranges: RangeForm::Bare,
        location: LocationStyle::OutlookRest,
        reject_resend: false,
        fragment_quantum: None,
        max_fragment: 4 * 1024 * 1024,
    };

    /// As OneDrive answers, per "driveItem: createUploadSession": 200 on creation,
    /// 202 on each fragment, `"N-"` ranges, 416 on re-sent bytes, 320 KiB multiples.
    pub const ONEDRIVE: Self = Self {
        name: "onedrive",
        create_status: StatusCode::OK,
        progress_status: StatusCode::ACCEPTED,
        pascal_expiration: false,
        odata_context: false,
        created_ranges: RangeForm::Open,
        ranges: RangeForm::Open,
        location: LocationStyle::Graph,
        reject_resend: true,
        fragment_quantum: Some(320 * 1024),
        max_fragment: 60 * 1024 * 1024,
    };

    /// Every dialect.
    pub const ALL: [Self; 3] = [Self::UPSESSION, Self::OUTLOOK, Self::ONEDRIVE];

    /// The dialect called `name`.
    pub fn by_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|d| d.name.eq_ignore_ascii_case(name))
    }

    fn session_json(
        &self,
        upload_url: Option<&str>,
        expires: SystemTime,
        expected: &RangeSet,
        form: RangeForm,
    ) -> Value {
        let mut map = Map::new();
        if self.odata_context {
            map.insert(
                "@odata.context".into(),
                Value::String(
                    "https://graph.microsoft.com/v1.0/$metadata#microsoft.graph.uploadSession"
                        .into(),
                ),
            );
        }
        if let Some(url) = upload_url {
            map.insert("uploadUrl".into(), Value::String(url.to_owned()));
        }
        let key = if self.pascal_expiration {
            "ExpirationDateTime"
        } else {
            "expirationDateTime"
        };
        map.insert(key.into(), Value::String(format_graph_time(expires)));
        let ranges = expected
            .ranges()
            .iter()
            .map(|r| Value::String(form.write(*r)))
            .collect();
        map.insert("nextExpectedRanges".into(), Value::Array(ranges));
        Value::Object(map)
    }

    /// The answer to createUploadSession.
    pub fn created(
        &self,
        upload_url: &str,
        expires: SystemTime,
        expected: &RangeSet,
    ) -> Response<Vec<u8>> {
        let body = self.session_json(Some(upload_url), expires, expected, self.created_ranges);
        crate::respond::json(self.create_status, &body)
    }

    /// The answer to a fragment `PUT` or a status `GET`: a progress answer with the
    /// session JSON (never an `id`), or `201` with `location` and an empty body.
    pub fn answer(&self, answer: &Answer, location: &str) -> Response<Vec<u8>> {
        self.render(answer, location, self.progress_status)
    }

    /// The answer to a status `GET`: always `200` (OneDrive's 202 is for fragments).
    pub fn status(&self, answer: &Answer, location: &str) -> Response<Vec<u8>> {
        self.render(answer, location, StatusCode::OK)
    }

    fn render(
        &self,
        answer: &Answer,
        location: &str,
        progress_status: StatusCode,
    ) -> Response<Vec<u8>> {
        match answer {
            Answer::Progress {
                next_expected,
                expires_at,
            } => {
                let body = self.session_json(None, *expires_at, next_expected, self.ranges);
                crate::respond::json(progress_status, &body)
            }
            Answer::Completed => {
                let mut res = Response::new(Vec::new());
                *res.status_mut() = StatusCode::CREATED;
                if let Ok(v) = HeaderValue::from_str(location) {
                    res.headers_mut().insert(LOCATION, v);
                }
                debug_assert!(res.headers().get(CONTENT_TYPE).is_none());
                res
            }
        }
    }
}

impl Default for Dialect {
    fn default() -> Self {
        Self::UPSESSION
    }
}

#[cfg(test)]
#[allow(clippy::pedantic)] // test code favours brevity over pedantry
mod tests {
    use super::*;
    use crate::wire::UploadSession;
    use std::time::UNIX_EPOCH;

    fn expected() -> RangeSet {
        RangeSet::from_range(ByteRange::new(100, 1000).unwrap())
    }

    fn progress(d: &Dialect) -> (u16, Value) {
        let res = d.answer(
            &Answer::Progress {
                next_expected: expected(),
                expires_at: UNIX_EPOCH,
            },
            "x",
        );
        (
            res.status().as_u16(),
            serde_json::from_slice(res.body()).unwrap(),
        )
    }

    #[test]
    fn each_dialect_writes_its_own_answers() {
        let (s, j) = progress(&Dialect::UPSESSION);
        assert_eq!(
            (s, j["nextExpectedRanges"][0].as_str()),
            (200, Some("100-999"))
        );
        let (s, j) = progress(&Dialect::OUTLOOK);
        assert_eq!((s, j["nextExpectedRanges"][0].as_str()), (200, Some("100")));
        assert!(j["ExpirationDateTime"].is_string() && j.get("@odata.context").is_some());
        let (s, j) = progress(&Dialect::ONEDRIVE);
        assert_eq!(
            (s, j["nextExpectedRanges"][0].as_str()),
            (202, Some("100-"))
        );
        let created = Dialect::OUTLOOK.created("u", UNIX_EPOCH, &RangeSet::full(10));
        let j: Value = serde_json::from_slice(created.body()).unwrap();
        assert_eq!(j["nextExpectedRanges"][0], "0-");
    }

    #[test]
    fn our_lenient_reader_reads_every_dialect() {
        for d in Dialect::ALL {
            let res = d.answer(
                &Answer::Progress {
                    next_expected: expected(),
                    expires_at: UNIX_EPOCH,
                },
                "x",
            );
            let s: UploadSession = serde_json::from_slice(res.body()).unwrap();
            assert_eq!(s.next_expected(1000).unwrap(), expected(), "{}", d.name);
            assert_eq!(s.expires(), Some(UNIX_EPOCH), "{}", d.name);
        }
    }

    #[test]
    fn names_resolve() {
        assert_eq!(Dialect::by_name("Outlook"), Some(Dialect::OUTLOOK));
        assert_eq!(Dialect::by_name("gmail"), None);
    }
}
