//! What an upload goes to: an attachment of a message or an event, or a file in
//! a OneDrive, in whose mailbox or drive.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::drive::{CONFLICT_PARAM, ConflictBehavior};
use crate::wire::AttachmentItem;

/// What an upload goes to. The variant picks the `createUploadSession` route and
/// body: an attachment of Graph's item id, or a file at a path of the user's drive.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "camelCase")]
#[non_exhaustive]
pub enum Target {
    /// A message, usually a draft: `…/messages/{id}/attachments/createUploadSession`.
    Message(String),
    /// An event: `…/events/{id}/attachments/createUploadSession`.
    Event(String),
    /// An event reached through the calendar view:
    /// `…/calendarView/{id}/attachments/createUploadSession` (the id is an event id).
    CalendarView(String),
    /// A file in the user's drive: `…/drive/root:/{path}:/createUploadSession`,
    /// the path below the root, `/`-separated.
    Drive(DriveFile),
}

/// A file to upload to a drive: where, and what to do if its name is taken.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DriveFile {
    /// The path below the drive's root, `/`-separated (`reports/q3.pdf`).
    pub path: String,
    /// What to do when the name is taken.
    #[serde(default)]
    pub conflict: ConflictBehavior,
}

impl Target {
    /// A file at `path` below the drive's root (leading and trailing `/` and empty
    /// segments ignored), `conflict` deciding over a name taken.
    pub fn drive(path: &str, conflict: ConflictBehavior) -> Self {
        let path = path
            .split('/')
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("/");
        Self::Drive(DriveFile { path, conflict })
    }

    /// Whether this is a drive file rather than an attachment.
    pub const fn is_drive(&self) -> bool {
        matches!(self, Self::Drive(_))
    }

    /// The path segments (after `/me` or `/users/{id}`) of `createUploadSession`,
    /// before percent-encoding.
    ///
    /// ```
    /// use upsession_core::drive::ConflictBehavior;
    /// use upsession_core::target::Target;
    ///
    /// let t = Target::drive("/docs/q3.pdf", ConflictBehavior::Rename);
    /// assert_eq!(t.session_segments().join("/"), "drive/root:/docs/q3.pdf:/createUploadSession");
    /// assert_eq!(Target::message("M").session_segments().join("/"), "messages/M/attachments/createUploadSession");
    /// ```
    pub fn session_segments(&self) -> Vec<String> {
        match self {
            Self::Drive(file) => {
                let mut segments = vec!["drive".to_owned(), "root:".to_owned()];
                segments.extend(file.path.split('/').map(str::to_owned));
                if let Some(last) = segments.last_mut() {
                    last.push(':');
                }
                segments.push("createUploadSession".to_owned());
                segments
            }
            _ => self
                .attachments_segments()
                .into_iter()
                .flatten()
                .chain(["createUploadSession"])
                .map(str::to_owned)
                .collect(),
        }
    }

    /// The segments of the item's attachments (`messages/{id}/attachments`);
    /// `None` for a drive file.
    pub fn attachments_segments(&self) -> Option<[&str; 3]> {
        (!self.is_drive()).then(|| [self.collection(), self.id(), "attachments"])
    }

    /// The `createUploadSession` body for a file described by `item`.
    pub fn session_body(&self, item: &AttachmentItem) -> Value {
        match self {
            Self::Drive(file) => {
                let conflict = match file.conflict {
                    ConflictBehavior::Fail => "fail",
                    ConflictBehavior::Replace => "replace",
                    ConflictBehavior::Rename => "rename",
                };
                // The name is the path's: OneDrive wants the two to agree.
                let name = file.path.rsplit('/').next().unwrap_or(&item.name);
                serde_json::json!({
                    "item": {
                        CONFLICT_PARAM: conflict,
                        "name": name,
                        "fileSize": item.size,
                    }
                })
            }
            _ => item.to_request_json(),
        }
    }

    /// A message.
    pub fn message(id: impl Into<String>) -> Self {
        Self::Message(id.into())
    }

    /// An event.
    pub fn event(id: impl Into<String>) -> Self {
        Self::Event(id.into())
    }

    /// An event, through the calendar view.
    pub fn calendar_view(id: impl Into<String>) -> Self {
        Self::CalendarView(id.into())
    }

    /// The item id (a drive file's path).
    pub fn id(&self) -> &str {
        match self {
            Self::Message(id) | Self::Event(id) | Self::CalendarView(id) => id,
            Self::Drive(file) => &file.path,
        }
    }

    /// The route segment: `messages`, `events`, `calendarView` (or `drive`).
    pub fn collection(&self) -> &'static str {
        match self {
            Self::Message(_) => "messages",
            Self::Event(_) => "events",
            Self::CalendarView(_) => "calendarView",
            Self::Drive(_) => "drive",
        }
    }
}

/// Whose mailbox: the signed-in user's (`/me`) or another's (`/users/{id}`, where the
/// id may be a user principal name such as `adele@contoso.com`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub enum User {
    /// `/me`
    #[default]
    Me,
    /// `/users/{id-or-userPrincipalName}`
    Id(String),
}

impl User {
    /// `/users/{id}`.
    pub fn id(id: impl Into<String>) -> Self {
        Self::Id(id.into())
    }

    /// The path segments, before any percent-encoding.
    pub fn segments(&self) -> Vec<&str> {
        match self {
            Self::Me => vec!["me"],
            Self::Id(id) => vec!["users", id],
        }
    }
}
