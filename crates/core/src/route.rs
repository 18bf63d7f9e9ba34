//! Graph's URL space as upsession serves it: parsing request paths into routes and
//! writing the paths clients call.
//!
//! Every route lives under `/v1.0` and `/beta`, for `/me` and `/users/{id-or-upn}`.

use std::fmt;

use http::Method;
use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};
use serde::{Deserialize, Serialize};

use crate::error::RequestError;

/// The API version segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Version {
    /// `/v1.0`
    V1,
    /// `/beta`
    Beta,
}

impl Version {
    /// The path segment.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::V1 => "v1.0",
            Self::Beta => "beta",
        }
    }
}

/// Whose mailbox: `/me` or `/users/{id-or-userPrincipalName}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum User {
    /// `/me`
    Me,
    /// `/users/{id}`
    Id(String),
}

/// The kind of item an attachment hangs on (`"message"` or `"event"` in JSON).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ItemKind {
    /// A message (`/messages`).
    Message,
    /// An event (`/events`, or `/calendarView` which names the same events).
    Event,
}

impl ItemKind {
    /// The collection segment that creates and lists this kind.
    pub const fn collection(self) -> &'static str {
        match self {
            Self::Message => "messages",
            Self::Event => "events",
        }
    }
}

/// A path to one message or event.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ItemPath {
    /// API version.
    pub version: Version,
    /// Mailbox.
    pub user: User,
    /// Message or event.
    pub kind: ItemKind,
    /// The item id.
    pub id: String,
}

/// Characters escaped in a path segment we write (RFC 3986 `pchar` keeps the rest).
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}');

fn seg(s: &str) -> impl fmt::Display + '_ {
    utf8_percent_encode(s, SEGMENT)
}

impl fmt::Display for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Me => f.write_str("me"),
            Self::Id(id) => write!(f, "users/{}", seg(id)),
        }
    }
}

impl ItemPath {
    /// `/{version}/{user}/{messages|events}/{id}`
    pub fn path(&self) -> String {
        format!(
            "/{}/{}/{}/{}",
            self.version.as_str(),
            self.user,
            self.kind.collection(),
            seg(&self.id)
        )
    }

    /// `…/attachments/createUploadSession`
    pub fn create_upload_session_path(&self) -> String {
        format!("{}/attachments/createUploadSession", self.path())
    }

    /// `…/attachments/{attachment_id}`
    pub fn attachment_path(&self, attachment_id: &str) -> String {
        format!("{}/attachments/{}", self.path(), seg(attachment_id))
    }

    /// The attachment's path in Outlook REST's style, as real Outlook writes its
    /// `Location`: `/api/v2.0/{me|Users('u')}/{Messages|Events}('id')/Attachments('aid')`.
    pub fn outlook_attachment_path(&self, attachment_id: &str) -> String {
        let user = match &self.user {
            User::Me => "me".to_owned(),
            User::Id(u) => format!("Users('{}')", seg(u)),
        };
        let kind = match self.kind {
            ItemKind::Message => "Messages",
            ItemKind::Event => "Events",
        };
        format!(
            "/api/v2.0/{user}/{kind}('{}')/Attachments('{}')",
            seg(&self.id),
            seg(attachment_id)
        )
    }
}

/// `/{version}/{user}/{messages|events}`: where drafts and events are created.
pub fn collection_path(version: Version, user: &User, kind: ItemKind) -> String {
    format!("/{}/{user}/{}", version.as_str(), kind.collection())
}

/// Whether `text` is a bare `host` or `host:port` (an IPv6 host in brackets), as
/// an absolute URL built on it needs: a host, a port below 65536 if any, no user
/// info, path or query.
///
/// ```
/// use upsession_core::route::is_host_and_port;
///
/// assert!(is_host_and_port("box.lan:8080") && is_host_and_port("[::1]"));
/// assert!(!is_host_and_port("box.lan:") && !is_host_and_port("user@box.lan"));
/// ```
#[must_use]
pub fn is_host_and_port(text: &str) -> bool {
    let Ok(authority) = text.parse::<http::uri::Authority>() else {
        return false;
    };
    if authority.as_str() != text || text.contains('@') || authority.host().is_empty() {
        return false;
    }
    match text.rfind(':') {
        // Not a colon inside `[v6]`.
        Some(i) if !text[i..].contains(']') => text[i + 1..].parse::<u16>().is_ok(),
        _ => true,
    }
}

/// The hosts of Microsoft Graph: the global service and the national clouds (US
/// Government L4 and L5, China operated by 21Vianet).
pub const MICROSOFT_GRAPH_HOSTS: [&str; 4] = [
    "graph.microsoft.com",
    "graph.microsoft.us",
    "dod-graph.microsoft.us",
    "microsoftgraph.chinacloudapi.cn",
];

/// Whether `host` is one of [`MICROSOFT_GRAPH_HOSTS`] (any case, a trailing dot
/// allowed): uploads there meet Outlook's real throttling, so a client paces them
/// by default.
///
/// ```
/// use upsession_core::route::is_microsoft_graph_host;
///
/// assert!(is_microsoft_graph_host("graph.microsoft.com"));
/// assert!(is_microsoft_graph_host("Graph.Microsoft.US."));
/// assert!(!is_microsoft_graph_host("127.0.0.1"));
/// assert!(!is_microsoft_graph_host("graph.microsoft.com.evil.example"));
/// ```
#[must_use]
pub fn is_microsoft_graph_host(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    MICROSOFT_GRAPH_HOSTS
        .iter()
        .any(|h| h.eq_ignore_ascii_case(host))
}

/// The path of an uploadUrl: `/uploads/{session_id}`.
pub fn upload_path(session_id: &str) -> String {
    format!("/uploads/{}", seg(session_id))
}

/// Whose drive a drive route names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Drive {
    /// `/me/drive` or `/users/{id}/drive`: that user's drive.
    Of(User),
    /// `/drives/{drive-id}`.
    Id(String),
}

/// Where a drive route's path starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DriveBase {
    /// `root`
    Root,
    /// `items/{id}`
    Item(String),
}

/// A drive item as a route names it: a drive, a base (the root or an item by id),
/// and the path below it (`root:/a/b.txt:` is `["a", "b.txt"]`; empty for the base
/// itself).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DrivePath {
    /// API version.
    pub version: Version,
    /// Whose drive.
    pub drive: Drive,
    /// Where the path starts.
    pub base: DriveBase,
    /// The path's segments below the base, percent-decoded.
    pub path: Vec<String>,
}

impl DrivePath {
    /// The last segment of the path: a new file's name.
    #[must_use]
    pub fn name(&self) -> Option<&str> {
        self.path.last().map(String::as_str)
    }
}

/// A request path understood by the server.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Route {
    /// `GET /healthz` (also `/v1.0/healthz`, `/beta/healthz`): the process
    /// answers.
    Health,
    /// `GET /readyz` (also under `/v1.0` and `/beta`): the store and its
    /// database answer too.
    Ready,
    /// `GET /metrics` (also under `/v1.0` and `/beta`)
    Metrics,
    /// `POST /{v}/{user}/{messages|events}`
    CreateItem {
        /// API version.
        version: Version,
        /// Mailbox.
        user: User,
        /// Message or event.
        kind: ItemKind,
    },
    /// `GET /{v}/{user}/{kind}/{id}`
    Item(ItemPath),
    /// `GET …/{id}/attachments` (the list), `POST …/{id}/attachments` (a small file)
    Attachments(ItemPath),
    /// `GET …/{id}/attachments/{aid}`; `DELETE` removes the attachment.
    Attachment(ItemPath, String),
    /// `GET …/{id}/attachments/{aid}/$value`
    AttachmentValue(ItemPath, String),
    /// `POST …/{id}/attachments/createUploadSession` (also `…/attachments/{x}/createUploadSession`)
    CreateUploadSession(ItemPath),
    /// `PUT|GET|DELETE /uploads/{session_id}`
    Upload(String),
    /// `POST /{v}/{me|users/{id}}/drive/root:/{path}:/createUploadSession`,
    /// `…/drive/items/{parent-id}:/{name}:/createUploadSession`,
    /// `…/drive/items/{id}/createUploadSession` (an existing file), and the same
    /// under `/drives/{drive-id}`: an upload session for a drive item.
    DriveCreateUploadSession(DrivePath),
    /// `GET /{v}/{me|users/{id}}/drive` or `/{v}/drives/{id}`: the drive itself.
    Drive(Version, Drive),
    /// `GET` (metadata) or `DELETE` of `…/drive/items/{id}` or `…/drive/root:/{path}`.
    DriveItem(DrivePath),
    /// `GET …/drive/items/{id}/content` or `…/drive/root:/{path}:/content`.
    DriveContent(DrivePath),
    /// `GET /_upsession/sessions`: the test double's inspection of sessions.
    AdminSessions,
    /// `GET|PUT /_upsession/faults`: the test double's fault plan.
    AdminFaults,
}

impl Route {
    /// Reads a request path (without the query). Segments are percent-decoded.
    ///
    /// ```
    /// use upsession_core::route::{ItemKind, Route, User, Version};
    ///
    /// let r = Route::parse("/beta/users/a%40b.com/calendarView/E1/attachments/createUploadSession").unwrap();
    /// let Route::CreateUploadSession(item) = r else { panic!() };
    /// assert_eq!((item.version, item.kind, item.id.as_str()), (Version::Beta, ItemKind::Event, "E1"));
    /// assert_eq!(item.user, User::Id("a@b.com".into()));
    /// ```
    pub fn parse(path: &str) -> Result<Self, RequestError> {
        let no_route = || RequestError::NoRoute(path.chars().take(200).collect());
        let raw: Vec<&str> = path
            .strip_prefix('/')
            .ok_or_else(no_route)?
            .split('/')
            .collect();
        let mut segs = Vec::with_capacity(raw.len());
        for s in raw {
            segs.push(
                percent_decode_str(s)
                    .decode_utf8()
                    .map_err(|_| no_route())?
                    .into_owned(),
            );
        }
        let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
        match segs.as_slice() {
            // Also under the versions, as every route of the contract.
            ["healthz"] | ["v1.0" | "beta", "healthz"] => return Ok(Self::Health),
            ["readyz"] | ["v1.0" | "beta", "readyz"] => return Ok(Self::Ready),
            ["metrics"] | ["v1.0" | "beta", "metrics"] => return Ok(Self::Metrics),
            ["uploads", id] if !id.is_empty() => return Ok(Self::Upload((*id).to_owned())),
            ["_upsession", "sessions"] => return Ok(Self::AdminSessions),
            ["_upsession", "faults"] => return Ok(Self::AdminFaults),
            _ => {}
        }
        if let ["api", "v2.0", user, item, att, rest @ ..] = segs.as_slice() {
            return Self::parse_outlook(user, item, att, rest).ok_or_else(no_route);
        }
        let (version, rest) = match segs.split_first() {
            Some((&"v1.0", rest)) => (Version::V1, rest),
            Some((&"beta", rest)) => (Version::Beta, rest),
            _ => return Err(no_route()),
        };
        if let ["drives", id, rest @ ..] = rest
            && !id.is_empty()
        {
            return Self::parse_drive(version, Drive::Id((*id).to_owned()), rest)
                .ok_or_else(no_route);
        }
        let (user, rest) = match rest {
            ["me", rest @ ..] => (User::Me, rest),
            ["users", id, rest @ ..] if !id.is_empty() => (User::Id((*id).to_owned()), rest),
            _ => return Err(no_route()),
        };
        if let [d, rest @ ..] = rest
            && d.eq_ignore_ascii_case("drive")
        {
            return Self::parse_drive(version, Drive::Of(user), rest).ok_or_else(no_route);
        }
        // `mailFolders/{Drafts|id}/messages…` names the same messages (python-o365
        // creates its drafts there); folders are not kept apart.
        let rest = match rest {
            [f, folder, tail @ ..]
                if f.eq_ignore_ascii_case("mailFolders")
                    && !folder.is_empty()
                    && tail
                        .first()
                        .is_some_and(|m| m.eq_ignore_ascii_case("messages")) =>
            {
                tail
            }
            _ => rest,
        };
        let (kind, rest) = match rest {
            [c, rest @ ..] if c.eq_ignore_ascii_case("messages") => (ItemKind::Message, rest),
            [c, rest @ ..]
                if c.eq_ignore_ascii_case("events") || c.eq_ignore_ascii_case("calendarView") =>
            {
                (ItemKind::Event, rest)
            }
            _ => return Err(no_route()),
        };
        let Some((id, rest)) = rest.split_first() else {
            return Ok(Self::CreateItem {
                version,
                user,
                kind,
            });
        };
        if id.is_empty() {
            return Err(no_route());
        }
        let item = ItemPath {
            version,
            user,
            kind,
            id: (*id).to_owned(),
        };
        Self::parse_item_rest(item, rest).ok_or_else(no_route)
    }

    /// What follows `…/drive` (or `/drives/{id}`): `root`, `root:/{path}[:[/tail]]`,
    /// `items/{id}[/tail]` or `items/{id}:/{path}:[/tail]`, the tail being nothing,
    /// `content` or `createUploadSession`.
    fn parse_drive(version: Version, drive: Drive, rest: &[&str]) -> Option<Self> {
        let is = |s: &str, name: &str| s.eq_ignore_ascii_case(name);
        if rest.is_empty() {
            return Some(Self::Drive(version, drive));
        }
        // The Python SDK's builders percent-encode `root:/a/b.txt:` as one segment
        // of `items/{id}`: split what decoding joined.
        let joined = rest.join("/");
        let rest: Vec<&str> = joined.split('/').collect();
        // `items/root` is the root by its alias.
        let rest: &[&str] = match rest.as_slice() {
            [i, r, ..] if is(i, "items") && (is(r, "root") || is(r, "root:")) => &rest[1..],
            _ => &rest,
        };
        let (base, after) = match rest {
            [r, tail @ ..] if is(r, "root") => (DriveBase::Root, Err(tail)),
            [r, path @ ..] if is(r, "root:") => (DriveBase::Root, Ok(path)),
            [i, id, tail @ ..] if is(i, "items") && !id.is_empty() && !id.ends_with(':') => {
                (DriveBase::Item((*id).to_owned()), Err(tail))
            }
            [i, id, path @ ..] if is(i, "items") && id.len() > 1 && id.ends_with(':') => {
                let id = id.strip_suffix(':')?;
                (DriveBase::Item(id.to_owned()), Ok(path))
            }
            _ => return None,
        };
        // `Ok(path…)`: segments up to one ending with `:` are the path (all of
        // them when none does: `root:/a/b.txt` names the item too), then the tail.
        let (path, tail): (Vec<String>, &[&str]) = match after {
            Err(tail) => (Vec::new(), tail),
            Ok(segs) => {
                let end = segs.iter().position(|s| s.ends_with(':'));
                let (path, tail) = match end {
                    Some(i) => (&segs[..=i], &segs[i + 1..]),
                    None => (segs, &[][..]),
                };
                let mut path: Vec<String> = path.iter().map(|s| (*s).to_owned()).collect();
                if let Some(last) = path.last_mut()
                    && end.is_some()
                {
                    last.pop();
                }
                // `root:/:` or an empty segment (`a//b`) names nothing.
                if path.is_empty() || path.iter().any(String::is_empty) {
                    return None;
                }
                (path, tail)
            }
        };
        let at = DrivePath {
            version,
            drive,
            base,
            path,
        };
        Some(match tail {
            [] => Self::DriveItem(at),
            [c] if is(c, "content") => Self::DriveContent(at),
            // A new file names its path; an existing file (to replace its bytes)
            // may be named by id alone. The root is never a file.
            [c] if is(c, "createUploadSession")
                && (!at.path.is_empty() || matches!(at.base, DriveBase::Item(_))) =>
            {
                Self::DriveCreateUploadSession(at)
            }
            _ => return None,
        })
    }

    /// What follows `…/{messages|events}/{id}`.
    fn parse_item_rest(item: ItemPath, rest: &[&str]) -> Option<Self> {
        let is = |s: &str, name: &str| s.eq_ignore_ascii_case(name);
        Some(match rest {
            [] => Self::Item(item),
            [a] if is(a, "attachments") => Self::Attachments(item),
            [a, c] if is(a, "attachments") && is(c, "createUploadSession") => {
                Self::CreateUploadSession(item)
            }
            // The beta page's spelling, `…/attachments/{id}/createUploadSession`.
            [a, _, c] if is(a, "attachments") && is(c, "createUploadSession") => {
                Self::CreateUploadSession(item)
            }
            [a, aid] if is(a, "attachments") && !aid.is_empty() => {
                Self::Attachment(item, (*aid).to_owned())
            }
            [a, aid, v] if is(a, "attachments") && *v == "$value" => {
                Self::AttachmentValue(item, (*aid).to_owned())
            }
            _ => return None,
        })
    }

    /// Outlook REST's attachment URLs (what the outlook dialect's `Location` names).
    fn parse_outlook(user: &str, item: &str, att: &str, rest: &[&str]) -> Option<Self> {
        fn call<'a>(seg: &'a str, name: &str) -> Option<&'a str> {
            let (n, arg) = seg.split_once("('")?;
            let arg = arg.strip_suffix("')")?;
            (n.eq_ignore_ascii_case(name) && !arg.is_empty()).then_some(arg)
        }
        let user = if user.eq_ignore_ascii_case("me") {
            User::Me
        } else {
            User::Id(call(user, "Users")?.to_owned())
        };
        let (kind, id) = match call(item, "Messages") {
            Some(id) => (ItemKind::Message, id),
            None => (ItemKind::Event, call(item, "Events")?),
        };
        let item = ItemPath {
            version: Version::V1,
            user,
            kind,
            id: id.to_owned(),
        };
        let aid = call(att, "Attachments")?.to_owned();
        match rest {
            [] => Some(Self::Attachment(item, aid)),
            ["$value"] => Some(Self::AttachmentValue(item, aid)),
            _ => None,
        }
    }

    /// Whether `method` is served on this route; `Err` is the 405 to answer.
    pub fn check_method(&self, method: &Method) -> Result<(), RequestError> {
        let ok = match self {
            Self::Health
            | Self::Ready
            | Self::Metrics
            | Self::Item(_)
            | Self::AttachmentValue(..)
            | Self::DriveContent(_)
            | Self::Drive(..) => method == Method::GET || method == Method::HEAD,
            Self::Attachment(..) | Self::DriveItem(_) => {
                method == Method::GET || method == Method::HEAD || method == Method::DELETE
            }
            // Listed, or a small file added.
            Self::Attachments(_) => {
                method == Method::GET || method == Method::HEAD || method == Method::POST
            }
            Self::CreateItem { .. }
            | Self::CreateUploadSession(_)
            | Self::DriveCreateUploadSession(_) => method == Method::POST,
            // POST: a drive upload's explicit commit (deferCommit).
            Self::Upload(_) => {
                method == Method::PUT
                    || method == Method::GET
                    || method == Method::DELETE
                    || method == Method::POST
            }
            Self::AdminSessions => method == Method::GET,
            Self::AdminFaults => method == Method::GET || method == Method::PUT,
        };
        if ok {
            Ok(())
        } else {
            Err(RequestError::MethodNotAllowed(method.to_string()))
        }
    }

    /// Whether the route needs the bearer token (Graph routes do; health, metrics
    /// and uploadUrls do not).
    pub const fn needs_bearer(&self) -> bool {
        !matches!(
            self,
            Self::Health
                | Self::Ready
                | Self::Metrics
                | Self::Upload(_)
                | Self::AdminSessions
                | Self::AdminFaults
        )
    }

    /// The mailbox (`/me` or `/users/{id}`) a Graph route touches and what of it
    /// (mail, calendar, files), for authorization; `None` for routes outside any
    /// mailbox. `/drives/{id}` is the caller's own (the engine then checks that the
    /// drive is theirs).
    #[must_use]
    pub fn mailbox(&self) -> Option<(&User, crate::identity::Resource)> {
        use crate::identity::Resource;
        static ME: User = User::Me;
        let of_kind = |kind: ItemKind| match kind {
            ItemKind::Message => Resource::Mail,
            ItemKind::Event => Resource::Calendar,
        };
        match self {
            Self::CreateItem { user, kind, .. } => Some((user, of_kind(*kind))),
            Self::Item(path)
            | Self::Attachments(path)
            | Self::Attachment(path, _)
            | Self::AttachmentValue(path, _)
            | Self::CreateUploadSession(path) => Some((&path.user, of_kind(path.kind))),
            Self::DriveCreateUploadSession(DrivePath { drive, .. })
            | Self::DriveItem(DrivePath { drive, .. })
            | Self::DriveContent(DrivePath { drive, .. })
            | Self::Drive(_, drive) => match drive {
                Drive::Of(user) => Some((user, Resource::Files)),
                Drive::Id(_) => Some((&ME, Resource::Files)),
            },
            Self::Health
            | Self::Ready
            | Self::Metrics
            | Self::Upload(_)
            | Self::AdminSessions
            | Self::AdminFaults => None,
        }
    }
}

#[cfg(test)]
#[allow(clippy::pedantic)] // test code favours brevity over pedantry
mod tests {
    use super::*;

    fn drive(version: Version, drive: Drive, base: DriveBase, path: &[&str]) -> DrivePath {
        DrivePath {
            version,
            drive,
            base,
            path: path.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn drive_routes_in_every_form_graph_documents() {
        let me = || Drive::Of(User::Me);
        let root = DriveBase::Root;
        let item = |id: &str| DriveBase::Item(id.to_owned());
        for (path, want) in [
            (
                "/v1.0/me/drive/root:/folder/report%20v2.pdf:/createUploadSession",
                Route::DriveCreateUploadSession(drive(
                    Version::V1,
                    me(),
                    root.clone(),
                    &["folder", "report v2.pdf"],
                )),
            ),
            (
                "/beta/users/alice@contoso.com/drive/items/P1:/f.bin:/createUploadSession",
                Route::DriveCreateUploadSession(drive(
                    Version::Beta,
                    Drive::Of(User::Id("alice@contoso.com".into())),
                    item("P1"),
                    &["f.bin"],
                )),
            ),
            (
                "/v1.0/drives/b!xyz/items/P1:/f.bin:/createUploadSession",
                Route::DriveCreateUploadSession(drive(
                    Version::V1,
                    Drive::Id("b!xyz".into()),
                    item("P1"),
                    &["f.bin"],
                )),
            ),
            (
                "/v1.0/me/drive/items/I1",
                Route::DriveItem(drive(Version::V1, me(), item("I1"), &[])),
            ),
            // An existing file's bytes replaced: named by its id alone.
            (
                "/v1.0/me/drive/items/I1/createUploadSession",
                Route::DriveCreateUploadSession(drive(Version::V1, me(), item("I1"), &[])),
            ),
            (
                "/v1.0/me/drive/items/I1/content",
                Route::DriveContent(drive(Version::V1, me(), item("I1"), &[])),
            ),
            (
                "/v1.0/me/drive/root",
                Route::DriveItem(drive(Version::V1, me(), root.clone(), &[])),
            ),
            (
                "/v1.0/me/drive/root:/a/b.txt",
                Route::DriveItem(drive(Version::V1, me(), root.clone(), &["a", "b.txt"])),
            ),
            (
                "/v1.0/me/drive/root:/a/b.txt:",
                Route::DriveItem(drive(Version::V1, me(), root.clone(), &["a", "b.txt"])),
            ),
            (
                "/v1.0/me/drive/root:/a/b.txt:/content",
                Route::DriveContent(drive(Version::V1, me(), root.clone(), &["a", "b.txt"])),
            ),
            // The Python SDK's form: `root:/…:` percent-encoded into one segment.
            (
                "/v1.0/drives/D1/items/root%3A%2FDocs%2Fbig%20file%20%231.bin%3A/createUploadSession",
                Route::DriveCreateUploadSession(drive(
                    Version::V1,
                    Drive::Id("D1".into()),
                    root.clone(),
                    &["Docs", "big file #1.bin"],
                )),
            ),
            (
                "/v1.0/me/drive/items/root",
                Route::DriveItem(drive(Version::V1, me(), root.clone(), &[])),
            ),
            ("/v1.0/me/drive", Route::Drive(Version::V1, me())),
            (
                "/beta/drives/D1",
                Route::Drive(Version::Beta, Drive::Id("D1".into())),
            ),
        ] {
            assert_eq!(Route::parse(path).unwrap(), want, "{path}");
        }
        for bad in [
            "/v1.0/me/drive/root:/:/createUploadSession",
            "/v1.0/me/drive/root:/a//b:/content",
            "/v1.0/me/drive/root/createUploadSession",
            "/v1.0/me/drive/root:/a:/children",
            "/v1.0/drives//items/I1",
            "/v1.0/me/drive/items/:/a:/content",
        ] {
            assert!(Route::parse(bad).is_err(), "{bad}");
        }
        let upload = Route::parse("/v1.0/me/drive/root:/x/y.bin:/createUploadSession").unwrap();
        assert!(upload.check_method(&Method::POST).is_ok());
        assert!(upload.check_method(&Method::GET).is_err());
        let Route::DriveCreateUploadSession(at) = upload else {
            panic!()
        };
        assert_eq!(at.name(), Some("y.bin"));
        let item = Route::parse("/v1.0/me/drive/items/I1").unwrap();
        assert!(item.check_method(&Method::DELETE).is_ok() && item.needs_bearer());
    }

    #[test]
    fn item_kinds_keep_their_stored_spelling() {
        // Session records on disk and in PostgreSQL hold these strings.
        for (kind, text) in [
            (ItemKind::Message, "\"message\""),
            (ItemKind::Event, "\"event\""),
        ] {
            assert_eq!(serde_json::to_string(&kind).unwrap(), text);
            assert_eq!(serde_json::from_str::<ItemKind>(text).unwrap(), kind);
        }
    }

    fn item(version: Version, user: User, kind: ItemKind, id: &str) -> ItemPath {
        ItemPath {
            version,
            user,
            kind,
            id: id.into(),
        }
    }

    #[test]
    fn hosts_and_ports_are_bare_and_valid() {
        use super::is_host_and_port;
        for good in [
            "box.lan",
            "box.lan:8080",
            "127.0.0.1:1",
            "[::1]",
            "[::1]:65535",
        ] {
            assert!(is_host_and_port(good), "{good}");
        }
        for bad in [
            "",
            ":8080",
            "box.lan:",
            "box.lan:abc",
            "box.lan:65536",
            "user@box.lan",
            "box.lan/x",
            "box.lan?x",
            "box lan",
        ] {
            assert!(!is_host_and_port(bad), "{bad}");
        }
    }

    #[test]
    fn messages_in_a_mail_folder_are_the_same_messages() {
        let v1 = Version::V1;
        assert_eq!(
            Route::parse("/v1.0/me/mailFolders/Drafts/messages").unwrap(),
            Route::CreateItem {
                version: v1,
                user: User::Me,
                kind: ItemKind::Message
            }
        );
        assert_eq!(
            Route::parse(
                "/v1.0/users/u1/MailFolders/AAMkF/messages/M1/attachments/createUploadSession"
            )
            .unwrap(),
            Route::CreateUploadSession(item(v1, User::Id("u1".into()), ItemKind::Message, "M1"))
        );
        assert!(Route::parse("/v1.0/me/mailFolders/Drafts").is_err());
        assert!(Route::parse("/v1.0/me/mailFolders/Drafts/events").is_err());
    }

    #[test]
    fn every_contract_route_parses() {
        let m = |v, u| item(v, u, ItemKind::Message, "M1");
        let check =
            |path: &str, expected: Route| assert_eq!(Route::parse(path), Ok(expected), "{path}");
        check("/healthz", Route::Health);
        check("/readyz", Route::Ready);
        check("/beta/readyz", Route::Ready);
        check("/metrics", Route::Metrics);
        check("/v1.0/healthz", Route::Health);
        check("/beta/metrics", Route::Metrics);
        check(
            "/v1.0/me/messages",
            Route::CreateItem {
                version: Version::V1,
                user: User::Me,
                kind: ItemKind::Message,
            },
        );
        check(
            "/beta/me/events",
            Route::CreateItem {
                version: Version::Beta,
                user: User::Me,
                kind: ItemKind::Event,
            },
        );
        check(
            "/v1.0/me/messages/M1/attachments/createUploadSession",
            Route::CreateUploadSession(m(Version::V1, User::Me)),
        );
        check(
            "/beta/me/messages/M1/attachments/X/createUploadSession",
            Route::CreateUploadSession(m(Version::Beta, User::Me)),
        );
        check(
            "/v1.0/users/u1/messages/M1/attachments",
            Route::Attachments(m(Version::V1, User::Id("u1".into()))),
        );
        check(
            "/v1.0/me/messages/M1/attachments/A1",
            Route::Attachment(m(Version::V1, User::Me), "A1".into()),
        );
        check(
            "/v1.0/me/messages/M1/attachments/A1/$value",
            Route::AttachmentValue(m(Version::V1, User::Me), "A1".into()),
        );
        check(
            "/v1.0/me/messages/M1/attachments/A1/%24value",
            Route::AttachmentValue(m(Version::V1, User::Me), "A1".into()),
        );
        check(
            "/v1.0/me/calendarView/E1/attachments/createUploadSession",
            Route::CreateUploadSession(item(Version::V1, User::Me, ItemKind::Event, "E1")),
        );
        check("/uploads/abc", Route::Upload("abc".into()));
    }

    #[test]
    fn unknown_paths_are_no_route() {
        for p in [
            "",
            "/",
            "/v2.0/me/messages",
            "/v1.0/you/messages",
            "/v1.0/me/contacts/1",
            "/v1.0/me/messages//attachments",
            "/v1.0/me/messages/M1/attachments/A1/other",
            "/uploads/",
            "/v1.0/users//messages",
            "/v1.0/me/messages/%FF",
        ] {
            assert!(
                matches!(Route::parse(p), Err(RequestError::NoRoute(_))),
                "{p}"
            );
        }
    }

    #[test]
    fn paths_we_write_parse_back() {
        let user = User::Id("first.last@contoso.com".into());
        let it = item(Version::Beta, user, ItemKind::Event, "AAMk/=x");
        assert_eq!(
            Route::parse(&it.create_upload_session_path()),
            Ok(Route::CreateUploadSession(it.clone()))
        );
        assert_eq!(
            Route::parse(&it.attachment_path("A/1")),
            Ok(Route::Attachment(it.clone(), "A/1".into()))
        );
        assert_eq!(
            Route::parse(&upload_path("s1")),
            Ok(Route::Upload("s1".into()))
        );
    }

    #[test]
    fn outlook_rest_locations_parse_back() {
        let user = User::Id("a@b.com".into());
        let it = item(Version::V1, user, ItemKind::Message, "AAMk-1");
        assert_eq!(
            Route::parse(&it.outlook_attachment_path("AAMk-2")),
            Ok(Route::Attachment(it.clone(), "AAMk-2".into()))
        );
        let me = item(Version::V1, User::Me, ItemKind::Event, "E");
        assert_eq!(
            Route::parse(&format!("{}/$value", me.outlook_attachment_path("A"))),
            Ok(Route::AttachmentValue(me, "A".into()))
        );
        assert!(Route::parse("/api/v2.0/me/Contacts('x')/Attachments('a')").is_err());
    }

    #[test]
    fn methods_are_checked_per_route() {
        assert!(Route::Upload("x".into()).check_method(&Method::PUT).is_ok());
        // POST commits a drive upload that deferred its commit.
        assert!(
            Route::Upload("x".into())
                .check_method(&Method::PATCH)
                .is_err()
        );
        assert!(Route::Health.check_method(&Method::DELETE).is_err());
        let attachments = Route::parse("/v1.0/users/u/calendarView/E/attachments").unwrap();
        assert!(attachments.check_method(&Method::POST).is_ok());
        assert!(attachments.check_method(&Method::PUT).is_err());
        assert!(!Route::Upload("x".into()).needs_bearer());
        // An attachment is deleted by the bearer's route; its bytes and the list
        // of attachments are not.
        let Ok(attachment) = Route::parse("/v1.0/users/u1/calendarView/E1/attachments/A1") else {
            panic!("an attachment route")
        };
        assert!(attachment.check_method(&Method::DELETE).is_ok());
        assert!(attachment.needs_bearer());
        for path in [
            "/v1.0/me/messages/M1/attachments/A1/$value",
            "/v1.0/me/messages/M1/attachments",
        ] {
            let route = Route::parse(path).unwrap();
            assert!(route.check_method(&Method::DELETE).is_err(), "{path}");
        }
    }
}
