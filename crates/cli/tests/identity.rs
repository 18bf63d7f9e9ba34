//! `serve --auth tokens FILE` and `serve --auth jwt` as a user runs them: tokens
//! made with `upsession token add` and `upsession token jwt`, files uploaded with
//! `upsession upload`, and each user kept out of the other's mailbox.

#![allow(clippy::pedantic)] // test code favours brevity over pedantry

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{Serve, bin, serve};
use serde_json::Value;
use upsession_testbed::kit::{Graph, seeded_file, sha256_hex};

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().expect("the binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A command's stdout, which must be one line, after it succeeded.
fn one_line(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    stdout.trim().to_owned()
}

/// `upsession upload FILE --draft D --json` with `token`: the attachment's Location.
fn upload(server: &Serve, token: &str, file: &Path, state: &Path) -> String {
    let out = run(bin()
        .args([
            "upload",
            "--base-url",
            &server.base,
            "--token",
            token,
            "--json",
        ])
        .args(["--draft", "from the CLI", "--state-dir"])
        .arg(state)
        .arg(file));
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let line: Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    line["location"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn token_add_gives_each_user_their_own_mailbox() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens.toml");
    let add = |user: &str, scopes: &str| {
        one_line(
            bin()
                .args(["token", "add", "--user", user, "--scopes", scopes, "--file"])
                .arg(&file),
        )
    };
    let alice = add("alice", "Mail.ReadWrite");
    let bob = add("bob", "Mail.ReadWrite");
    // The file keeps digests, never the tokens, and only its owner reads it.
    let kept = std::fs::read_to_string(&file).unwrap();
    assert!(!kept.contains(&alice) && !kept.contains(&bob), "{kept}");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let server = serve(
        &dir.path().join("data"),
        "127.0.0.1:0",
        &[
            "--fsync",
            "never",
            "--auth",
            "tokens",
            file.to_str().unwrap(),
        ],
    );
    assert!(
        server.banner.iter().any(|l| l.contains("tokens file")),
        "{:?}",
        server.banner
    );
    let (path, data) = seeded_file(dir.path(), "report.bin", 4_000_000, 3);
    let location = upload(&server, &alice, &path, &dir.path().join("state-a"));
    let alice_graph = Graph::new(&server.base, &alice);
    assert_eq!(
        sha256_hex(&alice_graph.download(&location).await),
        sha256_hex(&data)
    );

    // Bob holds the Location but not the mailbox: 404 by /me, 403 by /users/alice.
    let bob_graph = Graph::new(&server.base, &bob);
    assert_eq!(bob_graph.value(&location).await.status(), 404);
    let by_users = location.replace("/me/", "/users/alice/");
    assert_ne!(by_users, location, "{location}");
    assert_eq!(bob_graph.value(&by_users).await.status(), 403);
    assert_eq!(alice_graph.value(&by_users).await.status(), 200);

    // A token added while serving works at once (the file is read again).
    let carol = add("carol", "Mail.ReadWrite");
    let (path, _) = seeded_file(dir.path(), "c.bin", 100_000, 4);
    let mut tries = 0;
    loop {
        let out = run(bin()
            .args(["upload", "--base-url", &server.base, "--token", &carol])
            .args(["--draft", "c", "--state-dir"])
            .arg(dir.path().join("state-c"))
            .arg(&path));
        if out.status.success() {
            break;
        }
        tries += 1;
        assert!(tries < 20, "carol refused: {}", text(&out.stderr));
        std::thread::sleep(std::time::Duration::from_millis(250));
    }

    // A wrong token is one sentence and exit code 1.
    let out = run(bin()
        .args(["upload", "--base-url", &server.base, "--token", "guess"])
        .args(["--draft", "x", "--state-dir"])
        .arg(dir.path().join("state-x"))
        .arg(&path));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
}

#[tokio::test]
async fn token_jwt_mints_what_serve_auth_jwt_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("jwt");
    let mint = |user: &str, extra: &[&str]| {
        one_line(
            bin()
                .args(["token", "jwt", "--dir"])
                .arg(&keys)
                .args(["--user", user])
                .args(extra),
        )
    };
    let alice = mint("a11ce", &["--upn", "alice@contoso.com"]);
    let bob = mint("b0b", &[]);
    let short = mint("a11ce", &["--ttl", "1s"]);
    let other_audience = mint("a11ce", &["--audience", "api://elsewhere"]);
    let jwks = keys.join("jwks.json");
    let server = serve(
        &dir.path().join("data"),
        "127.0.0.1:0",
        &[
            "--fsync",
            "never",
            "--auth",
            "jwt",
            "--jwks",
            jwks.to_str().unwrap(),
            "--issuer",
            "https://login.upsession.test/v2.0",
            "--audience",
            "api://upsession",
            "--jwt-skew",
            "0s",
        ],
    );
    let (path, data) = seeded_file(dir.path(), "deck.bin", 3_500_000, 5);
    let location = upload(&server, &alice, &path, &dir.path().join("state"));
    let alice_graph = Graph::new(&server.base, &alice);
    assert_eq!(
        sha256_hex(&alice_graph.download(&location).await),
        sha256_hex(&data)
    );
    let by_upn = location.replace("/me/", "/users/alice@contoso.com/");
    assert_eq!(alice_graph.value(&by_upn).await.status(), 200);
    assert_eq!(
        Graph::new(&server.base, &bob)
            .value(&location)
            .await
            .status(),
        404
    );
    assert_eq!(
        Graph::new(&server.base, &other_audience)
            .value(&location)
            .await
            .status(),
        401
    );
    std::thread::sleep(std::time::Duration::from_millis(2100));
    assert_eq!(
        Graph::new(&server.base, &short)
            .value(&location)
            .await
            .status(),
        401
    );
}

#[test]
fn auth_flags_that_do_not_fit_are_one_sentence() {
    let dir = tempfile::tempdir().unwrap();
    for (args, says) in [
        (vec!["--auth", "jwt"], "--auth jwt needs --jwks"),
        (vec!["--auth", "ldap"], "is not a mode"),
        (vec!["--auth", "token", "extra"], "takes no file"),
        (vec!["--jwks", "k.json"], "go with --auth jwt"),
        (
            vec!["--auth", "tokens", "--token", "t"],
            "--token goes with --auth token",
        ),
    ] {
        let out = run(bin()
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .args(&args));
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        let err = text(&out.stderr);
        assert!(
            err.contains(says) && err.lines().count() == 1,
            "{args:?}: {err}"
        );
    }
    // A tokens file that does not read stops the start with its name.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[[token]]\nuser = \"a\"\n").unwrap();
    let out = run(bin()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("d"))
        .args(["--auth", "tokens"])
        .arg(&bad));
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("bad.toml") && err.contains("no `sha256`"),
        "{err}"
    );
}

#[test]
fn new_tokens_never_look_like_flags() {
    // base64url may begin with `-`: one token in 64 would be taken for a flag
    // when pasted after `--token` (found by CI). They carry a prefix instead.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("t.toml");
    for _ in 0..20 {
        let token = one_line(
            bin()
                .args(["token", "add", "--user", "u", "--file"])
                .arg(&file),
        );
        assert!(token.starts_with("ups_") && token.len() > 40, "{token}");
    }
    // And a token that does begin with `-` is still taken as the value.
    let out = run(bin().args([
        "upload",
        "--base-url",
        "http://127.0.0.1:9/v1.0",
        "--token",
        "-_abc",
        "--draft",
        "x",
        "/nonexistent-file",
    ]));
    let err = text(&out.stderr);
    assert!(!err.contains("unexpected argument"), "{err}");
}
