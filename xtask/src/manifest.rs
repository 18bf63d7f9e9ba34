//! Cargo manifests read as text (xtask is std only, so no TOML crate): table
//! headers, comments, one key's value, one key's array of strings.
//!
//! Enough for the manifests of this repository, not for any TOML: keys are read
//! in their own `[table]` (not as `table.key` from a parent, nor in inline
//! tables), and a value other than an array is read from its line alone.

/// The name inside a `[table]` or `[[array]]` header line, if `line` is one.
pub(crate) fn table_header(line: &str) -> Option<&str> {
    let inner = line.strip_prefix('[')?;
    let end = inner.rfind(']')?;
    Some(inner[..end].trim_matches(['[', ']']).trim())
}

/// `line` without a trailing `# comment` (a `#` inside a quoted string is kept).
pub(crate) fn strip_comment(line: &str) -> &str {
    let mut quote = None;
    for (at, c) in line.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), _) if c == q => quote = None,
            (None, '#') => return &line[..at],
            _ => {}
        }
    }
    line
}

/// The value of `key` in `[table]` as written (a string without its quotes,
/// `false` as `false`), or `None` when the table does not set it.
pub(crate) fn value(manifest: &str, table: &str, key: &str) -> Option<String> {
    let (first, _) = find(manifest, table, key)?;
    Some(first.trim_matches(['"', '\'']).to_owned())
}

/// The strings of the array `key` in `[table]`, which may span lines
/// (`members = [\n "a",\n "b",\n]`); `None` when the table does not set it.
pub(crate) fn strings(manifest: &str, table: &str, key: &str) -> Option<Vec<String>> {
    let (first, rest) = find(manifest, table, key)?;
    let mut text = first.to_owned();
    let mut depth = bracket_depth(&text);
    for line in rest.lines() {
        if depth <= 0 {
            break;
        }
        let line = strip_comment(line);
        depth += bracket_depth(line);
        text.push_str(line);
    }
    Some(
        text.split('"')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect(),
    )
}

/// The value of `key` in `[table]` (its first line, comment removed, trimmed)
/// and the text after that line.
fn find<'a>(manifest: &'a str, table: &str, key: &str) -> Option<(&'a str, &'a str)> {
    let mut current = String::new();
    let mut rest = manifest;
    while !rest.is_empty() {
        let (raw, after) = rest.split_once('\n').unwrap_or((rest, ""));
        rest = after;
        let line = strip_comment(raw).trim();
        if let Some(header) = table_header(line) {
            current = header.chars().filter(|c| !c.is_whitespace()).collect();
            continue;
        }
        if current != table {
            continue;
        }
        if let Some((name, value)) = line.split_once('=')
            && name.trim().trim_matches(['"', '\'']) == key
        {
            return Some((value.trim(), rest));
        }
    }
    None
}

/// Brackets opened minus brackets closed on `text`, outside strings.
fn bracket_depth(text: &str) -> i32 {
    let mut quote = None;
    let mut depth = 0;
    for c in text.chars() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), _) if c == q => quote = None,
            (None, '[') => depth += 1,
            (None, ']') => depth -= 1,
            _ => {}
        }
    }
    depth
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: &str = "\
[workspace]
resolver = \"3\"
members = [
    \"crates/core\", # the core
    \"xtask\",
]

[workspace.package]
version = \"0.1.0\"
rust-version = \"1.89\" # the MSRV
license = \"MIT OR Apache-2.0\"

[workspace.dependencies]
rust-version = \"not this one\"
";

    #[test]
    fn a_key_is_read_in_its_own_table_only() {
        assert_eq!(
            value(ROOT, "workspace.package", "rust-version").as_deref(),
            Some("1.89")
        );
        assert_eq!(
            value(ROOT, "workspace.dependencies", "rust-version").as_deref(),
            Some("not this one")
        );
        assert_eq!(value(ROOT, "workspace", "rust-version"), None);
        assert_eq!(value(ROOT, "package", "rust-version"), None);
        let package = "[package]\nname = 'x'\npublish = false\nrust-version.workspace = true\n";
        assert_eq!(value(package, "package", "name").as_deref(), Some("x"));
        assert_eq!(
            value(package, "package", "publish").as_deref(),
            Some("false")
        );
        assert_eq!(value(package, "package", "rust-version"), None);
    }

    #[test]
    fn arrays_are_read_across_lines_and_comments() {
        assert_eq!(
            strings(ROOT, "workspace", "members"),
            Some(vec!["crates/core".to_owned(), "xtask".to_owned()])
        );
        let package = "[package]\nkeywords = [\"a\", \"b\"] # [not]\nname = \"x\"\n";
        assert_eq!(
            strings(package, "package", "keywords"),
            Some(vec!["a".to_owned(), "b".to_owned()])
        );
        assert_eq!(strings(package, "package", "categories"), None);
    }

    #[test]
    fn comments_end_outside_strings_only() {
        assert_eq!(strip_comment("a = \"#1\" # note"), "a = \"#1\" ");
        assert_eq!(
            table_header(strip_comment("[workspace.package] # x").trim()),
            Some("workspace.package")
        );
        assert_eq!(table_header("[[bin]]"), Some("bin"));
    }
}
