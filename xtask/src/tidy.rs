//! `cargo xtask tidy`: the repository's invariants, checked by reading files.
//!
//! Each check is an absence (ARCHITECTURE-style invariants):
//!
//! 1. `upsession-core` depends on no I/O or runtime crate, neither directly in
//!    its `[dependencies]` nor anywhere in its normal dependency graph;
//! 2. `crates/core/src` never reads a clock and never touches the file system
//!    or the network through `std`;
//! 3. every crate opts into the workspace lints (`[lints] workspace = true`);
//! 4. no file in git carries an absolute path of the machine it was written on;
//! 5. no `todo!`/`unimplemented!` is left in `crates/*/src`;
//! 6. the client library, and the CLI built with `--features client` alone, have
//!    no server, S3, PostgreSQL or proptest crate in their dependency graphs;
//! 7. the blocking clients' crates have no async runtime, future or async HTTP
//!    crate in theirs;
//! 8. every published crate (no `publish = false`) has what crates.io shows: its
//!    own `readme = "README.md"`, `documentation`, `categories`, `keywords` by
//!    crates.io's rules, and both licence texts in its folder;
//! 9. `unsafe_code` (denied by the workspace) is named in no code but one lint
//!    attribute on one statement of `crates/server-hyper/src/store/files.rs`.
//!
//! The same checks run as the `tidy_passes` test, so `cargo test` enforces them too.
//! Source checks are deliberately naive: comments and the contents of string
//! literals are skipped, everything else is matched as plain text.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::manifest::{self, strip_comment, table_header};
use crate::util::{cargo, display, project_root};

/// The package name of the sans-IO core.
const CORE_PACKAGE: &str = "upsession-core";

/// Crates that do I/O or drive it (runtimes, HTTP stacks, sockets); the core must
/// stay free of all of them.
const FORBIDDEN_CORE_DEPS: &[&str] = &[
    "tokio",
    "hyper",
    "hyper-util",
    "reqwest",
    "mio",
    "async-std",
    "smol",
    "socket2",
    "tower",
    "h2",
    "quinn",
];

/// Calls the core must never make: time and I/O enter through arguments.
/// `Zoned::now(` is jiff's own clock read (jiff is a core dependency).
const FORBIDDEN_CORE_CODE: &[&str] = &[
    "SystemTime::now(",
    "Instant::now(",
    "Timestamp::now(",
    "Zoned::now(",
    "std::fs",
    "std::net",
];

/// Placeholders that must not ship.
// Spelled in two pieces so that this file does not match its own check.
const UNFINISHED_CODE: &[&str] = &[concat!("todo", "!("), concat!("unimplemented", "!(")];

/// The only file where `unsafe_code` (denied by the workspace) may be named,
/// once, in an `allow` on one statement: one system call no safe crate wraps.
const UNSAFE_ALLOWED_IN: &str = "crates/server-hyper/src/store/files.rs";

/// The lint's name: in code (comments and literals stripped) it appears only in
/// lint attributes (`allow`, `expect`, `warn`, in any form).
const UNSAFE_LINT: &str = concat!("unsafe", "_code");

/// One broken invariant, located as precisely as the check can.
#[derive(Debug)]
pub(crate) struct Violation {
    /// Path relative to the repository root, with `/` separators.
    file: String,
    line: Option<usize>,
    message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.file, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

impl Violation {
    fn new(file: impl Into<String>, line: Option<usize>, message: impl Into<String>) -> Self {
        Self {
            file: file.into(),
            line,
            message: message.into(),
        }
    }
}

/// `cargo xtask tidy`.
pub(crate) fn run(args: &[String]) -> Result<(), String> {
    if let Some(arg) = args.first() {
        return Err(format!(
            "`cargo xtask tidy` takes no arguments (got `{arg}`)"
        ));
    }
    tidy()
}

/// Runs every check, prints each violation, and fails if there was any.
pub(crate) fn tidy() -> Result<(), String> {
    let violations = check(&project_root());
    if violations.is_empty() {
        println!("tidy: all invariants hold");
        return Ok(());
    }
    for violation in &violations {
        eprintln!("{violation}");
    }
    Err(format!("tidy found {} violation(s)", violations.len()))
}

/// Every check, on the repository at `root`.
pub(crate) fn check(root: &Path) -> Vec<Violation> {
    let mut violations = Vec::new();
    check_core_manifest(root, &mut violations);
    check_core_dependency_graph(root, &mut violations);
    check_client_dependency_graphs(root, &mut violations);
    check_core_sources(root, &mut violations);
    check_workspace_lints(root, &mut violations);
    check_machine_paths(root, &mut violations);
    check_unfinished_code(root, &mut violations);
    check_unsafe_allowed(root, &mut violations);
    check_published_metadata(root, &mut violations);
    violations
}

// ---------------------------------------------------------------------------
// 1. No I/O crate in the core.

fn check_core_manifest(root: &Path, violations: &mut Vec<Violation>) {
    let manifest = "crates/core/Cargo.toml";
    let Some(text) = read(root, manifest, violations) else {
        return;
    };
    for (line, name) in manifest_dependencies(&text) {
        if is_forbidden_core_dep(&name) {
            violations.push(Violation::new(
                manifest,
                Some(line),
                format!("{CORE_PACKAGE} must not depend on `{name}` (the core is sans-IO)"),
            ));
        }
    }
}

/// Catches what the manifest check cannot: renamed packages, features and
/// transitive dependencies that pull an I/O crate in.
fn check_core_dependency_graph(root: &Path, violations: &mut Vec<Violation>) {
    let graph = Graph {
        package: CORE_PACKAGE,
        features: &["--all-features"],
        manifest: "crates/core/Cargo.toml",
        why: "the core is sans-IO",
    };
    graph.check(root, is_forbidden_core_dep, violations);
}

/// Crates only a server needs: a client-only build must not link them.
const SERVER_ONLY: &[&str] = &[
    "upsession-server-hyper",
    "upsession-conformance",
    "object-store",
    "tokio-postgres",
    "deadpool-postgres",
    "prometheus-client",
    "proptest",
    "axum",
];

/// The client library, and the CLI built with `--features client` alone, link no
/// server, S3 or PostgreSQL crate.
fn check_client_dependency_graphs(root: &Path, violations: &mut Vec<Violation>) {
    let server_only = |name: &str| SERVER_ONLY.contains(&name.replace('_', "-").as_str());
    for graph in [
        Graph {
            package: "upsession-client-reqwest",
            features: &[],
            manifest: "crates/client-reqwest/Cargo.toml",
            why: "a client needs no server crate",
        },
        Graph {
            package: "upsession-cli",
            features: &["--no-default-features", "--features", "client"],
            manifest: "crates/cli/Cargo.toml",
            why: "the client-only CLI links no server crate",
        },
    ] {
        graph.check(root, server_only, violations);
    }
    for (package, manifest) in BLOCKING_PACKAGES {
        let graph = Graph {
            package,
            features: &[],
            manifest,
            why: "a blocking client runs no async runtime",
        };
        graph.check(root, |name| server_only(name) || is_async(name), violations);
    }
}

/// The packages a program without an async runtime links: what they share, and
/// the blocking client.
const BLOCKING_PACKAGES: [(&str, &str); 1] =
    [("upsession-client-shared", "crates/client-shared/Cargo.toml")];

/// An async runtime, a futures crate or an async HTTP stack.
fn is_async(name: &str) -> bool {
    let name = name.replace('_', "-");
    ["tokio", "reqwest", "hyper", "mio"].contains(&name.as_str())
        || name.starts_with("tokio-")
        || name.starts_with("futures-")
        || name.starts_with("async-")
        || name.starts_with("hyper-")
}

/// One package's normal dependency graph, as `cargo tree` shows it.
struct Graph {
    package: &'static str,
    features: &'static [&'static str],
    manifest: &'static str,
    why: &'static str,
}

impl Graph {
    /// A violation for each crate of the graph that `forbidden` names.
    fn check(
        &self,
        root: &Path,
        forbidden: impl Fn(&str) -> bool,
        violations: &mut Vec<Violation>,
    ) {
        let mut command = cargo();
        command
            .args(["tree", "--package", self.package])
            .args(self.features)
            .args("--edges normal --target all --prefix none --format {p}".split(' '));
        let Some(stdout) = capture(&mut command, "Cargo.toml", violations) else {
            return;
        };
        let mut seen = Vec::new();
        for line in stdout.lines() {
            let Some(name) = line.split_whitespace().next() else {
                continue;
            };
            if forbidden(name) && !seen.iter().any(|s: &String| s == name) {
                seen.push(name.to_owned());
                violations.push(Violation::new(
                    relative(root, &root.join(self.manifest)),
                    None,
                    format!(
                        "`{name}` is in {}'s normal dependency graph ({}; \
                         `cargo tree -p {} {} -e normal -i {name}` shows why)",
                        self.package,
                        self.why,
                        self.package,
                        self.features.join(" ")
                    ),
                ));
            }
        }
    }
}

fn is_forbidden_core_dep(name: &str) -> bool {
    let name = name.replace('_', "-");
    FORBIDDEN_CORE_DEPS.contains(&name.as_str())
}

/// The dependency names declared in a manifest's `[dependencies]` tables
/// (including `[target.'cfg(..)'.dependencies]` and `[dependencies.NAME]`),
/// with their 1-based line numbers. Dev- and build-dependencies are not included.
fn manifest_dependencies(manifest: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    let mut in_dependencies = false;
    // Depth of brackets and braces still open from earlier lines: lines inside a
    // multi-line array or inline table are values, not keys.
    let mut depth = 0_i32;
    for (index, raw) in manifest.lines().enumerate() {
        let line = strip_comment(raw).trim();
        if depth > 0 {
            depth += bracket_balance(line);
            continue;
        }
        if let Some(header) = table_header(line) {
            let header: String = header.chars().filter(|c| !c.is_whitespace()).collect();
            let header = header
                .strip_prefix("target.")
                .and_then(|rest| rest.find(".dependencies").map(|at| &rest[at + 1..]))
                .unwrap_or(&header);
            in_dependencies = header == "dependencies";
            if let Some(name) = header.strip_prefix("dependencies.") {
                found.push((index + 1, name.trim_matches(['"', '\'']).to_owned()));
            }
            continue;
        }
        depth += bracket_balance(line);
        if in_dependencies && !line.is_empty() {
            let key = line.split(['=', '.']).next().unwrap_or("").trim();
            let key = key.trim_matches(['"', '\'']);
            if !key.is_empty()
                && key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                found.push((index + 1, key.to_owned()));
            }
        }
    }
    found
}

fn bracket_balance(line: &str) -> i32 {
    line.chars()
        .map(|c| match c {
            '[' | '{' => 1,
            ']' | '}' => -1,
            _ => 0,
        })
        .sum()
}

// ---------------------------------------------------------------------------
// 2. No clock read, file system or network in the core's code.

fn check_core_sources(root: &Path, violations: &mut Vec<Violation>) {
    for file in rust_files(&root.join("crates/core/src")) {
        check_code(root, &file, FORBIDDEN_CORE_CODE, violations, |pattern| {
            format!(
                "`{pattern}` in {CORE_PACKAGE}: the core never reads a clock or does I/O; \
                 take the time (or data) as an argument"
            )
        });
    }
}

// ---------------------------------------------------------------------------
// 3. Every crate uses the workspace lints.

fn check_workspace_lints(root: &Path, violations: &mut Vec<Violation>) {
    let mut manifests = vec![
        root.join("xtask/Cargo.toml"),
        root.join("bench/Cargo.toml"),
        root.join("testbed/Cargo.toml"),
    ];
    if let Ok(entries) = fs::read_dir(root.join("crates")) {
        manifests.extend(
            entries
                .filter_map(Result::ok)
                .map(|entry| entry.path().join("Cargo.toml"))
                .filter(|manifest| manifest.is_file()),
        );
    }
    manifests.sort();
    for manifest in manifests {
        let name = relative(root, &manifest);
        let Some(text) = read(root, &name, violations) else {
            continue;
        };
        if !has_workspace_lints(&text) {
            violations.push(Violation::new(
                name,
                None,
                "missing `[lints]` with `workspace = true` (every crate uses the workspace lints)",
            ));
        }
    }
}

fn has_workspace_lints(manifest: &str) -> bool {
    let mut table = String::new();
    for raw in manifest.lines() {
        let line = strip_comment(raw).trim();
        if let Some(header) = table_header(line) {
            table = header.chars().filter(|c| !c.is_whitespace()).collect();
            continue;
        }
        let compact: String = line.chars().filter(|c| !c.is_whitespace()).collect();
        if (table == "lints" && compact == "workspace=true")
            || (table.is_empty() && compact == "lints.workspace=true")
        {
            return true;
        }
    }
    false
}

// ---------------------------------------------------------------------------
// 4. No absolute path of this machine in a file git knows.

fn check_machine_paths(root: &Path, violations: &mut Vec<Violation>) {
    // Tracked files plus new files git would pick up (not ignored), so the check
    // also works before the first commit and on files not yet `git add`ed.
    let mut command = Command::new("git");
    command
        .current_dir(root)
        .args("ls-files -z --cached --others --exclude-standard".split(' '));
    let Some(listing) = capture(&mut command, ".", violations) else {
        return;
    };
    let needles = machine_path_needles(root);
    let mut files: Vec<&str> = listing.split('\0').filter(|f| !f.is_empty()).collect();
    files.sort_unstable();
    files.dedup();
    for file in files {
        // Cargo.lock holds no paths of ours, only checksums and registry URLs.
        if Path::new(file)
            .file_name()
            .is_some_and(|n| n == "Cargo.lock")
        {
            continue;
        }
        // Deleted but still tracked, or not text: nothing to check.
        let Ok(text) = fs::read_to_string(root.join(file)) else {
            continue;
        };
        for (index, line) in text.lines().enumerate() {
            if let Some(needle) = needles.iter().find(|n| contains_path(line, n)) {
                violations.push(Violation::new(
                    file,
                    Some(index + 1),
                    format!(
                        "absolute path `{needle}` of this machine; use a path relative to \
                         the repository, `~`, or an environment variable"
                    ),
                ));
            }
        }
    }
}

/// Path prefixes that only exist on the machine that wrote them: this
/// checkout's root, the home directory, and the usual sandbox folders.
/// Built at run time so this file does not contain them itself.
fn machine_path_needles(root: &Path) -> Vec<String> {
    let mut needles = vec![
        format!("/{}/", "work"),
        format!("/{}/", "root"),
        format!("/{}/{}", "tmp", "bash_jobs"),
    ];
    let mut push = |path: &Path| {
        let Some(path) = path.to_str() else { return };
        let path = path.trim_end_matches('/');
        // Too short to be specific to this machine (`/`, `/home`, ...).
        if path.matches('/').count() >= 2 && !needles.iter().any(|n| path.starts_with(n.as_str())) {
            needles.push(path.to_owned());
        }
    };
    push(root);
    if let Some(home) = std::env::var_os("HOME") {
        push(Path::new(&home));
    }
    needles
}

/// Whether `line` contains `needle` as the start of a path, not as the middle
/// of a URL or a longer path (a URL whose path merely contains the same segment is fine).
fn contains_path(line: &str, needle: &str) -> bool {
    line.match_indices(needle).any(|(at, _)| {
        line[..at].chars().next_back().is_none_or(|before| {
            !(before.is_alphanumeric() || matches!(before, '.' | '-' | '_' | '~' | '%' | '+'))
        })
    })
}

// ---------------------------------------------------------------------------
// 5. No placeholders left in the crates.

fn check_unfinished_code(root: &Path, violations: &mut Vec<Violation>) {
    let Ok(entries) = fs::read_dir(root.join("crates")) else {
        return;
    };
    let mut crates: Vec<PathBuf> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
    crates.sort();
    for krate in crates {
        for file in rust_files(&krate.join("src")) {
            check_code(root, &file, UNFINISHED_CODE, violations, |pattern| {
                format!("`{pattern}..)` left in the code")
            });
        }
    }
}

// ---------------------------------------------------------------------------
// 9. `unsafe` allowed in one place only.

fn check_unsafe_allowed(root: &Path, violations: &mut Vec<Violation>) {
    let mut dirs = vec![root.join("bench"), root.join("testbed"), root.join("xtask")];
    if let Ok(entries) = fs::read_dir(root.join("crates")) {
        dirs.extend(entries.filter_map(Result::ok).map(|e| e.path()));
    }
    dirs.sort();
    for file in dirs.iter().flat_map(|dir| rust_files(dir)) {
        let name = relative(root, &file);
        if name != UNSAFE_ALLOWED_IN {
            check_code(root, &file, &[UNSAFE_LINT], violations, |pattern| {
                format!("`{pattern}` named: unsafe code is allowed only in {UNSAFE_ALLOWED_IN}")
            });
            continue;
        }
        let Some(text) = read(root, &name, violations) else {
            continue;
        };
        let lines = code_lines(&text);
        let named: Vec<usize> = (0..lines.len())
            .filter(|&i| lines[i].contains(UNSAFE_LINT))
            .collect();
        // Exactly `#[allow(unsafe_code)]` on a line of its own: an outer attribute,
        // which rustfmt keeps on the statement it applies to.
        let on_a_statement = |i: usize| lines[i].trim() == concat!("#[allow(", "unsafe", "_code)]");
        if named.len() > 1 || named.iter().any(|&i| !on_a_statement(i)) {
            violations.push(Violation::new(
                name,
                named.first().map(|i| i + 1),
                format!("`{UNSAFE_LINT}` may be named once, as `#[allow(..)]` on one statement"),
            ));
        }
    }
}

// ---------------------------------------------------------------------------
// 8. Published crates carry their crates.io metadata and licence texts.

fn check_published_metadata(root: &Path, violations: &mut Vec<Violation>) {
    let members = match crate::publish::published_members(root) {
        Ok(members) => members,
        Err(err) => {
            violations.push(Violation::new("Cargo.toml", None, err));
            return;
        }
    };
    for member in members {
        let file = format!("{}/Cargo.toml", member.dir);
        let mut missing = |what: String| violations.push(Violation::new(&file, None, what));
        if manifest::value(&member.manifest, "package", "readme").as_deref() != Some("README.md") {
            missing(format!(
                "{} is published: it needs `readme = \"README.md\"`",
                member.name
            ));
        }
        for needed in ["README.md", "LICENSE-MIT", "LICENSE-APACHE"] {
            if !root.join(&member.dir).join(needed).is_file() {
                missing(format!(
                    "{} is published: {needed} must be in its folder (the licence texts \
                     as links to the root's), or the package goes without it",
                    member.name
                ));
            }
        }
        for key in ["documentation", "categories", "keywords"] {
            if manifest::value(&member.manifest, "package", key).is_none() {
                missing(format!("{} is published: it needs `{key}`", member.name));
            }
        }
        let keywords =
            manifest::strings(&member.manifest, "package", "keywords").unwrap_or_default();
        if let Some(problem) = keyword_problem(&keywords) {
            missing(format!("{}'s keywords: {problem}", member.name));
        }
        let categories =
            manifest::strings(&member.manifest, "package", "categories").unwrap_or_default();
        if categories.len() > 5 {
            missing(format!(
                "{} has {} categories: crates.io takes 5 at most",
                member.name,
                categories.len()
            ));
        }
    }
}

/// What crates.io would refuse in a list of keywords: more than 5, or one that
/// is not ASCII letters, digits, `_`, `-` or `+`, starting with a letter, of 20
/// characters at most.
fn keyword_problem(keywords: &[String]) -> Option<String> {
    if keywords.len() > 5 {
        return Some(format!(
            "{} of them, crates.io takes 5 at most",
            keywords.len()
        ));
    }
    keywords.iter().find_map(|keyword| {
        let valid = keyword.len() <= 20
            && keyword.starts_with(|c: char| c.is_ascii_alphabetic())
            && keyword
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '+'));
        (!valid).then(|| {
            format!(
                "`{keyword}`: crates.io takes ASCII letters, digits, `_`, `-` and `+`, \
                 starting with a letter, 20 characters at most"
            )
        })
    })
}

// ---------------------------------------------------------------------------
// Helpers.

/// Reports each line of `file` whose code (comments and literals removed)
/// contains one of `patterns`.
fn check_code(
    root: &Path,
    file: &Path,
    patterns: &[&str],
    violations: &mut Vec<Violation>,
    message: impl Fn(&str) -> String,
) {
    let name = relative(root, file);
    let Some(text) = read(root, &name, violations) else {
        return;
    };
    for (index, line) in code_lines(&text).iter().enumerate() {
        for pattern in patterns {
            if line.contains(pattern) {
                violations.push(Violation::new(
                    name.clone(),
                    Some(index + 1),
                    message(pattern),
                ));
            }
        }
    }
}

/// The `.rs` files under `dir`, recursively, sorted. Empty if `dir` does not exist.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn read(root: &Path, name: &str, violations: &mut Vec<Violation>) -> Option<String> {
    match fs::read_to_string(root.join(name)) {
        Ok(text) => Some(text),
        Err(err) => {
            violations.push(Violation::new(name, None, format!("could not read: {err}")));
            None
        }
    }
}

/// Runs `command` and returns its stdout; a failure is a violation (a check
/// that cannot run does not pass).
fn capture(command: &mut Command, file: &str, violations: &mut Vec<Violation>) -> Option<String> {
    let shown = display(command);
    match command.output() {
        Ok(output) if output.status.success() => {
            Some(String::from_utf8_lossy(&output.stdout).into_owned())
        }
        Ok(output) => {
            let stderr = String::from_utf8_lossy(&output.stderr);
            violations.push(Violation::new(
                file,
                None,
                format!("`{shown}` failed ({}): {}", output.status, stderr.trim()),
            ));
            None
        }
        Err(err) => {
            violations.push(Violation::new(
                file,
                None,
                format!("could not run `{shown}`: {err}"),
            ));
            None
        }
    }
}

fn relative(root: &Path, path: &Path) -> String {
    let path = path.strip_prefix(root).unwrap_or(path);
    path.to_string_lossy().replace('\\', "/")
}

/// Where the lexer in [`code_lines`] is.
#[derive(Clone, Copy)]
enum LexState {
    Code,
    LineComment,
    BlockComment(usize),
    Str,
    RawStr(usize),
}

/// A Rust source file's lines with comments removed and the contents of string
/// and char literals blanked out, so patterns only match code.
///
/// A small lexer, not a parser: line and (nested) block comments, plain, byte
/// and raw strings, char literals versus lifetimes.
fn code_lines(source: &str) -> Vec<String> {
    let chars: Vec<char> = source.chars().collect();
    let at = |i: usize| chars.get(i).copied();
    let mut lines = vec![String::new()];
    let mut state = LexState::Code;
    let mut i = 0;
    while let Some(c) = at(i) {
        if c == '\n' {
            lines.push(String::new());
            if matches!(state, LexState::LineComment) {
                state = LexState::Code;
            }
            i += 1;
            continue;
        }
        let line = lines.last_mut().expect("lines is never empty");
        match state {
            LexState::Code => (state, i) = lex_code(&chars, i, line),
            LexState::LineComment => i += 1,
            LexState::BlockComment(depth) => match (c, at(i + 1)) {
                ('*', Some('/')) => {
                    state = match depth - 1 {
                        0 => LexState::Code,
                        outer => LexState::BlockComment(outer),
                    };
                    i += 2;
                }
                ('/', Some('*')) => {
                    state = LexState::BlockComment(depth + 1);
                    i += 2;
                }
                _ => i += 1,
            },
            LexState::Str => match (c, at(i + 1)) {
                // An escape; a backslash before a newline leaves the newline to the
                // line counting above.
                ('\\', Some('\n') | None) => i += 1,
                ('\\', Some(_)) => i += 2,
                ('"', _) => {
                    line.push('"');
                    state = LexState::Code;
                    i += 1;
                }
                _ => i += 1,
            },
            LexState::RawStr(hashes) => {
                let closing = chars[i + 1..].iter().take_while(|&&h| h == '#').count();
                if c == '"' && closing >= hashes {
                    line.push('"');
                    state = LexState::Code;
                    i += hashes + 1;
                } else {
                    i += 1;
                }
            }
        }
    }
    lines
}

/// One step of [`code_lines`] in code: consumes the token at `chars[i]`, copies
/// what is code to `line`, and returns the next state and position.
fn lex_code(chars: &[char], i: usize, line: &mut String) -> (LexState, usize) {
    let at = |i: usize| chars.get(i).copied();
    match (chars[i], at(i + 1)) {
        ('/', Some('/')) => (LexState::LineComment, i + 2),
        ('/', Some('*')) => (LexState::BlockComment(1), i + 2),
        ('"', _) => {
            line.push('"');
            (LexState::Str, i + 1)
        }
        ('r', Some('"' | '#')) => {
            let hashes = chars[i + 1..].iter().take_while(|&&h| h == '#').count();
            if at(i + 1 + hashes) == Some('"') {
                line.push('"');
                (LexState::RawStr(hashes), i + hashes + 2)
            } else {
                // A raw identifier such as `r#type`.
                line.push('r');
                (LexState::Code, i + 1)
            }
        }
        ('\'', Some('\\')) => {
            // An escaped char literal: '\n', '\'', '\u{1F600}'.
            let close = (i + 3..chars.len().min(i + 12)).find(|&j| chars[j] == '\'');
            line.push_str("''");
            (LexState::Code, close.map_or(i + 1, |j| j + 1))
        }
        ('\'', Some(_)) if at(i + 2) == Some('\'') => {
            // A plain char literal such as '"' or 'x'.
            line.push_str("''");
            (LexState::Code, i + 3)
        }
        (c, _) => {
            // Code, including a lifetime's quote.
            line.push(c);
            (LexState::Code, i + 1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The invariants hold for the repository as it is.
    #[test]
    fn tidy_passes() {
        let violations = check(&project_root());
        let report: Vec<String> = violations.iter().map(ToString::to_string).collect();
        assert!(
            violations.is_empty(),
            "tidy found {} violation(s):\n{}",
            violations.len(),
            report.join("\n")
        );
    }

    #[test]
    fn unsafe_may_be_allowed_in_one_file_only() {
        let root = std::env::temp_dir().join(format!("tidy-unsafe-{}", std::process::id()));
        let allowed = root.join(UNSAFE_ALLOWED_IN);
        let other = root.join("crates/other/src/lib.rs");
        let write = |file: &Path, text: &str| {
            fs::create_dir_all(file.parent().unwrap()).unwrap();
            fs::write(file, text).unwrap();
        };
        let found = |root: &Path| {
            let mut violations = Vec::new();
            check_unsafe_allowed(root, &mut violations);
            violations
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        };
        write(
            &allowed,
            "#[allow(unsafe_code)]\nlet x = 1;\n// allow(unsafe_code)\n",
        );
        // Any form that names the lint elsewhere counts, not just `allow(`.
        for (n, text) in [
            "#[allow(unsafe_code)]\n",
            "#[allow(dead_code, unsafe_code)]\n",
            "#[allow(\n    unsafe_code\n)]\n",
            "#[warn( unsafe_code)]\n",
        ]
        .into_iter()
        .enumerate()
        {
            write(&other, &format!("fn f() {{}}\n{text}"));
            let found = found(&root);
            assert_eq!(found.len(), 1, "case {n}: {found:?}");
            assert!(
                found[0].starts_with("crates/other/src/lib.rs:"),
                "case {n}: {found:?}"
            );
        }
        fs::remove_file(&other).unwrap();
        assert_eq!(found(&root), Vec::<String>::new());
        // In the one file: once, on a statement; not for the whole module.
        for text in [
            "#![allow(unsafe_code)]\n",
            "#[allow(unsafe_code)]\nlet a = 1;\n#[allow(unsafe_code)]\nlet b = 2;\n",
        ] {
            write(&allowed, text);
            assert_eq!(found(&root).len(), 1, "{text:?}");
        }
        let _ = fs::remove_dir_all(&root);
    }

    fn check_code_lines(source: &str, expected: &[&str]) {
        assert_eq!(code_lines(source), expected, "source: {source:?}");
    }

    #[test]
    fn code_lines_drop_comments_and_literal_contents() {
        check_code_lines("let t = Instant::now();", &["let t = Instant::now();"]);
        check_code_lines("// Instant::now()\nx", &["", "x"]);
        check_code_lines("/// uses std::fs\nfn f() {}", &["", "fn f() {}"]);
        check_code_lines("a /* std::net\n still */ b", &["a ", " b"]);
        check_code_lines("a /* /* nested */ std::fs */ b", &["a  b"]);
        check_code_lines(
            r#"let s = "a!( // not a comment"; x"#,
            &[r#"let s = ""; x"#],
        );
        check_code_lines(r#"let s = "a \" std::fs"; y"#, &[r#"let s = ""; y"#]);
        check_code_lines("let s = \"one\ntwo\"; z", &["let s = \"", "\"; z"]);
        check_code_lines("let s = r#\"say \"std::fs\"\"#; w", &["let s = \"\"; w"]);
        check_code_lines(
            r#"let q = '"'; std::fs::read"#,
            &["let q = ''; std::fs::read"],
        );
        check_code_lines(
            r"let q = '\''; fn f<'a>(x: &'a str)",
            &["let q = ''; fn f<'a>(x: &'a str)"],
        );
        check_code_lines("let r#type = 1;", &["let r#type = 1;"]);
    }

    fn check_dependencies(manifest: &str, expected: &[&str]) {
        let names: Vec<String> = manifest_dependencies(manifest)
            .into_iter()
            .map(|(_, name)| name)
            .collect();
        assert_eq!(names, expected, "manifest:\n{manifest}");
    }

    #[test]
    fn manifest_dependencies_reads_only_normal_dependency_tables() {
        check_dependencies(
            "[package]\nname = \"x\"\n\n[dependencies]\nhttp.workspace = true\n\
             tokio = { version = \"1\" } # comment\n\"serde\" = \"1\"\n\n\
             [dev-dependencies]\nproptest = \"1\"\n",
            &["http", "tokio", "serde"],
        );
        check_dependencies(
            "[dependencies]\nbytes = { version = \"1\", features = [\n  \"tokio\",\n] }\nmio = \"1\"\n",
            &["bytes", "mio"],
        );
        check_dependencies(
            "[target.'cfg(unix)'.dependencies]\nsocket2 = \"0.5\"\n[dependencies.hyper]\nversion = \"1\"\n\
             [build-dependencies]\ncc = \"1\"\n",
            &["socket2", "hyper"],
        );
    }

    #[test]
    fn workspace_lints_are_recognised() {
        assert!(has_workspace_lints(
            "[package]\nname = \"x\"\n\n[lints]\nworkspace = true\n"
        ));
        assert!(has_workspace_lints("lints.workspace = true\n[package]\n"));
        assert!(!has_workspace_lints("[package]\nname = \"x\"\n"));
        assert!(!has_workspace_lints("[lints]\n# workspace = true\n"));
        assert!(!has_workspace_lints("[lints.rust]\nworkspace = true\n"));
    }

    #[test]
    fn machine_paths_are_found_at_path_starts_only() {
        let needle = format!("/{}/", "work");
        assert!(contains_path(&format!("cd {needle}main"), &needle));
        assert!(contains_path(&format!("\"{needle}x\""), &needle));
        assert!(contains_path(&format!("file://{needle}x"), &needle));
        assert!(!contains_path(
            &format!("https://example.com{needle}x"),
            &needle
        ));
        assert!(!contains_path(&format!("./docs{needle}x"), &needle));
        assert!(!contains_path("nothing here", &needle));
    }

    #[test]
    fn keywords_follow_crates_io_rules() {
        let words = |list: &[&str]| list.iter().map(|w| (*w).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            keyword_problem(&words(&["upload", "sans-io", "c++", "a_b"])),
            None
        );
        assert!(keyword_problem(&words(&["a", "b", "c", "d", "e", "f"])).is_some());
        assert!(keyword_problem(&words(&["twenty-one-characters"])).is_some());
        assert!(keyword_problem(&words(&["9lives"])).is_some());
        assert!(keyword_problem(&words(&["two words"])).is_some());
        assert!(keyword_problem(&words(&["café"])).is_some());
    }

    #[test]
    fn forbidden_dependency_names_ignore_dash_or_underscore() {
        assert!(is_forbidden_core_dep("hyper_util"));
        assert!(is_forbidden_core_dep("async-std"));
        assert!(!is_forbidden_core_dep("http"));
    }
}
