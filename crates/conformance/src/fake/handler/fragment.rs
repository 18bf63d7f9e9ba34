//! One fragment: the core's decision, the body, the store, and the answer.

use std::time::SystemTime;

use http::header::{CONTENT_LENGTH, CONTENT_RANGE, LOCATION};
use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use upsession_core::error::{FragmentError, RequestError, SessionError};
use upsession_core::session::{Answer, PutDecision, WriteTicket};
use upsession_core::wire::FileAttachment;
use upsession_core::{ContentRange, RangeSet, respond};

use super::body::{BodyRead, linger, read_body};
use super::{Ctx, Dropped, MAX_JSON, Outcome};
use crate::fake::{Break, FakeSession, Fault, StoredAttachment};

impl Ctx {
    pub(super) async fn put(
        &mut self,
        req: Request<Incoming>,
        id: &str,
        now: SystemTime,
        reset: bool,
    ) -> Outcome {
        let header = |name| {
            req.headers()
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
        };
        let mut content_range = header(CONTENT_RANGE).map(str::to_owned);
        let content_length = match header(CONTENT_LENGTH).map(|v| v.trim().parse::<u64>()) {
            None => None,
            Some(Ok(n)) => Some(n),
            Some(Err(_)) => {
                linger(req.into_body());
                return Ok(self.error(&RequestError::InvalidBody(
                    "Content-Length is not a number".into(),
                )));
            }
        };
        let decision = {
            let mut state = self.shared.state();
            let Some(s) = state.sessions.get_mut(id) else {
                drop(state);
                linger(req.into_body());
                return Ok(self.error(&RequestError::SessionNotFound));
            };
            if self.breaks(Break::LenientRange) {
                content_range = content_range.map(|h| {
                    h.replacen("bytes=", "bytes ", 1)
                        .split_whitespace()
                        .collect::<Vec<_>>()
                        .join(" ")
                });
            }
            if self.breaks(Break::IgnoresTotal)
                && let Some(fixed) = content_range
                    .as_deref()
                    .and_then(|h| h.parse::<ContentRange>().ok())
                    .and_then(|cr| ContentRange::new(cr.range(), s.session.size()))
            {
                content_range = Some(fixed.to_string());
            }
            let content_length = if self.breaks(Break::IgnoresContentLength) {
                None
            } else {
                content_length
            };
            s.session
                .handle_put(now, content_range.as_deref(), content_length)
        };
        match decision {
            Err(err) => self.refused(req, id, err, now).await,
            Ok(PutDecision::Replay {
                body_len, answer, ..
            }) => self.replay(req, id, body_len, &answer, now).await,
            Ok(PutDecision::Write(ticket)) => self.write(req, id, ticket, now, reset).await,
        }
    }

    /// A re-send of bytes the session holds: the body is read and checked, then
    /// answered as the first time.
    async fn replay(
        &self,
        req: Request<Incoming>,
        id: &str,
        body_len: u64,
        answer: &Answer,
        now: SystemTime,
    ) -> Outcome {
        let got = match read_body(req.into_body(), body_len, None).await {
            BodyRead::Complete(body) if body.len() as u64 == body_len => None,
            BodyRead::Complete(body) => Some(body.len() as u64),
            BodyRead::TooLong(got) | BodyRead::Broken(got) => Some(got),
            BodyRead::Stalled | BodyRead::Cut => return Err(Dropped),
        };
        if let Some(got) = got {
            return Ok(self.error(&FragmentError::BodyLength {
                expected: body_len,
                got,
            }));
        }
        if *answer == Answer::Completed && self.breaks(Break::FinalResendIs200) {
            let expires = self.expires(id).unwrap_or(now);
            let res = self.dialect().answer(
                &Answer::Progress {
                    next_expected: RangeSet::new(),
                    expires_at: expires,
                },
                "",
            );
            return Ok(self.restyle(res, None));
        }
        Ok(self.render(id, answer, true, now))
    }

    fn expires(&self, id: &str) -> Option<SystemTime> {
        self.shared
            .state()
            .sessions
            .get(id)
            .map(|s| s.session.expires_at())
    }

    /// A fragment the core refused; some breaks take it anyway.
    async fn refused(
        &mut self,
        req: Request<Incoming>,
        id: &str,
        err: SessionError,
        now: SystemTime,
    ) -> Outcome {
        match err {
            SessionError::Fragment(FragmentError::OutOfOrder { .. })
                if self.breaks(Break::AcceptsSkip) =>
            {
                linger(req.into_body());
                Ok(self.status(id, now))
            }
            SessionError::Fragment(FragmentError::Overlap {
                start,
                last,
                expected,
            }) if self.breaks(Break::TrimsOverlap) => {
                let decision = {
                    let mut state = self.shared.state();
                    let Some(s) = state.sessions.get_mut(id) else {
                        return Ok(self.error(&RequestError::SessionNotFound));
                    };
                    let trimmed = format!("bytes {expected}-{last}/{}", s.session.size());
                    s.session.handle_put(now, Some(&trimmed), None)
                };
                let Ok(PutDecision::Write(ticket)) = decision else {
                    linger(req.into_body());
                    return Ok(self.error(&err));
                };
                let skip = usize::try_from(expected - start).unwrap_or(usize::MAX);
                let BodyRead::Complete(body) =
                    read_body(req.into_body(), last - start + 1, None).await
                else {
                    self.with_session(id, |s| s.session.write_failed(ticket));
                    return Err(Dropped);
                };
                let Some(fresh) = body.get(skip..) else {
                    self.with_session(id, |s| s.session.write_failed(ticket));
                    return Ok(self.error(&err));
                };
                Ok(self.store_and_commit(id, ticket, fresh, now))
            }
            SessionError::Fragment(FragmentError::Busy) if self.breaks(Break::BusyIs500) => {
                linger(req.into_body());
                Ok(self.error(&RequestError::Internal))
            }
            err => {
                linger(req.into_body());
                Ok(self.error(&err))
            }
        }
    }

    pub(super) fn with_session<T>(
        &self,
        id: &str,
        f: impl FnOnce(&mut FakeSession) -> T,
    ) -> Option<T> {
        self.shared.state().sessions.get_mut(id).map(f)
    }

    async fn write(
        &mut self,
        req: Request<Incoming>,
        id: &str,
        ticket: WriteTicket,
        now: SystemTime,
        reset: bool,
    ) -> Outcome {
        let range = ticket.range();
        let len = range.len();
        // The bug: the fragment counts before its bytes are here.
        let (mut ticket, early) = if self.breaks(Break::CountsBeforeBody) {
            let answer = self.with_session(id, |s| s.session.commit(now, ticket));
            (None, answer)
        } else {
            (Some(ticket), None)
        };
        let limit = if self.breaks(Break::IgnoresContentLength) {
            len.saturating_add(MAX_JSON)
        } else {
            len
        };
        let read = read_body(req.into_body(), limit, reset.then_some(len / 2)).await;
        let body = match read {
            BodyRead::Complete(body)
                if body.len() as u64 == len
                    || (body.len() as u64 > len && self.breaks(Break::IgnoresContentLength)) =>
            {
                body
            }
            other => {
                if let Some(ticket) = ticket.take() {
                    self.with_session(id, |s| s.session.write_failed(ticket));
                }
                if reset {
                    self.fault = Some(Fault::ResetMidBody);
                }
                return match other {
                    BodyRead::Complete(body) => Ok(self.error(&FragmentError::BodyLength {
                        expected: len,
                        got: body.len() as u64,
                    })),
                    BodyRead::TooLong(got) => {
                        Ok(self.error(&FragmentError::BodyLength { expected: len, got }))
                    }
                    BodyRead::Stalled => Ok(self.error(&RequestError::Timeout)),
                    BodyRead::Broken(_) | BodyRead::Cut => Err(Dropped),
                };
            }
        };
        let body = &body[..usize::try_from(len).unwrap_or(usize::MAX).min(body.len())];
        match (ticket, early) {
            (Some(ticket), _) => Ok(self.store_and_commit(id, ticket, body, now)),
            (None, Some(answer)) => {
                self.store(id, range.start(), body);
                match answer {
                    Ok(answer) => {
                        if answer == Answer::Completed {
                            self.finish(id, now);
                        }
                        Ok(self.render(id, &answer, true, now))
                    }
                    Err(e) => Ok(self.error(&e)),
                }
            }
            (None, None) => Ok(self.error(&RequestError::SessionNotFound)),
        }
    }

    fn store(&self, id: &str, start: u64, body: &[u8]) {
        let keep = if self.breaks(Break::DropsLastByte) {
            body.len().saturating_sub(1)
        } else {
            body.len()
        };
        self.with_session(id, |s| {
            let start = usize::try_from(start).unwrap_or(usize::MAX);
            if let Some(dest) = s.bytes.get_mut(start..start + keep) {
                dest.copy_from_slice(&body[..keep]);
            }
        });
    }

    fn store_and_commit(
        &self,
        id: &str,
        ticket: WriteTicket,
        body: &[u8],
        now: SystemTime,
    ) -> Response<Vec<u8>> {
        self.store(id, ticket.range().start(), body);
        let last = self
            .with_session(id, |s| ticket.range().end() == s.session.size())
            .unwrap_or(true);
        let answer = if self.breaks(Break::DropsFragments) && !last {
            self.with_session(id, |s| {
                s.session.write_failed(ticket);
                s.session.status(now)
            })
        } else {
            self.with_session(id, |s| s.session.commit(now, ticket))
        };
        match answer {
            Some(Ok(answer)) => {
                if answer == Answer::Completed {
                    self.finish(id, now);
                }
                self.render(id, &answer, true, now)
            }
            Some(Err(SessionError::Superseded)) if self.breaks(Break::BusyIs500) => {
                self.error(&RequestError::Internal)
            }
            Some(Err(e)) => self.error(&e),
            None => self.error(&RequestError::SessionNotFound),
        }
    }

    /// Makes the attachment of a completed session (once).
    fn finish(&self, id: &str, now: SystemTime) {
        let mut state = self.shared.state();
        let Some(s) = state.sessions.get(id) else {
            return;
        };
        let aid = s.attachment_id.clone();
        if state.attachments.iter().any(|a| a.id == aid) {
            return;
        }
        let stored = StoredAttachment {
            id: aid.clone(),
            item_id: s.item.id.clone(),
            name: s.attachment.name.clone(),
            location: self.location(&s.item, &aid),
            bytes: s.bytes.clone(),
            attachment_item: s.attachment.clone(),
        };
        let meta = FileAttachment::new(aid.clone(), &s.attachment, now);
        let item_id = s.item.id.clone();
        state.attachments.push(stored);
        state.meta.insert(aid.clone(), meta);
        if let Some(item) = state.items.get_mut(&item_id) {
            item.attachments.push(aid);
        }
    }

    /// An answer to a `PUT` (`put`) or a status `GET`, in the dialect, with the quirks
    /// and breaks that change how it is written.
    fn render(&self, id: &str, answer: &Answer, put: bool, now: SystemTime) -> Response<Vec<u8>> {
        let state = self.shared.state();
        let Some(s) = state.sessions.get(id) else {
            drop(state);
            return self.error(&RequestError::SessionNotFound);
        };
        match answer {
            Answer::Completed
                if self.shared.options.quirks.completion_with_id
                    || self.breaks(Break::CompletionAs200) =>
            {
                let meta = FileAttachment::new(s.attachment_id.clone(), &s.attachment, now);
                self.restyle(respond::json(StatusCode::OK, &meta), None)
            }
            Answer::Completed if self.shared.options.quirks.completion_body => {
                let meta = FileAttachment::new(s.attachment_id.clone(), &s.attachment, now);
                let mut res = respond::json(StatusCode::CREATED, &meta);
                let location = self.location(&s.item, &s.attachment_id);
                if let Ok(v) = HeaderValue::from_str(&location) {
                    res.headers_mut().insert(LOCATION, v);
                }
                self.restyle(res, None)
            }
            Answer::Completed => {
                let location = self.location(&s.item, &s.attachment_id);
                self.dialect().answer(answer, &location)
            }
            _ => {
                let res = self.dialect().answer(answer, "");
                let id =
                    (put && self.breaks(Break::IdInProgress)).then_some(s.attachment_id.as_str());
                self.restyle(res, id)
            }
        }
    }
}
