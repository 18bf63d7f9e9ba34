//! The Graph routes around an upload: items, their attachments, their bytes.

use std::time::SystemTime;

use http::header::CONTENT_TYPE;
use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use upsession_core::error::RequestError;
use upsession_core::respond;
use upsession_core::route::{ItemKind, ItemPath, User, Version};
use upsession_core::wire::{Collection, FileAttachment, Item as WireItem, NewFileAttachment};

use super::{Ctx, Outcome};
use crate::fake::StoredAttachment;

/// The largest `POST …/attachments` body: the largest file, base64, and its JSON.
const SMALL_BODY: u64 = NewFileAttachment::MAX_SIZE.div_ceil(3) * 4 + 64 * 1024;

impl Ctx {
    pub(super) async fn create_item(
        &self,
        req: Request<Incoming>,
        version: Version,
        user: User,
        kind: ItemKind,
        now: SystemTime,
    ) -> Outcome {
        let subject = match self
            .json_body(req, WireItem::subject_from_request_json)
            .await
        {
            Ok(subject) => subject,
            Err(res) => return Ok(res),
        };
        let mut state = self.shared.state();
        let id = state.id("AAMk-item");
        let path = ItemPath {
            version,
            user,
            kind,
            id: id.clone(),
        };
        state.add_item(path, subject.clone(), now);
        Ok(respond::json(
            StatusCode::CREATED,
            &WireItem::new(id, subject, now),
        ))
    }

    pub(super) fn item(&self, path: &ItemPath) -> Response<Vec<u8>> {
        let state = self.shared.state();
        match state
            .items
            .get(&path.id)
            .filter(|i| i.path.kind == path.kind)
        {
            Some(item) => {
                let mut wire = WireItem::new(path.id.clone(), item.subject.clone(), item.created);
                wire.has_attachments = !item.attachments.is_empty();
                respond::json(StatusCode::OK, &wire)
            }
            None => self.error(&RequestError::ItemNotFound),
        }
    }

    pub(super) fn attachments(&self, path: &ItemPath) -> Response<Vec<u8>> {
        let state = self.shared.state();
        let Some(item) = state
            .items
            .get(&path.id)
            .filter(|i| i.path.kind == path.kind)
        else {
            return self.error(&RequestError::ItemNotFound);
        };
        let value: Vec<FileAttachment> = item
            .attachments
            .iter()
            .filter_map(|aid| state.meta.get(aid).cloned())
            .collect();
        respond::json(StatusCode::OK, &Collection { value })
    }

    /// `POST …/attachments`: a small file attached in one request, as Graph does
    /// below its upload-session minimum: 201 with the attachment and its `Location`.
    pub(super) async fn add_small(
        &self,
        req: Request<Incoming>,
        path: &ItemPath,
        now: SystemTime,
    ) -> Response<Vec<u8>> {
        let new = match self
            .json_body_up_to(req, SMALL_BODY, NewFileAttachment::from_request_json)
            .await
        {
            Ok(new) => new,
            Err(res) => return res,
        };
        let mut state = self.shared.state();
        if !state
            .items
            .get(&path.id)
            .is_some_and(|i| i.path.kind == path.kind)
        {
            return self.error(&RequestError::ItemNotFound);
        }
        let aid = state.id("AAMk-att");
        let meta = FileAttachment::new(aid.clone(), &new.item, now);
        let location = self.location(path, &aid);
        state.attachments.push(StoredAttachment {
            id: aid.clone(),
            item_id: path.id.clone(),
            name: new.item.name.clone(),
            location: location.clone(),
            bytes: new.bytes,
            attachment_item: new.item,
        });
        state.meta.insert(aid.clone(), meta.clone());
        if let Some(item) = state.items.get_mut(&path.id) {
            item.attachments.push(aid);
        }
        let mut res = respond::json(StatusCode::CREATED, &meta);
        if let Ok(v) = HeaderValue::from_str(&location) {
            res.headers_mut().insert(http::header::LOCATION, v);
        }
        res
    }

    pub(super) fn attachment(&self, path: &ItemPath, aid: &str, value: bool) -> Response<Vec<u8>> {
        let state = self.shared.state();
        let found = state
            .items
            .get(&path.id)
            .filter(|i| i.path.kind == path.kind && i.attachments.iter().any(|a| a == aid))
            .and_then(|_| state.meta.get(aid))
            .zip(state.attachments.iter().find(|a| a.id == aid));
        let Some((meta, stored)) = found else {
            return self.error(&RequestError::ItemNotFound);
        };
        if !value {
            return respond::json(StatusCode::OK, meta);
        }
        let mut res = Response::new(stored.bytes.clone());
        if let Ok(v) = HeaderValue::from_str(&meta.content_type) {
            res.headers_mut().insert(CONTENT_TYPE, v);
        }
        res
    }
}
