//! What an attachment is uploaded to: a message or an event, in whose mailbox.

use serde::{Deserialize, Serialize};

/// The item an attachment hangs on. The variant picks the route segment of
/// `createUploadSession`; the id is Graph's item id.
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
}

impl Target {
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

    /// The item id.
    pub fn id(&self) -> &str {
        match self {
            Self::Message(id) | Self::Event(id) | Self::CalendarView(id) => id,
        }
    }

    /// The route segment: `messages`, `events` or `calendarView`.
    pub fn collection(&self) -> &'static str {
        match self {
            Self::Message(_) => "messages",
            Self::Event(_) => "events",
            Self::CalendarView(_) => "calendarView",
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
