//! A small script runner for the models' unit tests: given these answers, the model
//! sends these requests, and ends so.

use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use super::{Answer, Body, Method, SdkFailure, SdkModel, Step};

/// The uploadUrl of every script.
pub(crate) const URL: &str = "https://127.0.0.1:8443/uploads/s1?authtoken=1.abc";
/// An expiry far in the future.
pub(crate) const EXPIRY: &str = "2099-01-01T00:00:00.0000000Z";
/// The time of every script.
pub(crate) const NOW: SystemTime = SystemTime::UNIX_EPOCH;
/// A mebibyte, the unit of every chunk size.
pub(crate) const MIB: u64 = 1 << 20;

/// A model being driven, and the step it last returned.
pub(crate) struct Script<M: SdkModel> {
    model: M,
    step: Step,
}

impl<M: SdkModel> Script<M> {
    /// Starts `model` on a `size`-byte file with our default createUploadSession
    /// answer (`["0-{size-1}"]`, camelCase).
    pub(crate) fn new(model: M, size: u64) -> Self {
        Self::with_session(model, size, &created(&[&format!("0-{}", size - 1)]))
    }

    /// Starts `model` with the createUploadSession answer `session`.
    pub(crate) fn with_session(mut model: M, size: u64, session: &Answer) -> Self {
        let step = model.start(NOW, session, size);
        Self { model, step }
    }

    /// The model sent `PUT` to the uploadUrl with this `Content-Range` and these
    /// bytes.
    #[track_caller]
    pub(crate) fn sends(self, range: &str, body: Body) -> Self {
        match &self.step {
            Step::Send(r) => {
                assert_eq!((r.method, r.url.as_str()), (Method::Put, URL), "{r:?}");
                assert_eq!(r.content_range.as_deref(), Some(range), "{r:?}");
                assert_eq!(r.body, body, "{r:?}");
                assert_eq!(r.content_length, Some(body.total()), "{r:?}");
            }
            other => panic!("expected PUT {range}, got {other:?}"),
        }
        self
    }

    /// The model sent `GET` on the uploadUrl.
    #[track_caller]
    pub(crate) fn gets(self) -> Self {
        match &self.step {
            Step::Send(r) => assert_eq!((r.method, r.url.as_str()), (Method::Get, URL)),
            other => panic!("expected GET, got {other:?}"),
        }
        self
    }

    /// The model sleeps `d`; the sleep ends.
    #[track_caller]
    pub(crate) fn waits(mut self, d: Duration) -> Self {
        assert_eq!(self.step, Step::Wait(d));
        self.step = self.model.on_wait_over();
        self
    }

    /// The last request is answered with `answer`.
    #[allow(clippy::needless_pass_by_value)] // scripts read better without `&`
    pub(crate) fn answer(mut self, answer: Answer) -> Self {
        self.step = self.model.on_answer(NOW, &answer);
        self
    }

    /// The last request got no answer.
    pub(crate) fn transport_error(mut self) -> Self {
        self.step = self.model.on_transport_error("connection reset");
        self
    }

    /// The model failed with an exception starting with `exception`, and the
    /// application resumes the upload the SDK's way: its first step is
    /// `GET uploadUrl`.
    #[track_caller]
    pub(crate) fn resumes(self, exception: &str) -> Self {
        match &self.step {
            Step::Failed(f) if f.exception.starts_with(exception) => {}
            other => panic!("expected failure {exception:?}, got {other:?}"),
        }
        self.resume().gets()
    }

    /// The application resumes the upload the SDK's way.
    pub(crate) fn resume(mut self) -> Self {
        self.step = self.model.resume();
        self
    }

    /// The model failed with an exception starting with `exception`.
    #[track_caller]
    pub(crate) fn fails_with(self, exception: &str) -> SdkFailure {
        match self.step {
            Step::Failed(f) if f.exception.starts_with(exception) => f,
            other => panic!("expected failure {exception:?}, got {other:?}"),
        }
    }

    /// The model returned normally, naming `location`.
    #[track_caller]
    pub(crate) fn ends(self) -> Option<String> {
        match self.step {
            Step::Done { location } => location,
            other => panic!("expected Done, got {other:?}"),
        }
    }

    /// The model returned normally, naming some location.
    #[track_caller]
    pub(crate) fn ends_with_location(self) {
        assert!(self.ends().is_some());
    }
}

/// A createUploadSession answer (201) with these ranges.
pub(crate) fn created(ranges: &[&str]) -> Answer {
    Answer::json(
        201,
        &json!({"uploadUrl": URL, "expirationDateTime": EXPIRY, "nextExpectedRanges": ranges}),
    )
}

/// A progress answer (200, camelCase) with one range.
pub(crate) fn progress(range: &str) -> Answer {
    Answer::json(
        200,
        &json!({"expirationDateTime": EXPIRY, "nextExpectedRanges": [range]}),
    )
}

/// A progress answer expecting `next..size` in the closed form.
pub(crate) fn closed(next: u64, size: u64) -> Answer {
    progress(&format!("{next}-{}", size - 1))
}

/// A progress answer expecting everything from `next`, in the open form.
pub(crate) fn open(next: u64) -> Answer {
    progress(&format!("{next}-"))
}

/// A progress answer expecting everything from `next`, as a bare start.
pub(crate) fn bare(next: u64) -> Answer {
    progress(&next.to_string())
}

/// A progress answer in PascalCase.
pub(crate) fn pascal(range: &str) -> Answer {
    Answer::json(
        200,
        &json!({"ExpirationDateTime": EXPIRY, "NextExpectedRanges": [range]}),
    )
}

/// The completing answer: 201, `Location`, empty body, no content type.
pub(crate) fn done() -> Answer {
    Answer::new(201, Vec::new(), Vec::new()).with_header(
        "Location",
        "https://127.0.0.1:8443/v1.0/me/messages/m/attachments/a",
    )
}

/// An error answer with Graph's JSON.
pub(crate) fn error(status: u16, code: &str) -> Answer {
    let body: Value = json!({"error": {"code": code, "message": "no"}});
    Answer::json(status, &body)
}
