//! A drive's folders and files as one value, [`Tree`], and every change an
//! upload or a delete makes to it, decided without I/O: ids and time come in as
//! arguments.
//!
//! A store keeps a drive's tree as one record and replaces it only over the
//! [`Tree::version`] it read (compare and swap), so two nodes changing one drive
//! never lose each other's change. A file's bytes are not in the tree: its
//! [`FileEntry::blob`] names the finished upload that holds them.
//!
//! Names are compared as OneDrive compares them, ignoring case.
//!
//! ```
//! use std::time::SystemTime;
//! use upsession_core::drive::{ConflictBehavior, NewFile, Tree};
//! use upsession_core::route::DriveBase;
//!
//! let now = SystemTime::UNIX_EPOCH;
//! let mut ids = (1..).map(|n| format!("ID{n}"));
//! let mut tree = Tree::new("b!drive", "ROOT", now);
//! let path = ["reports".to_owned(), "q3.pdf".to_owned()];
//! let target = tree.target(&DriveBase::Root, &path).unwrap();
//! let file = NewFile::example("BLOB1", 3);
//! let put = tree.put_file(&target, ConflictBehavior::Fail, file, now, &mut || ids.next().unwrap()).unwrap();
//! assert!(put.created);
//! let item = tree.resolve(&DriveBase::Root, &path).unwrap();
//! assert_eq!(tree.path_of(&item.id).as_deref(), Some("/drive/root:/reports"));
//! ```

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::{
    ConflictBehavior, DriveItem, FileFacet, FolderFacet, Hashes, ParentReference, renamed,
};
use crate::error::DriveError;
use crate::route::DriveBase;
use crate::time::format_graph_time;

/// A drive: its root and every item below it. See the [module documentation](self).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tree {
    /// The drive's id.
    pub id: String,
    /// Counts the changes: a store replaces the tree only over the version it read.
    pub version: u64,
    /// The root folder's id.
    pub root: String,
    entries: BTreeMap<String, Entry>,
    /// The latest uploads whose files were replaced or deleted: a late re-send
    /// of one's last fragment must not bring the old bytes back.
    #[serde(default, skip_serializing_if = "std::collections::VecDeque::is_empty")]
    retired: std::collections::VecDeque<String>,
}

/// How many retired uploads a tree remembers (well past what a session outlives).
const RETIRED: usize = 1024;

/// A folder or a file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// Its id.
    pub id: String,
    /// Its folder (`None` for the root).
    pub parent: Option<String>,
    /// Its name (`root` for the root).
    pub name: String,
    /// When it was made.
    pub created: SystemTime,
    /// When its content or metadata last changed.
    pub modified: SystemTime,
    /// Counts changes to it (the eTag's number).
    pub version: u64,
    /// Counts changes to its content (the cTag's number).
    pub content_version: u64,
    /// A description, when an upload gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// What a file holds; `None` for a folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileEntry>,
}

/// A file's content: where its bytes are and what they hash to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileEntry {
    /// Its size in bytes.
    pub size: u64,
    /// Its MIME type.
    pub mime_type: String,
    /// Its hashes, taken as the bytes came in.
    pub hashes: Hashes,
    /// The finished upload that holds its bytes.
    pub blob: String,
}

/// A finished upload, to become a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewFile {
    /// Its content.
    pub content: FileEntry,
    /// A description, when the upload gave one.
    pub description: Option<String>,
}

impl NewFile {
    /// A file of `size` bytes held by `blob`, with made-up hashes (examples, tests).
    #[doc(hidden)]
    #[must_use]
    pub fn example(blob: &str, size: u64) -> Self {
        Self {
            content: FileEntry {
                size,
                mime_type: "application/octet-stream".into(),
                hashes: Hashes {
                    quick_xor_hash: String::new(),
                    sha256_hash: String::new(),
                },
                blob: blob.to_owned(),
            },
            description: None,
        }
    }
}

/// Where an upload's file goes: `path` below the existing item `base`, made of
/// folders and the file's name last; empty when `base` is the file itself
/// (`items/{id}/createUploadSession`, which replaces its bytes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    /// The item the path starts at.
    pub base: String,
    /// Folders, then the file's name.
    pub path: Vec<String>,
}

/// What [`Tree::put_file`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Put {
    /// The file's id.
    pub id: String,
    /// A new file (201), not new bytes for one that was there (200).
    pub created: bool,
    /// The upload that held the file's bytes before, now unused.
    pub replaced: Option<String>,
}

/// Characters OneDrive refuses in a name.
const FORBIDDEN: &[char] = &['"', '*', ':', '<', '>', '?', '/', '\\', '|'];

/// Whether OneDrive would take `name` for a file or folder.
#[must_use]
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && name.trim() == name
        && !name.ends_with('.')
        && !name
            .chars()
            .any(|c| c.is_control() || FORBIDDEN.contains(&c))
}

impl Tree {
    /// An empty drive `id` whose root is `root`, made at `now`.
    #[must_use]
    pub fn new(id: &str, root: &str, now: SystemTime) -> Self {
        let entry = Entry {
            id: root.to_owned(),
            parent: None,
            name: "root".into(),
            created: now,
            modified: now,
            version: 1,
            content_version: 1,
            description: None,
            file: None,
        };
        Self {
            id: id.to_owned(),
            version: 0,
            root: root.to_owned(),
            entries: BTreeMap::from([(root.to_owned(), entry)]),
            retired: std::collections::VecDeque::new(),
        }
    }

    /// The item `id`.
    #[must_use]
    pub fn get(&self, id: &str) -> Option<&Entry> {
        self.entries.get(id)
    }

    /// How many items the drive holds, its root included.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the drive holds only its root.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.len() <= 1
    }

    /// The child of folder `parent` called `name`, any case.
    fn child(&self, parent: &str, name: &str) -> Option<&Entry> {
        self.entries.values().find(|e| {
            e.parent.as_deref() == Some(parent) && e.name.to_lowercase() == name.to_lowercase()
        })
    }

    fn base_id(&self, base: &DriveBase) -> Result<&str, DriveError> {
        match base {
            DriveBase::Root => Ok(&self.root),
            DriveBase::Item(id) => self
                .entries
                .get(id)
                .map(|e| e.id.as_str())
                .ok_or(DriveError::ItemNotFound),
        }
    }

    /// The item a route names: `base`, then `path` below it.
    ///
    /// # Errors
    /// [`DriveError::ItemNotFound`] when any of it is missing.
    pub fn resolve(&self, base: &DriveBase, path: &[String]) -> Result<&Entry, DriveError> {
        let mut at = self.base_id(base)?;
        for name in path {
            at = &self
                .child(at, name)
                .filter(|_| self.entries[at].file.is_none())
                .ok_or(DriveError::ItemNotFound)?
                .id;
        }
        Ok(&self.entries[at])
    }

    /// Where an upload to `path` below `base` puts its file, checked now: the base
    /// exists, every name is one OneDrive takes, no file stands where a folder must
    /// be, and a target named by id alone is a file.
    ///
    /// # Errors
    /// [`DriveError::ItemNotFound`], [`DriveError::InvalidName`],
    /// [`DriveError::NotAFolder`] or [`DriveError::NotAFile`].
    pub fn target(&self, base: &DriveBase, path: &[String]) -> Result<Target, DriveError> {
        let base = self.base_id(base)?.to_owned();
        if let Some(bad) = path.iter().find(|n| !valid_name(n)) {
            return Err(DriveError::InvalidName(bad.clone()));
        }
        let target = Target {
            base,
            path: path.to_vec(),
        };
        if path.is_empty() {
            if self.entries[&target.base].file.is_none() {
                return Err(DriveError::NotAFile);
            }
        } else {
            self.folder_of(&target)?;
        }
        Ok(target)
    }

    /// The name the file of `target` has (or will have, but for a rename).
    #[must_use]
    pub fn name_of(&self, target: &Target) -> Option<String> {
        match target.path.last() {
            Some(name) => Some(name.clone()),
            None => self.entries.get(&target.base).map(|e| e.name.clone()),
        }
    }

    /// The deepest existing folder on the way to `target`'s file, and the folder
    /// names still to make.
    fn folder_of<'t>(&self, target: &'t Target) -> Result<(&str, &'t [String]), DriveError> {
        let base = self
            .entries
            .get(&target.base)
            .ok_or(DriveError::ItemNotFound)?;
        if base.file.is_some() {
            return Err(DriveError::NotAFolder(base.name.clone()));
        }
        let folders = &target.path[..target.path.len().saturating_sub(1)];
        let mut at = base.id.as_str();
        for (i, name) in folders.iter().enumerate() {
            match self.child(at, name) {
                Some(e) if e.file.is_some() => return Err(DriveError::NotAFolder(e.name.clone())),
                Some(e) => at = &e.id,
                None => return Ok((at, &folders[i..])),
            }
        }
        Ok((at, &[]))
    }

    /// Whether a file can go to `target` under `conflict` now: under `fail`, the
    /// name must be free; under any behaviour, a folder of that name stays (only
    /// `rename` gets past it).
    ///
    /// # Errors
    /// [`DriveError::NameAlreadyExists`], or what [`Tree::target`] checks.
    pub fn check(&self, target: &Target, conflict: ConflictBehavior) -> Result<(), DriveError> {
        let Some(name) = target.path.last() else {
            return match self.entries.get(&target.base) {
                Some(e) if e.file.is_some() => Ok(()),
                Some(_) => Err(DriveError::NotAFile),
                None => Err(DriveError::ItemNotFound),
            };
        };
        let (folder, to_make) = self.folder_of(target)?;
        if !to_make.is_empty() {
            return Ok(());
        }
        match (self.child(folder, name), conflict) {
            (None, _) | (Some(_), ConflictBehavior::Rename) => Ok(()),
            (Some(e), ConflictBehavior::Replace) if e.file.is_some() => Ok(()),
            (Some(e), _) => Err(DriveError::NameAlreadyExists(e.name.clone())),
        }
    }

    /// The file whose bytes `blob` holds, if one does.
    #[must_use]
    pub fn holding(&self, blob: &str) -> Option<&Entry> {
        self.entries
            .values()
            .find(|e| e.file.as_ref().is_some_and(|f| f.blob == blob))
    }

    /// A finished upload that no file will take (its session closed): retired,
    /// so that no late request puts it, unless a file holds it. Whether its
    /// bytes may go.
    pub fn forget_upload(&mut self, blob: &str) -> bool {
        if self.holding(blob).is_some() {
            return false;
        }
        if !self.retired.iter().any(|b| b == blob) {
            self.retire(std::iter::once(blob.to_owned()));
            self.version += 1;
        }
        true
    }

    /// Puts a finished upload's file at `target` under `conflict`, at `now`,
    /// making the folders on the way (`new_id` names each new item). Putting the
    /// same upload twice changes nothing the second time.
    ///
    /// # Errors
    /// What [`Tree::check`] finds; [`DriveError::ItemNotFound`] for an upload whose
    /// file was replaced or deleted since. The tree is unchanged then.
    pub fn put_file(
        &mut self,
        target: &Target,
        conflict: ConflictBehavior,
        file: NewFile,
        now: SystemTime,
        new_id: &mut dyn FnMut() -> String,
    ) -> Result<Put, DriveError> {
        if let Some(done) = self.holding(&file.content.blob) {
            return Ok(Put {
                id: done.id.clone(),
                created: done.content_version == 1,
                replaced: None,
            });
        }
        if self.retired.contains(&file.content.blob) {
            return Err(DriveError::ItemNotFound);
        }
        self.check(target, conflict)?;
        let Some(name) = target.path.last() else {
            let id = target.base.clone();
            let replaced = self.replace(&id, file, now);
            self.version += 1;
            return Ok(Put {
                id,
                created: false,
                replaced,
            });
        };
        let (folder, to_make) = self.folder_of(target)?;
        let mut folder = folder.to_owned();
        for name in to_make.iter().cloned() {
            let id = new_id();
            self.insert(id.clone(), &folder, name, None, now);
            folder = id;
        }
        let existing = self
            .child(&folder, name)
            .map(|e| (e.id.clone(), e.file.is_some()));
        let put = match (existing, conflict) {
            (Some((id, true)), ConflictBehavior::Replace) => {
                let replaced = self.replace(&id, file, now);
                Put {
                    id,
                    created: false,
                    replaced,
                }
            }
            (Some(_), _) => {
                let free = renamed(name, |n| self.child(&folder, n).is_some());
                let id = new_id();
                self.insert(id.clone(), &folder, free, Some(file), now);
                Put {
                    id,
                    created: true,
                    replaced: None,
                }
            }
            (None, _) => {
                let id = new_id();
                self.insert(id.clone(), &folder, name.clone(), Some(file), now);
                Put {
                    id,
                    created: true,
                    replaced: None,
                }
            }
        };
        self.version += 1;
        Ok(put)
    }

    fn insert(
        &mut self,
        id: String,
        parent: &str,
        name: String,
        file: Option<NewFile>,
        now: SystemTime,
    ) {
        let (description, file) = file.map_or((None, None), |f| (f.description, Some(f.content)));
        self.entries.insert(
            id.clone(),
            Entry {
                id,
                parent: Some(parent.to_owned()),
                name,
                created: now,
                modified: now,
                version: 1,
                content_version: 1,
                description,
                file,
            },
        );
        self.touch_ancestors(parent, now);
    }

    /// New bytes for the file `id`; the upload that held the old ones.
    fn replace(&mut self, id: &str, file: NewFile, now: SystemTime) -> Option<String> {
        let entry = self.entries.get_mut(id)?;
        let old = entry.file.replace(file.content).map(|f| f.blob);
        self.retire(old.iter().cloned());
        let entry = self.entries.get_mut(id)?;
        if file.description.is_some() {
            entry.description = file.description;
        }
        entry.version += 1;
        entry.content_version += 1;
        entry.modified = now;
        let parent = entry.parent.clone();
        if let Some(parent) = parent {
            self.touch_ancestors(&parent, now);
        }
        old
    }

    /// A folder's eTag and modification time move when what it holds changes.
    fn touch_ancestors(&mut self, id: &str, now: SystemTime) {
        let mut at = Some(id.to_owned());
        while let Some(e) = at.take().and_then(|id| self.entries.get_mut(&id)) {
            e.version += 1;
            e.modified = now;
            at.clone_from(&e.parent);
        }
    }

    /// Deletes the item `id` and, for a folder, everything in it; the uploads
    /// that held their files' bytes, now unused.
    ///
    /// # Errors
    /// [`DriveError::ItemNotFound`]; [`DriveError::RootUndeletable`] for the root.
    pub fn remove(&mut self, id: &str, now: SystemTime) -> Result<Vec<String>, DriveError> {
        let entry = self.entries.get(id).ok_or(DriveError::ItemNotFound)?;
        let Some(parent) = entry.parent.clone() else {
            return Err(DriveError::RootUndeletable);
        };
        let mut gone = vec![id.to_owned()];
        let mut i = 0;
        while i < gone.len() {
            let children: Vec<String> = self
                .entries
                .values()
                .filter(|e| e.parent.as_deref() == Some(gone[i].as_str()))
                .map(|e| e.id.clone())
                .collect();
            gone.extend(children);
            i += 1;
        }
        let blobs: Vec<String> = gone
            .iter()
            .filter_map(|id| self.entries.remove(id)?.file.map(|f| f.blob))
            .collect();
        self.retire(blobs.iter().cloned());
        self.touch_ancestors(&parent, now);
        self.version += 1;
        Ok(blobs)
    }

    fn retire(&mut self, blobs: impl Iterator<Item = String>) {
        for blob in blobs {
            if self.retired.len() == RETIRED {
                self.retired.pop_front();
            }
            self.retired.push_back(blob);
        }
    }

    /// The path of the folder holding `id`, as `parentReference.path` writes it:
    /// `/drive/root:` or `/drive/root:/a/b`; `None` for the root or a missing item.
    #[must_use]
    pub fn path_of(&self, id: &str) -> Option<String> {
        let mut names = Vec::new();
        let mut at = self.entries.get(id)?.parent.as_deref()?;
        while let Some(e) = self.entries.get(at) {
            match &e.parent {
                Some(p) => {
                    names.push(e.name.as_str());
                    at = p;
                }
                None => break,
            }
        }
        names.reverse();
        let mut path = String::from("/drive/root:");
        for n in names {
            path.push('/');
            path.push_str(n);
        }
        Some(path)
    }

    /// The item `id` as OneDrive describes it (`driveItem`).
    #[must_use]
    pub fn drive_item(&self, id: &str, drive_type: &str) -> Option<DriveItem> {
        let e = self.entries.get(id)?;
        let parent_reference = e.parent.as_ref().map(|p| ParentReference {
            drive_id: self.id.clone(),
            drive_type: drive_type.to_owned(),
            id: p.clone(),
            path: self.path_of(id).unwrap_or_default(),
        });
        let children = || {
            self.entries
                .values()
                .filter(|c| c.parent.as_deref() == Some(id))
                .count()
        };
        Some(DriveItem {
            id: e.id.clone(),
            name: e.name.clone(),
            size: e.file.as_ref().map_or_else(
                || {
                    // A folder's size is what it holds, as OneDrive reports it.
                    self.entries
                        .values()
                        .filter(|f| self.within(&f.id, id))
                        .filter_map(|f| f.file.as_ref().map(|f| f.size))
                        .sum()
                },
                |f| f.size,
            ),
            e_tag: DriveItem::e_tag_of(&e.id, e.version),
            c_tag: DriveItem::c_tag_of(&e.id, e.content_version),
            created_date_time: format_graph_time(e.created),
            last_modified_date_time: format_graph_time(e.modified),
            parent_reference,
            file: e.file.as_ref().map(|f| FileFacet {
                mime_type: f.mime_type.clone(),
                hashes: f.hashes.clone(),
            }),
            folder: e.file.is_none().then(|| FolderFacet {
                child_count: children(),
            }),
            root: e.parent.is_none().then(super::Empty::default),
            description: e.description.clone(),
        })
    }

    /// Whether `id` is below the folder `folder`.
    fn within(&self, id: &str, folder: &str) -> bool {
        let mut at = self.entries.get(id).and_then(|e| e.parent.as_deref());
        while let Some(p) = at {
            if p == folder {
                return true;
            }
            at = self.entries.get(p).and_then(|e| e.parent.as_deref());
        }
        false
    }
}

#[cfg(test)]
#[allow(clippy::pedantic)] // test code favours brevity over pedantry
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(s)
    }

    fn p(path: &str) -> Vec<String> {
        path.split('/').map(str::to_owned).collect()
    }

    struct Ids(u32);
    impl Ids {
        fn next(&mut self) -> String {
            self.0 += 1;
            format!("I{}", self.0)
        }
    }

    fn put(
        tree: &mut Tree,
        ids: &mut Ids,
        path: &str,
        conflict: ConflictBehavior,
        blob: &str,
    ) -> Result<Put, DriveError> {
        let target = tree.target(&DriveBase::Root, &p(path))?;
        tree.put_file(
            &target,
            conflict,
            NewFile::example(blob, 10),
            at(5),
            &mut || ids.next(),
        )
    }

    #[test]
    fn each_conflict_behaviour_does_what_onedrive_does() {
        let mut tree = Tree::new("d", "R", at(0));
        let mut ids = Ids(0);
        let first = put(
            &mut tree,
            &mut ids,
            "a/b/f.txt",
            ConflictBehavior::Fail,
            "B1",
        )
        .unwrap();
        assert!(first.created);
        // Folders made on the way.
        assert_eq!(tree.len(), 4);
        let v = tree.version;
        // fail: refused, nothing changed.
        assert_eq!(
            put(
                &mut tree,
                &mut ids,
                "a/b/F.TXT",
                ConflictBehavior::Fail,
                "B2"
            ),
            Err(DriveError::NameAlreadyExists("f.txt".into()))
        );
        assert_eq!(tree.version, v);
        // replace: the same item, new bytes, the old upload handed back.
        let replaced = put(
            &mut tree,
            &mut ids,
            "a/b/f.txt",
            ConflictBehavior::Replace,
            "B2",
        )
        .unwrap();
        assert_eq!(
            (replaced.id.as_str(), replaced.created),
            (first.id.as_str(), false)
        );
        assert_eq!(replaced.replaced.as_deref(), Some("B1"));
        let item = tree.drive_item(&first.id, "business").unwrap();
        assert_eq!(item.e_tag, DriveItem::e_tag_of(&first.id, 2));
        assert_eq!(item.c_tag, DriveItem::c_tag_of(&first.id, 2));
        // rename: a new item beside it.
        let renamed = put(
            &mut tree,
            &mut ids,
            "a/b/f.txt",
            ConflictBehavior::Rename,
            "B3",
        )
        .unwrap();
        assert!(renamed.created);
        assert_eq!(tree.get(&renamed.id).unwrap().name, "f 1.txt");
        // The replaced upload cannot come back.
        assert_eq!(
            put(
                &mut tree,
                &mut ids,
                "a/b/f.txt",
                ConflictBehavior::Replace,
                "B1"
            ),
            Err(DriveError::ItemNotFound)
        );
        // An upload whose session closed unput never comes in later; a held one
        // is kept.
        assert!(tree.forget_upload("B9"));
        assert_eq!(
            put(
                &mut tree,
                &mut ids,
                "a/b/g.txt",
                ConflictBehavior::Fail,
                "B9"
            ),
            Err(DriveError::ItemNotFound)
        );
        assert!(!tree.forget_upload("B2"));
        // Putting the same upload again is a no-op.
        let v = tree.version;
        let again = put(
            &mut tree,
            &mut ids,
            "a/b/f.txt",
            ConflictBehavior::Rename,
            "B3",
        )
        .unwrap();
        assert_eq!(again.id, renamed.id);
        assert_eq!(tree.version, v);
        // The folder's listing and paths.
        let b = tree
            .resolve(&DriveBase::Root, &p("A/b"))
            .unwrap()
            .id
            .clone();
        let folder = tree.drive_item(&b, "business").unwrap();
        assert_eq!(folder.folder.unwrap().child_count, 2);
        assert_eq!(folder.size, 20);
        assert_eq!(
            tree.drive_item(&renamed.id, "business")
                .unwrap()
                .parent_reference
                .unwrap()
                .path,
            "/drive/root:/a/b"
        );
        let root = tree.drive_item("R", "business").unwrap();
        assert!(root.root.is_some() && root.parent_reference.is_none());
    }

    #[test]
    fn folders_and_files_keep_their_places() {
        let mut tree = Tree::new("d", "R", at(0));
        let mut ids = Ids(0);
        put(&mut tree, &mut ids, "a/f", ConflictBehavior::Fail, "B1").unwrap();
        // A file where a folder must be.
        assert_eq!(
            tree.target(&DriveBase::Root, &p("a/f/g")),
            Err(DriveError::NotAFolder("f".into()))
        );
        // A folder's name taken by a file: only rename gets past it.
        for c in [ConflictBehavior::Fail, ConflictBehavior::Replace] {
            assert_eq!(
                put(&mut tree, &mut ids, "a", c, "B2"),
                Err(DriveError::NameAlreadyExists("a".into()))
            );
        }
        assert!(put(&mut tree, &mut ids, "a", ConflictBehavior::Rename, "B2").is_ok());
        // Bad names and unknown bases.
        for bad in ["a:b", "x/ lead", "trail.", "..", "a|b"] {
            assert!(
                matches!(
                    tree.target(&DriveBase::Root, &p(bad)),
                    Err(DriveError::InvalidName(_))
                ),
                "{bad}"
            );
        }
        assert_eq!(
            tree.target(&DriveBase::Item("nope".into()), &p("x")),
            Err(DriveError::ItemNotFound)
        );
        // By id alone: a file only.
        let f = tree
            .resolve(&DriveBase::Root, &p("a/f"))
            .unwrap()
            .id
            .clone();
        assert!(tree.target(&DriveBase::Item(f.clone()), &[]).is_ok());
        assert_eq!(
            tree.target(&DriveBase::Root, &[]),
            Err(DriveError::NotAFile)
        );
        // Resolving through a file finds nothing.
        assert_eq!(
            tree.resolve(&DriveBase::Root, &p("a/f/x"))
                .map(|e| e.id.clone()),
            Err(DriveError::ItemNotFound)
        );
    }

    #[test]
    fn deleting_a_folder_takes_everything_in_it() {
        let mut tree = Tree::new("d", "R", at(0));
        let mut ids = Ids(0);
        put(&mut tree, &mut ids, "a/x", ConflictBehavior::Fail, "B1").unwrap();
        put(&mut tree, &mut ids, "a/b/y", ConflictBehavior::Fail, "B2").unwrap();
        put(&mut tree, &mut ids, "z", ConflictBehavior::Fail, "B3").unwrap();
        let a = tree.resolve(&DriveBase::Root, &p("a")).unwrap().id.clone();
        let mut blobs = tree.remove(&a, at(9)).unwrap();
        blobs.sort();
        assert_eq!(blobs, ["B1", "B2"]);
        assert_eq!(tree.len(), 2);
        assert_eq!(tree.remove("R", at(9)), Err(DriveError::RootUndeletable));
        assert_eq!(tree.remove(&a, at(9)), Err(DriveError::ItemNotFound));
        // The tree round-trips as a store keeps it.
        let json = serde_json::to_string(&tree).unwrap();
        assert_eq!(serde_json::from_str::<Tree>(&json).unwrap(), tree);
    }
}
