//! The upload session's own routes: createUploadSession, and `PUT`, `GET` and
//! `DELETE` on its uploadUrl, with the faults that fall on them.

use std::time::SystemTime;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;
use upsession_core::error::RequestError;
use upsession_core::fault::FaultRoute;
use upsession_core::route::{ItemPath, upload_path};
use upsession_core::session::{Answer, Phase, Session};
use upsession_core::wire::AttachmentItem;
use upsession_core::{ByteRange, RangeSet, respond};

use super::body::linger;
use super::{Ctx, Dropped, Outcome};
use crate::fake::{Break, FakeSession, Fault};

impl Ctx {
    /// The fault of this upload-session request: the one scripted for its method
    /// and number, else the next of the other sources.
    fn take_fault(&mut self, route: FaultRoute) -> Option<Fault> {
        let scripted = self.scripted.take();
        scripted.or_else(|| self.shared.state().faults.next(route))
    }

    pub(super) async fn create_session(
        &mut self,
        req: Request<Incoming>,
        path: &ItemPath,
        now: SystemTime,
    ) -> Outcome {
        let fault = self.take_fault(FaultRoute::Create);
        if let Some(outcome) = self.fault_answer(fault).await {
            linger(req.into_body());
            return outcome;
        }
        match fault {
            Some(Fault::ResetMidBody) => {
                self.fault = fault;
                return Err(Dropped);
            }
            Some(Fault::Slow(d)) => {
                self.fault = fault;
                tokio::time::sleep(d).await;
            }
            _ => {}
        }
        let known = {
            let state = self.shared.state();
            state
                .items
                .get(&path.id)
                .is_some_and(|i| i.path.kind == path.kind)
        };
        if !known {
            linger(req.into_body());
            return Ok(self.error(&RequestError::ItemNotFound));
        }
        let item = match self.json_body(req, AttachmentItem::from_request_json).await {
            Ok(item) => item,
            Err(res) => return Ok(res),
        };
        let res = self.open_session(path, item, now);
        if fault == Some(Fault::LoseResponse) {
            self.fault = fault;
            return Err(Dropped);
        }
        Ok(res)
    }

    /// Opens a session for `item` on the item at `path`, with the dialect's rules
    /// and the breaks that loosen them, and answers as the dialect does.
    fn open_session(
        &self,
        path: &ItemPath,
        item: AttachmentItem,
        now: SystemTime,
    ) -> Response<Vec<u8>> {
        let dialect = self.dialect();
        let mut limits = self.shared.options.limits.clone().with_rules_of(&dialect);
        if self.breaks(Break::NoFragmentLimit) {
            limits = limits.with_max_fragment(u64::MAX);
        }
        if self.breaks(Break::ResendIs416) {
            limits.reject_resend = true;
        }
        if self.breaks(Break::TakesOddFragments) {
            limits.fragment_quantum = None;
        }
        let session = match Session::open(now, item.size, &limits) {
            Ok(session) => session,
            Err(e) => return self.error(&e),
        };
        let res = {
            let mut state = self.shared.state();
            let sid = state.id("s");
            let attachment_id = state.id("AAMk-att");
            let credential = format!("{:016x}{:016x}", state.rng.u64(..), state.rng.u64(..));
            let url = format!(
                "{}{}?authtoken={credential}",
                self.shared.public_url,
                upload_path(&sid)
            );
            let res = dialect.created(&url, session.expires_at(), &session.next_expected());
            let bytes = vec![0u8; usize::try_from(item.size).unwrap_or(0)];
            state.sessions.insert(
                sid,
                FakeSession {
                    session,
                    item: path.clone(),
                    attachment_id,
                    attachment: item,
                    credential,
                    bytes,
                },
            );
            res
        };
        self.restyle(res, None)
    }

    pub(super) async fn upload(
        &mut self,
        req: Request<Incoming>,
        id: &str,
        now: SystemTime,
    ) -> Outcome {
        let route = match *req.method() {
            Method::PUT => FaultRoute::Put,
            Method::GET => FaultRoute::Status,
            _ => FaultRoute::Cancel,
        };
        if let Some(err) = self.refusal(&req, id) {
            linger(req.into_body());
            return Ok(self.error(&err));
        }
        let fault = self.take_fault(route);
        if let Some(outcome) = self.fault_answer(fault).await {
            linger(req.into_body());
            return outcome;
        }
        match fault {
            Some(Fault::Slow(d)) => {
                self.fault = fault;
                tokio::time::sleep(d).await;
            }
            Some(Fault::Expire) => {
                let mut state = self.shared.state();
                if let Some(s) = state.sessions.get_mut(id) {
                    let at = s.session.expires_at();
                    if s.session.handle_timeout(at).is_some() {
                        self.fault = fault;
                    }
                }
            }
            Some(Fault::ResetMidBody) if route != FaultRoute::Put => {
                self.fault = fault;
                return Err(Dropped);
            }
            _ => {}
        }
        let reset = fault == Some(Fault::ResetMidBody);
        let mut res = match route {
            FaultRoute::Put => self.put(req, id, now, reset).await?,
            FaultRoute::Status => self.status(id, now),
            _ => self.delete(id, now),
        };
        match fault {
            Some(Fault::LoseResponse) => {
                self.fault = fault;
                return Err(Dropped);
            }
            Some(Fault::Misreport { from })
                if route != FaultRoute::Cancel && res.status().is_success() =>
            {
                self.fault = fault;
                res = self.misreport(id, from, route == FaultRoute::Put);
            }
            _ => {}
        }
        Ok(res)
    }

    /// Why a request to an uploadUrl is refused before anything else: an unknown
    /// session, or not its credential.
    fn refusal(&self, req: &Request<Incoming>, id: &str) -> Option<RequestError> {
        let state = self.shared.state();
        let Some(s) = state.sessions.get(id) else {
            return Some(RequestError::SessionNotFound);
        };
        let expected = format!("authtoken={}", s.credential);
        (req.uri().query() != Some(expected.as_str()))
            .then_some(RequestError::InvalidUploadCredential)
    }

    /// A progress answer (to a fragment when `put`, else to a status request) that
    /// says every byte from `from` to the end is expected, whatever the session holds.
    fn misreport(&self, id: &str, from: u64, put: bool) -> Response<Vec<u8>> {
        let Some((size, expires_at)) =
            self.with_session(id, |s| (s.session.size(), s.session.expires_at()))
        else {
            return self.error(&RequestError::SessionNotFound);
        };
        let answer = Answer::Progress {
            next_expected: ByteRange::new(from, size)
                .map_or_else(RangeSet::new, RangeSet::from_range),
            expires_at,
        };
        let res = if put {
            self.dialect().answer(&answer, "")
        } else {
            self.dialect().status(&answer, "")
        };
        self.restyle(res, None)
    }

    pub(super) fn status(&self, id: &str, now: SystemTime) -> Response<Vec<u8>> {
        let mut state = self.shared.state();
        let Some(s) = state.sessions.get_mut(id) else {
            return self.error(&RequestError::SessionNotFound);
        };
        if self.breaks(Break::ForgetsCompleted) && s.session.phase() == Phase::Completed {
            return self.error(&RequestError::SessionNotFound);
        }
        match s.session.status(now) {
            Ok(answer) => {
                // Status GETs are 200 in every dialect (OneDrive's 202 is for fragments).
                let res = self.dialect().status(&answer, "");
                self.restyle(res, None)
            }
            Err(e) => self.error(&e),
        }
    }

    fn delete(&self, id: &str, now: SystemTime) -> Response<Vec<u8>> {
        let mut state = self.shared.state();
        let Some(s) = state.sessions.get_mut(id) else {
            return self.error(&RequestError::SessionNotFound);
        };
        match s.session.cancel(now) {
            Ok(_closed) if self.breaks(Break::DeleteAnswers200) => {
                respond::json(StatusCode::OK, &json!({}))
            }
            Ok(_closed) => respond::deleted(),
            Err(e) => self.error(&e),
        }
    }
}
