//! OneDrive's routes on the Graph front-end: a user's drive, its items by id or
//! path, their content, and upload sessions that make files
//! (`…/drive/root:/{path}:/createUploadSession` and its siblings). The uploadUrl
//! is the one attachments use; what differs is each answer, rendered here: 200 on
//! creation, 202 per fragment, and the file's `driveItem` at completion (201 new,
//! 200 replaced).
//!
//! The routes are the core's [`DrivePath`]; the decisions are the core's
//! [`upsession_core::drive`]; the engine's [`crate::engine::drive`] keeps the
//! drives.

use std::time::SystemTime;

use http::header::{ETAG, IF_MATCH};
use http::{HeaderValue, Request, Response, StatusCode};
use serde::Serialize;
use upsession_core::credential::CREDENTIAL_PARAM;
use upsession_core::drive::{DRIVE_TYPE, DriveUpload};
use upsession_core::error::{DriveError, RequestError};
use upsession_core::identity::Mailbox;
use upsession_core::respond;
use upsession_core::route::{Drive, DrivePath, upload_path};
use upsession_core::session::Answer;
use upsession_core::time::format_graph_time;

use crate::engine::drive::{DriveFile, drive_dialect};
use crate::engine::fail;
use crate::exchange::{ReqBody, ResBody, full, read_json_body};
use crate::graph::{Graph, app_of};
use crate::store::SessionRecord;

type Answered = Result<Response<ResBody>, crate::engine::Failure>;

/// A drive, as `GET /me/drive` answers it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DriveJson {
    id: String,
    drive_type: &'static str,
    name: &'static str,
    created_date_time: String,
    owner: Owner,
}

#[derive(Serialize)]
struct Owner {
    user: OwnerUser,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OwnerUser {
    id: String,
}

/// The `If-Match` header, if the request has one.
fn if_match(headers: &http::HeaderMap) -> Option<&str> {
    headers.get(IF_MATCH).and_then(|v| v.to_str().ok())
}

impl Graph {
    /// `GET /me/drive`, `/users/{id}/drive`, `/drives/{id}`.
    pub(crate) async fn drive_json(
        &self,
        drive: &Drive,
        mailbox: &Mailbox,
        now: SystemTime,
    ) -> Answered {
        let record = self.engine.drive(drive, mailbox, now, false).await?;
        let root = record.tree.get(&record.tree.root);
        let json = DriveJson {
            id: record.tree.id.clone(),
            drive_type: DRIVE_TYPE,
            name: "OneDrive",
            created_date_time: format_graph_time(root.map_or(now, |r| r.created)),
            owner: Owner {
                user: OwnerUser {
                    id: record.owner.as_str().to_owned(),
                },
            },
        };
        Ok(full(respond::json(StatusCode::OK, &json)))
    }

    /// `POST …/createUploadSession` on a drive path: 200 with the uploadUrl.
    pub(crate) async fn create_drive_session(
        &self,
        req: Request<ReqBody>,
        at: &DrivePath,
        mailbox: &Mailbox,
        now: SystemTime,
    ) -> Answered {
        let (base, app) = (self.base(&req), app_of(&req));
        let query = req.uri().query().map(str::to_owned);
        let if_match = if_match(req.headers()).map(str::to_owned);
        let body = read_json_body(req, self.body.idle).await?;
        let upload = DriveUpload::from_request(&body, query.as_deref()).map_err(fail)?;
        let (record, session) = self
            .engine
            .create_drive_session(at, mailbox, upload, if_match.as_deref(), &app.0, now)
            .await?;
        let credential = self.signer.sign(&record.id, session.hard_expiry());
        let upload_url = format!(
            "{base}{}?{CREDENTIAL_PARAM}={credential}",
            upload_path(&record.id)
        );
        Ok(full(drive_dialect(&self.dialect).created(
            &upload_url,
            session.expires_at(),
            &session.next_expected(),
        )))
    }

    /// The answer to a fragment of a drive upload (or a re-send of one): 202 with
    /// the ranges still expected, or, once complete, the file (201 new, 200
    /// replaced); a `deferCommit` upload answers 202 with nothing expected until
    /// its explicit commit.
    pub(crate) async fn drive_fragment_answer(
        &self,
        answer: &Answer,
        record: &SessionRecord,
        now: SystemTime,
    ) -> Answered {
        let dialect = drive_dialect(&self.dialect);
        if *answer != Answer::Completed {
            return Ok(full(dialect.answer(answer, "")));
        }
        if let Some(file) = self.engine.drive_upload_done(record, now).await? {
            return Ok(full(file_answer(&file)));
        }
        let waiting = Answer::Progress {
            next_expected: upsession_core::RangeSet::new(),
            expires_at: upsession_core::Session::restore(&record.snapshot)
                .map_or(now, |s| s.expires_at()),
        };
        Ok(full(dialect.answer(&waiting, "")))
    }

    /// `GET {uploadUrl}` of a drive upload: 200 with the ranges still expected.
    pub(crate) fn drive_status_answer(&self, answer: &Answer) -> Response<ResBody> {
        full(drive_dialect(&self.dialect).status(answer, ""))
    }

    /// `POST {uploadUrl}` with an empty body: commits a `deferCommit` upload.
    pub(crate) async fn commit_drive_upload(
        &self,
        sid: &str,
        headers: &http::HeaderMap,
        now: SystemTime,
    ) -> Answered {
        if crate::exchange::content_length(headers)?.unwrap_or(0) != 0 {
            return Err(fail(RequestError::InvalidBody(
                "the commit of an upload session has an empty body".into(),
            )));
        }
        let file = self.engine.commit_deferred(sid, now).await?;
        Ok(full(file_answer(&file)))
    }

    /// `GET …/drive/items/{id}` or `…/drive/root:/{path}`: the driveItem.
    pub(crate) async fn drive_item(
        &self,
        at: &DrivePath,
        mailbox: &Mailbox,
        now: SystemTime,
    ) -> Answered {
        let item = self.engine.drive_item(at, mailbox, now).await?;
        let mut res = respond::json(StatusCode::OK, &item);
        if let Ok(tag) = HeaderValue::from_str(&item.e_tag) {
            res.headers_mut().insert(ETAG, tag);
        }
        Ok(full(res))
    }

    /// `DELETE` of a drive item: 204.
    pub(crate) async fn delete_drive_item(
        &self,
        headers: &http::HeaderMap,
        at: &DrivePath,
        mailbox: &Mailbox,
        now: SystemTime,
    ) -> Answered {
        self.engine
            .delete_drive_item(at, mailbox, if_match(headers), now)
            .await?;
        Ok(full(respond::deleted()))
    }

    /// `GET …/content`: the file's bytes, streamed, one `Range` answered 206.
    pub(crate) async fn drive_content(
        &self,
        headers: &http::HeaderMap,
        at: &DrivePath,
        mailbox: &Mailbox,
        now: SystemTime,
    ) -> Answered {
        let (file, bytes) = self.engine.drive_content(at, mailbox, now).await?;
        if file.size != bytes.meta.size {
            tracing::error!(upload = %file.blob, "a drive file's size differs from its bytes'");
            return Err(fail(DriveError::ItemNotFound));
        }
        self.stream_bytes(&bytes, headers, &file.mime_type).await
    }
}

/// A finished upload's answer: its file, 201 when the upload made it.
fn file_answer(file: &DriveFile) -> Response<Vec<u8>> {
    let status = if file.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut res = respond::json(status, &file.item);
    if let Ok(tag) = HeaderValue::from_str(&file.item.e_tag) {
        res.headers_mut().insert(ETAG, tag);
    }
    res
}
