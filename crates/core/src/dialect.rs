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
            // A range to an end not known yet (a drive upload before its first
            // fragment says its size) is open in every form.
            _ if r.end() == u64::MAX => format!("{}-", r.start()),
            Self::Closed => format!("{}-{}", r.start(), r.last()),
            Self::Open => format!("{}-", r.start()),
            Self::Bare => r.start().to_string(),
        }
    }
}

/// How the properties of upload-session answers are cased.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Casing {
    /// `expirationDateTime`, `nextExpectedRanges`: what Graph's global cloud answers
    /// and what every official SDK reads.
    Camel,
    /// `ExpirationDateTime`, `NextExpectedRanges` in fragment and status answers:
    /// Outlook REST's heritage, as in the docs' example and from 21Vianet mailboxes
    /// (msgraph-sdk-dotnet#2092). Only the .NET and JavaScript SDKs read it.
    Pascal,
}

impl Casing {
    /// Reads `camel` or `pascal`.
    pub fn by_name(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "camel" => Some(Self::Camel),
            "pascal" => Some(Self::Pascal),
            _ => None,
        }
    }

    /// The name `by_name` reads.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Camel => "camel",
            Self::Pascal => "pascal",
        }
    }
}

/// Which forms `nextExpectedRanges` entries take, on creation and after.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RangeForms {
    /// `"a-b"` everywhere: the form every official SDK parses.
    Closed,
    /// `"a-"` everywhere: OneDrive's documented form.
    Open,
    /// `"0-"` on creation, then a bare `"a"`: Outlook's documented example.
    Outlook,
}

impl RangeForms {
    /// Reads `closed`, `open` or `outlook`.
    pub fn by_name(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "closed" => Some(Self::Closed),
            "open" => Some(Self::Open),
            "outlook" => Some(Self::Outlook),
            _ => None,
        }
    }

    /// The name `by_name` reads.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::Outlook => "outlook",
        }
    }

    /// The form on creation and the form after a fragment.
    pub const fn forms(self) -> (RangeForm, RangeForm) {
        match self {
            Self::Closed => (RangeForm::Closed, RangeForm::Closed),
            Self::Open => (RangeForm::Open, RangeForm::Open),
            Self::Outlook => (RangeForm::Open, RangeForm::Bare),
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
    /// How fragment and status answers case their properties.
    pub casing: Casing,
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
    /// Each stored fragment moves `expirationDateTime` (OneDrive); when false it
    /// stays as created (Outlook).
    pub sliding_expiry: bool,
}

impl Dialect {
    /// The contract's tidy answers, which every official SDK accepts.
    pub const UPSESSION: Self = Self {
        name: "upsession",
        create_status: StatusCode::CREATED,
        progress_status: StatusCode::OK,
        casing: Casing::Camel,
        odata_context: false,
        created_ranges: RangeForm::Closed,
        ranges: RangeForm::Closed,
        location: LocationStyle::Graph,
        reject_resend: false,
        fragment_quantum: None,
        sliding_expiry: true,
    };

    /// As Outlook answers, per Graph's "Attach large files to Outlook messages or
    /// events": `@odata.context`, an expiry that "remains the same as returned by the
    /// initial uploadSession", and an Outlook REST `Location`. Properties are
    /// camelCase and ranges closed unless [`Dialect::with_casing`] and
    /// [`Dialect::with_range_forms`] ask for the docs' example (`ExpirationDateTime`,
    /// `["0-"]` then a bare `["N"]`), which some official SDKs cannot read.
    pub const OUTLOOK: Self = Self {
        name: "outlook",
        create_status: StatusCode::CREATED,
        progress_status: StatusCode::OK,
        casing: Casing::Camel,
        odata_context: true,
        created_ranges: RangeForm::Closed,
        ranges: RangeForm::Closed,
        location: LocationStyle::OutlookRest,
        reject_resend: false,
        fragment_quantum: None,
        sliding_expiry: false,
    };

    /// As OneDrive answers, per "driveItem: createUploadSession": 200 on creation,
    /// 202 on each fragment, `"N-"` ranges, 416 on re-sent bytes, 320 KiB multiples.
    pub const ONEDRIVE: Self = Self {
        name: "onedrive",
        create_status: StatusCode::OK,
        progress_status: StatusCode::ACCEPTED,
        casing: Casing::Camel,
        odata_context: false,
        created_ranges: RangeForm::Open,
        ranges: RangeForm::Open,
        location: LocationStyle::Graph,
        reject_resend: true,
        fragment_quantum: Some(320 * 1024),
        sliding_expiry: true,
    };

    /// Every dialect.
    pub const ALL: [Self; 3] = [Self::UPSESSION, Self::OUTLOOK, Self::ONEDRIVE];

    /// The dialect called `name`.
    pub fn by_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|d| d.name.eq_ignore_ascii_case(name))
    }

    crate::const_setters! {
        /// This dialect with its answers' properties cased as `casing`.
        with_casing(casing: Casing);
    }

    /// This dialect with its `nextExpectedRanges` written in `forms`.
    #[must_use]
    pub const fn with_range_forms(mut self, forms: RangeForms) -> Self {
        (self.created_ranges, self.ranges) = forms.forms();
        self
    }

    /// The range forms this dialect writes, if they are one of [`RangeForms`].
    pub fn range_forms(&self) -> Option<RangeForms> {
        [RangeForms::Closed, RangeForms::Open, RangeForms::Outlook]
            .into_iter()
            .find(|f| f.forms() == (self.created_ranges, self.ranges))
    }

    fn session_json(
        &self,
        upload_url: Option<&str>,
        expires: SystemTime,
        expected: &RangeSet,
        form: RangeForm,
        casing: Casing,
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
        let (expiry, ranges_key) = match casing {
            Casing::Camel => ("expirationDateTime", "nextExpectedRanges"),
            Casing::Pascal => ("ExpirationDateTime", "NextExpectedRanges"),
        };
        map.insert(expiry.into(), Value::String(format_graph_time(expires)));
        let ranges = expected
            .ranges()
            .iter()
            .map(|r| Value::String(form.write(*r)))
            .collect();
        map.insert(ranges_key.into(), Value::Array(ranges));
        Value::Object(map)
    }

    /// The answer to createUploadSession.
    pub fn created(
        &self,
        upload_url: &str,
        expires: SystemTime,
        expected: &RangeSet,
    ) -> Response<Vec<u8>> {
        // The docs' examples case the creation answer in camelCase in every cloud.
        let body = self.session_json(
            Some(upload_url),
            expires,
            expected,
            self.created_ranges,
            Casing::Camel,
        );
        crate::respond::json(self.create_status, &body)
    }

    /// The answer to a fragment `PUT` or a status `GET`: a progress answer with the
    /// session JSON (never an `id`), or `201` with `location` and an empty body with
    /// no content type (an SDK parses any JSON-typed answer and fails on an empty one).
    ///
    /// ```
    /// use upsession_core::{Dialect, session::Answer};
    ///
    /// let res = Dialect::UPSESSION.answer(&Answer::Completed, "https://h/v1.0/me/messages/m/attachments/a");
    /// assert_eq!(res.status(), 201);
    /// assert_eq!(res.headers()["location"], "https://h/v1.0/me/messages/m/attachments/a");
    /// assert!(res.body().is_empty() && res.headers().get("content-type").is_none());
    /// ```
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
                let body =
                    self.session_json(None, *expires_at, next_expected, self.ranges, self.casing);
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

impl crate::session::Limits {
    /// Takes the session rules of `dialect` (re-sends, fragment multiples, whether
    /// the expiry slides).
    #[must_use]
    pub const fn with_rules_of(self, dialect: &Dialect) -> Self {
        self.with_reject_resend(dialect.reject_resend)
            .with_fragment_quantum(dialect.fragment_quantum)
            .with_sliding_expiry(dialect.sliding_expiry)
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

    #[test]
    fn limits_take_a_dialects_session_rules() {
        let limits = crate::session::Limits::default().with_rules_of(&Dialect::ONEDRIVE);
        assert!(limits.reject_resend);
        assert_eq!(limits.fragment_quantum, Some(320 * 1024));
        assert_eq!(limits.sliding_expiry, Dialect::ONEDRIVE.sliding_expiry);
    }
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
        assert_eq!(
            (s, j["nextExpectedRanges"][0].as_str()),
            (200, Some("100-999"))
        );
        assert!(j["expirationDateTime"].is_string() && j.get("@odata.context").is_some());
        let (s, j) = progress(&Dialect::ONEDRIVE);
        assert_eq!(
            (s, j["nextExpectedRanges"][0].as_str()),
            (202, Some("100-"))
        );
    }

    #[test]
    fn casing_and_range_forms_are_switches_of_their_own() {
        let docs = Dialect::OUTLOOK
            .with_casing(Casing::Pascal)
            .with_range_forms(RangeForms::Outlook);
        let (s, j) = progress(&docs);
        assert_eq!((s, j["NextExpectedRanges"][0].as_str()), (200, Some("100")));
        assert!(j["ExpirationDateTime"].is_string() && j.get("expirationDateTime").is_none());
        let created = docs.created("u", UNIX_EPOCH, &RangeSet::full(10));
        let j: Value = serde_json::from_slice(created.body()).unwrap();
        assert_eq!(j["nextExpectedRanges"][0], "0-");
        assert!(j["expirationDateTime"].is_string());
        assert_eq!(docs.range_forms(), Some(RangeForms::Outlook));
        assert_eq!(Dialect::ONEDRIVE.range_forms(), Some(RangeForms::Open));
        for f in [RangeForms::Closed, RangeForms::Open, RangeForms::Outlook] {
            assert_eq!(RangeForms::by_name(f.name()), Some(f));
        }
        assert_eq!(Casing::by_name("Pascal"), Some(Casing::Pascal));
    }

    #[test]
    fn our_lenient_reader_reads_every_dialect() {
        let variants = Dialect::ALL.into_iter().flat_map(|d| {
            [
                d.clone(),
                d.with_casing(Casing::Pascal)
                    .with_range_forms(RangeForms::Outlook),
            ]
        });
        for d in variants {
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
