//! Identity and tenancy: who may touch which mailbox, as a table of cases run
//! against a real server on 127.0.0.1, in both identity modes (a tokens file and
//! JWTs checked against a JWKS). Every refused write is followed by a storage
//! check: the data directory holds exactly what it held before.

#![allow(clippy::pedantic)] // test code favours brevity over pedantry

use std::collections::BTreeMap;
use std::path::Path;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use upsession_core::identity::{TokenEntry, token_digest};
use upsession_server_hyper::{AuthMode, JwtAuth};
use upsession_testbed::issuer::{AUDIENCE, ISSUER, Issuer};
use upsession_testbed::kit::{Graph, TestServer, attachment, seeded, sha256_hex};

/// Tokens of the tokens-file server.
const ALICE: &str = "alice-token";
const BOB: &str = "bob-token";
const CAROL_NO_SCOPE: &str = "carol-token";
const READER: &str = "reader-token";
const APP: &str = "app-token";
const APP_NO_ROLE: &str = "app-no-role-token";

fn entry(token: &str, user: &str, upn: Option<&str>, scopes: &[&str], app: bool) -> TokenEntry {
    TokenEntry {
        sha256: Some(token_digest(token.as_bytes())),
        token: None,
        user: user.into(),
        upn: upn.map(Into::into),
        name: None,
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        app,
    }
}

fn tokens_file(dir: &Path) -> std::path::PathBuf {
    let entries = [
        entry(
            ALICE,
            "alice",
            Some("alice@contoso.com"),
            &["Mail.ReadWrite"],
            false,
        ),
        entry(
            BOB,
            "bob",
            Some("bob@contoso.com"),
            &["Mail.ReadWrite"],
            false,
        ),
        entry(CAROL_NO_SCOPE, "carol", None, &["User.Read"], false),
        entry(READER, "reader", None, &["Mail.Read"], false),
        entry(APP, "backup-app", None, &["Mail.ReadWrite"], true),
        entry(APP_NO_ROLE, "other-app", None, &["User.Read.All"], true),
    ];
    let text: String = entries
        .iter()
        .map(|e| format!("{}\n", e.to_toml()))
        .collect();
    let path = dir.join("tokens.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Every file under `dir` with the SHA-256 of its bytes: what "nothing was
/// written" compares.
fn stored(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let name = p.strip_prefix(dir).unwrap().display().to_string();
                out.insert(name, sha256_hex(&std::fs::read(&p).unwrap()));
            }
        }
    }
    out
}

/// One request of the table: who, what, and the status Graph would answer.
struct Case {
    name: &'static str,
    token: Option<String>,
    method: Method,
    path: String,
    body: Option<Value>,
    status: u16,
    code: Option<&'static str>,
}

fn case(
    name: &'static str,
    token: Option<&str>,
    method: Method,
    path: impl Into<String>,
    status: u16,
) -> Case {
    let body = match method {
        Method::POST => Some(json!({"subject": "x"})),
        _ => None,
    };
    Case {
        name,
        token: token.map(str::to_owned),
        method,
        path: path.into(),
        body,
        status,
        code: None,
    }
}

impl Case {
    fn body(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }
    fn code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }
}

/// Runs every case; returns how many ran. Refused writes must leave `dir` as it was.
async fn run(graph: &Graph, dir: &Path, cases: Vec<Case>) -> usize {
    let http = reqwest::Client::new();
    let n = cases.len();
    for c in cases {
        let before = stored(dir);
        let mut req = http.request(c.method.clone(), graph.url(&c.path));
        if let Some(t) = &c.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = &c.body {
            req = req.json(b);
        }
        let res = req.send().await.unwrap();
        let status = res.status();
        let www_authenticate = res
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_owned());
        let body: Value = res.json().await.unwrap_or(Value::Null);
        assert_eq!(
            status.as_u16(),
            c.status,
            "{}: {} {} answered {status} {body}",
            c.name,
            c.method,
            c.path
        );
        if let Some(code) = c.code {
            assert_eq!(body["error"]["code"], code, "{}: {body}", c.name);
        }
        if status == StatusCode::UNAUTHORIZED {
            assert_eq!(www_authenticate.as_deref(), Some("Bearer"), "{}", c.name);
        }
        if !status.is_success() {
            assert!(
                body["error"]["code"].is_string(),
                "{}: Graph's error JSON: {body}",
                c.name
            );
            assert_eq!(
                stored(dir),
                before,
                "{}: a refused request wrote something",
                c.name
            );
        }
    }
    n
}

/// Alice's message with one finished attachment: (message id, attachment id, uploadUrl).
async fn alice_message(alice: &Graph) -> (String, String, String) {
    let msg = alice.draft().await;
    let data = seeded(3_000_000, 1);
    let url = alice.session(&msg, data.len()).await;
    let res = alice.put(&url, &data, 0, data.len() - 1).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let (status, list) = alice
        .call(
            Method::GET,
            &format!("/me/messages/{msg}/attachments"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{list}");
    let aid = list["value"][0]["id"].as_str().unwrap().to_owned();
    (msg, aid, url)
}

#[tokio::test]
async fn a_tokens_file_keeps_every_user_in_their_own_mailbox() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = tokens_file(dir.path());
    let server = TestServer::start_in(&data, |c| c.with_auth(AuthMode::TokensFile(file))).await;
    let as_ = |token: &str| Graph::new(server.base(), token);
    let (alice, bob) = (as_(ALICE), as_(BOB));
    let (msg, aid, url) = alice_message(&alice).await;
    let event = alice
        .create_item("/me/events", json!({"subject": "e"}))
        .await;
    let bobs = bob.draft().await;
    let m = |user: &str| format!("/{user}/messages/{msg}");
    let small = json!({
        "@odata.type": "#microsoft.graph.fileAttachment",
        "name": "s.txt", "contentBytes": "aGVsbG8="
    });
    let cases = vec![
        // Alice in her own mailbox, by /me, id and sign-in name (any case).
        case(
            "alice reads her message",
            Some(ALICE),
            Method::GET,
            m("me"),
            200,
        ),
        case(
            "alice by id",
            Some(ALICE),
            Method::GET,
            m("users/alice"),
            200,
        ),
        case(
            "alice by upn",
            Some(ALICE),
            Method::GET,
            m("users/ALICE@contoso.com"),
            200,
        ),
        case(
            "alice lists",
            Some(ALICE),
            Method::GET,
            format!("{}/attachments", m("me")),
            200,
        ),
        case(
            "alice reads bytes",
            Some(ALICE),
            Method::GET,
            format!("{}/attachments/{aid}/$value", m("me")),
            200,
        ),
        case(
            "alice reads her event",
            Some(ALICE),
            Method::GET,
            format!("/me/events/{event}"),
            200,
        ),
        // Bob through /me: alice's ids are not found in his mailbox.
        case(
            "bob reads alice's message",
            Some(BOB),
            Method::GET,
            m("me"),
            404,
        )
        .code("ErrorItemNotFound"),
        case(
            "bob lists alice's attachments",
            Some(BOB),
            Method::GET,
            format!("{}/attachments", m("me")),
            404,
        ),
        case(
            "bob reads alice's attachment",
            Some(BOB),
            Method::GET,
            format!("{}/attachments/{aid}", m("me")),
            404,
        ),
        case(
            "bob reads alice's bytes",
            Some(BOB),
            Method::GET,
            format!("{}/attachments/{aid}/$value", m("me")),
            404,
        ),
        case(
            "bob deletes alice's attachment",
            Some(BOB),
            Method::DELETE,
            format!("{}/attachments/{aid}", m("me")),
            404,
        ),
        case(
            "bob opens a session on alice's message",
            Some(BOB),
            Method::POST,
            format!("{}/attachments/createUploadSession", m("me")),
            404,
        )
        .body(attachment("evil.bin", 3_000_000)),
        case(
            "bob attaches a small file to alice's message",
            Some(BOB),
            Method::POST,
            format!("{}/attachments", m("me")),
            404,
        )
        .body(small.clone()),
        case(
            "bob reads alice's event",
            Some(BOB),
            Method::GET,
            format!("/me/events/{event}"),
            404,
        ),
        case(
            "bob's event path to alice's message",
            Some(BOB),
            Method::GET,
            format!("/me/events/{msg}"),
            404,
        ),
        // Bob through /users/alice: another user's mailbox is 403.
        case(
            "bob reads /users/alice",
            Some(BOB),
            Method::GET,
            m("users/alice"),
            403,
        )
        .code("ErrorAccessDenied"),
        case(
            "bob reads /users/alice@contoso.com",
            Some(BOB),
            Method::GET,
            m("users/alice@contoso.com"),
            403,
        ),
        case(
            "bob lists /users/alice",
            Some(BOB),
            Method::GET,
            format!("{}/attachments", m("users/alice")),
            403,
        ),
        case(
            "bob reads alice's bytes by /users",
            Some(BOB),
            Method::GET,
            format!("{}/attachments/{aid}/$value", m("users/alice")),
            403,
        ),
        case(
            "bob deletes by /users/alice",
            Some(BOB),
            Method::DELETE,
            format!("{}/attachments/{aid}", m("users/alice")),
            403,
        ),
        case(
            "bob opens a session by /users/alice",
            Some(BOB),
            Method::POST,
            format!("{}/attachments/createUploadSession", m("users/alice")),
            403,
        )
        .body(attachment("evil.bin", 3_000_000)),
        case(
            "bob attaches by /users/alice",
            Some(BOB),
            Method::POST,
            format!("{}/attachments", m("users/alice")),
            403,
        )
        .body(small.clone()),
        case(
            "bob drafts in alice's mailbox",
            Some(BOB),
            Method::POST,
            "/users/alice/messages",
            403,
        ),
        case(
            "bob creates an event for alice",
            Some(BOB),
            Method::POST,
            "/users/alice/events",
            403,
        ),
        case(
            "alice reads bob's draft",
            Some(ALICE),
            Method::GET,
            format!("/me/messages/{bobs}"),
            404,
        ),
        // Tokens without the permission: 403 whatever the mailbox.
        case(
            "no scope drafts",
            Some(CAROL_NO_SCOPE),
            Method::POST,
            "/me/messages",
            403,
        )
        .code("ErrorAccessDenied"),
        case(
            "no scope reads",
            Some(CAROL_NO_SCOPE),
            Method::GET,
            m("me"),
            403,
        ),
        case(
            "no scope reads alice",
            Some(CAROL_NO_SCOPE),
            Method::GET,
            m("users/alice"),
            403,
        ),
        case(
            "Mail.Read drafts",
            Some(READER),
            Method::POST,
            "/me/messages",
            403,
        ),
        case(
            "Mail.Read opens a session",
            Some(READER),
            Method::POST,
            format!("{}/attachments/createUploadSession", m("me")),
            403,
        )
        .body(attachment("r.bin", 3_000_000)),
        case(
            "Mail.Read reads alice's message",
            Some(READER),
            Method::GET,
            m("me"),
            404,
        ),
        // An application token: any user by /users with its role, never /me.
        case(
            "app reads alice by id",
            Some(APP),
            Method::GET,
            m("users/alice"),
            200,
        ),
        case(
            "app reads alice by upn",
            Some(APP),
            Method::GET,
            format!("{}/attachments", m("users/alice@contoso.com")),
            200,
        ),
        case(
            "app reads alice's message as bob's",
            Some(APP),
            Method::GET,
            m("users/bob"),
            404,
        ),
        case("app uses /me", Some(APP), Method::GET, m("me"), 400).code("BadRequest"),
        case(
            "app drafts through /me",
            Some(APP),
            Method::POST,
            "/me/messages",
            400,
        ),
        case(
            "app without the role",
            Some(APP_NO_ROLE),
            Method::GET,
            m("users/alice"),
            403,
        ),
        case(
            "app without the role deletes",
            Some(APP_NO_ROLE),
            Method::DELETE,
            format!("{}/attachments/{aid}", m("users/alice")),
            403,
        ),
        // No token, a wrong one, another scheme.
        case("no token", None, Method::GET, m("me"), 401).code("InvalidAuthenticationToken"),
        case("unknown token", Some("guess"), Method::GET, m("me"), 401),
        case(
            "unknown token writes",
            Some("guess"),
            Method::POST,
            "/me/messages",
            401,
        ),
        case(
            "alice's token with a byte more",
            Some(&format!("{ALICE}x")),
            Method::GET,
            m("me"),
            401,
        ),
    ];
    let mut n = run(&alice, server.dir(), cases).await;

    // Another scheme than Bearer.
    let basic = reqwest::Client::new()
        .get(alice.url(&m("me")))
        .header("Authorization", format!("Basic {ALICE}"))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 401);
    n += 1;

    // The uploadUrl is the credential of its one session: GET works for whoever
    // holds it; another session's id with it is refused.
    let status = reqwest::Client::new().get(&url).send().await.unwrap();
    assert_eq!(status.status(), 200);
    let bob_url = bob.session(&bobs, 3_000_000).await;
    let (bob_base, _) = bob_url.split_once('?').unwrap();
    let (_, alice_query) = url.split_once('?').unwrap();
    let crossed = reqwest::Client::new()
        .delete(format!("{bob_base}?{alice_query}"))
        .send()
        .await
        .unwrap();
    assert_eq!(crossed.status(), 401, "alice's credential on bob's session");
    // A fragment PUT with the crossed credential: refused, nothing kept.
    let before = stored(server.dir());
    let bytes = seeded(3_000_000, 9);
    let put = alice
        .http
        .put(format!("{bob_base}?{alice_query}"))
        .header("Content-Range", "bytes 0-1048575/3000000")
        .body(bytes[..1_048_576].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(
        put.status(),
        401,
        "a PUT with alice's credential on bob's session"
    );
    assert_eq!(
        stored(server.dir()),
        before,
        "the crossed PUT wrote something"
    );
    n += 3;

    // And alice's attachment is still there, whole.
    let (status, list) = alice
        .call(
            Method::GET,
            &format!("/me/messages/{msg}/attachments"),
            None,
        )
        .await;
    assert_eq!(
        (status.as_u16(), list["value"].as_array().map(Vec::len)),
        (200, Some(1))
    );
    eprintln!("{n} requests tried");

    // Failed authentications are counted by reason; no token text reaches /metrics.
    let metrics = reqwest::get(format!("{}/metrics", server.base()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("upsession_auth_failures_total{reason=\"unknown_token\"} 3"),
        "{metrics}"
    );
    assert!(!metrics.contains(ALICE) && !metrics.contains("guess"));
}

#[tokio::test]
async fn a_tokens_file_is_read_again_when_it_changes() {
    let dir = tempfile::tempdir().unwrap();
    let file = tokens_file(dir.path());
    let server = TestServer::start_in(&dir.path().join("data"), |c| {
        c.with_auth(AuthMode::TokensFile(file.clone()))
    })
    .await;
    let dave = Graph::new(server.base(), "dave-token");
    let (status, _) = dave
        .call(Method::POST, "/me/messages", Some(json!({"subject": "d"})))
        .await;
    assert_eq!(status, 401);
    let added = entry("dave-token", "dave", None, &["Mail.ReadWrite"], false);
    let mut text = std::fs::read_to_string(&file).unwrap();
    text.push_str(&added.to_toml());
    std::fs::write(&file, text).unwrap();
    // Looked at once a second: within a few seconds dave is in.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (status, body) = dave
            .call(Method::POST, "/me/messages", Some(json!({"subject": "d"})))
            .await;
        if status == 201 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "dave still refused: {status} {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // A broken edit keeps the last good file in use.
    std::fs::write(&file, "[[token]\nbroken").unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let (status, _) = dave
        .call(Method::POST, "/me/messages", Some(json!({"subject": "d"})))
        .await;
    assert_eq!(status, 201);
    // The next good file is read (the watcher lives on): dave's token, taken out,
    // is refused; erin's, put in, works.
    let erin = entry("erin-token", "erin", None, &["Mail.ReadWrite"], false);
    std::fs::write(&file, erin.to_toml()).unwrap();
    let erin = Graph::new(server.base(), "erin-token");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (dave_status, _) = dave
            .call(Method::POST, "/me/messages", Some(json!({"subject": "d"})))
            .await;
        let (erin_status, _) = erin
            .call(Method::POST, "/me/messages", Some(json!({"subject": "e"})))
            .await;
        if (dave_status.as_u16(), erin_status.as_u16()) == (401, 201) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "after the edit: dave {dave_status}, erin {erin_status}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_tokens_file_made_after_the_start_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("later.toml");
    let server = TestServer::start_in(&dir.path().join("data"), |c| {
        c.with_auth(AuthMode::TokensFile(file.clone()))
    })
    .await;
    let alice = Graph::new(server.base(), ALICE);
    let (status, _) = alice
        .call(Method::POST, "/me/messages", Some(json!({"subject": "a"})))
        .await;
    assert_eq!(status, 401, "no file, no token");
    tokens_file(dir.path());
    std::fs::rename(dir.path().join("tokens.toml"), &file).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (status, body) = alice
            .call(Method::POST, "/me/messages", Some(json!({"subject": "a"})))
            .await;
        if status == 201 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still {status} {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn jwts_are_checked_for_signature_issuer_audience_and_time() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = Issuer::new(dir.path());
    let jwt = JwtAuth::new(issuer.jwks(), ISSUER, AUDIENCE);
    let server = TestServer::start_in(&dir.path().join("data"), |c| {
        c.with_auth(AuthMode::Jwt(jwt))
    })
    .await;
    let alice_claims =
        Issuer::user_claims("a11ce", "alice@contoso.com", "Mail.ReadWrite User.Read");
    let alice = Graph::new(server.base(), issuer.mint(&alice_claims));
    let (msg, aid, _) = alice_message(&alice).await;
    let bob = issuer.mint(&Issuer::user_claims(
        "b0b",
        "bob@contoso.com",
        "Mail.ReadWrite",
    ));
    let no_scope = issuer.mint(&Issuer::user_claims(
        "c4r01",
        "carol@contoso.com",
        "User.Read",
    ));
    let app = issuer.mint(&Issuer::app_claims("daemon", &["Mail.ReadWrite"]));
    let with = |key: &str, value: Value| {
        let mut c = alice_claims.clone();
        c[key] = value;
        issuer.mint(&c)
    };
    let without = |key: &str| {
        let mut c = alice_claims.clone();
        c.as_object_mut().unwrap().remove(key);
        issuer.mint(&c)
    };
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap();
    let m = format!("/me/messages/{msg}");
    let cases = vec![
        case("alice", Some(alice.token()), Method::GET, m.clone(), 200),
        case(
            "alice by upn",
            Some(alice.token()),
            Method::GET,
            format!("/users/alice@contoso.com/messages/{msg}"),
            200,
        ),
        case(
            "alice by oid",
            Some(alice.token()),
            Method::GET,
            format!("/users/a11ce/messages/{msg}"),
            200,
        ),
        case("bob by /me", Some(&bob), Method::GET, m.clone(), 404),
        case(
            "bob by /users",
            Some(&bob),
            Method::GET,
            format!("/users/a11ce/messages/{msg}"),
            403,
        ),
        case(
            "bob deletes",
            Some(&bob),
            Method::DELETE,
            format!("{m}/attachments/{aid}"),
            404,
        ),
        case(
            "no scope",
            Some(&no_scope),
            Method::POST,
            "/me/messages",
            403,
        ),
        case(
            "application",
            Some(&app),
            Method::GET,
            format!("/users/a11ce/messages/{msg}"),
            200,
        ),
        case("application /me", Some(&app), Method::GET, m.clone(), 400),
        case(
            "expired",
            Some(&with("exp", json!(now - 120))),
            Method::GET,
            m.clone(),
            401,
        ),
        case(
            "expired writes",
            Some(&with("exp", json!(now - 120))),
            Method::POST,
            "/me/messages",
            401,
        ),
        case(
            "not yet valid",
            Some(&with("nbf", json!(now + 600))),
            Method::GET,
            m.clone(),
            401,
        ),
        case(
            "wrong issuer",
            Some(&with("iss", json!("https://evil.example/v2.0"))),
            Method::GET,
            m.clone(),
            401,
        ),
        case(
            "wrong audience",
            Some(&with("aud", json!("api://someone-else"))),
            Method::GET,
            m.clone(),
            401,
        ),
        case(
            "no exp",
            Some(&{
                let mut c = alice_claims.clone();
                c.as_object_mut().unwrap().remove("exp");
                issuer.mint(&c)
            }),
            Method::GET,
            m.clone(),
            401,
        ),
        case(
            "alg none",
            Some(&Issuer::unsigned(&alice_claims)),
            Method::GET,
            m.clone(),
            401,
        ),
        case(
            "alg none writes",
            Some(&Issuer::unsigned(&alice_claims)),
            Method::POST,
            "/me/messages",
            401,
        ),
        case(
            "tampered",
            Some(&issuer.tampered(&alice_claims)),
            Method::GET,
            m.clone(),
            401,
        ),
        case(
            "HS256 with the public key",
            Some(&issuer.hmac_with_public_key(&alice_claims)),
            Method::GET,
            m.clone(),
            401,
        ),
        case(
            "unknown key",
            Some(&issuer.mint_with_kid(&alice_claims, "rotated-away")),
            Method::GET,
            m.clone(),
            401,
        ),
        case("not a JWT", Some("abc.def"), Method::GET, m.clone(), 401),
        case("no aud", Some(&without("aud")), Method::GET, m.clone(), 401),
        case("no iss", Some(&without("iss")), Method::POST, "/me/messages", 401),
        case("expired deletes", Some(&with("exp", json!(now - 120))), Method::DELETE, format!("{m}/attachments/{aid}"), 401),
        case("tampered opens a session", Some(&issuer.tampered(&alice_claims)), Method::POST, format!("{m}/attachments/createUploadSession"), 401)
            .body(attachment("t.bin", 3_000_000)),
        case("wrong audience attaches", Some(&with("aud", json!("api://x"))), Method::POST, format!("{m}/attachments"), 401)
            .body(json!({"@odata.type": "#microsoft.graph.fileAttachment", "name": "s.txt", "contentBytes": "aGk="})),
        case("user with roles and no scp", Some(&{
            let mut c = alice_claims.clone();
            c.as_object_mut().unwrap().remove("scp");
            c["roles"] = json!(["Mail.ReadWrite"]);
            issuer.mint(&c)
        }), Method::GET, format!("/users/b0b/messages/{msg}"), 403),
    ];
    run(&alice, server.dir(), cases).await;

    // An application writes by the sign-in name of a user seen before; the user
    // reads it as their own.
    let daemon = Graph::new(server.base(), &app);
    let written = daemon
        .create_item(
            "/users/Alice@Contoso.com/messages",
            json!({"subject": "from the app"}),
        )
        .await;
    let (status, _) = alice
        .call(Method::GET, &format!("/me/messages/{written}"), None)
        .await;
    assert_eq!(
        status, 200,
        "alice reads what the app wrote by her sign-in name"
    );

    // A key the JWKS gains later: refused first, accepted once the file changes.
    let other_dir = tempfile::tempdir().unwrap();
    let rotated = Issuer::with_kid(other_dir.path(), "rotated-in");
    let token = rotated.mint(&alice_claims);
    let graph = Graph::new(server.base(), &token);
    let (status, _) = graph.call(Method::GET, &m, None).await;
    assert_eq!(status, 401);
    issuer.write_jwks(&[serde_json::to_value(rotated.public_jwk()).unwrap()]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (status, body) = graph.call(Method::GET, &m, None).await;
        if status == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the rotated key: {status} {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_guesser_is_answered_429_once_over_its_budget() {
    let dir = tempfile::tempdir().unwrap();
    let file = tokens_file(dir.path());
    let server = TestServer::start_in(&dir.path().join("data"), |c| {
        c.with_auth(AuthMode::TokensFile(file))
            .with_auth_failure_limit(5)
    })
    .await;
    let http = reqwest::Client::new();
    let url = format!("{}/me/messages/none", server.base());
    for i in 0..5 {
        let res = http
            .get(&url)
            .bearer_auth(format!("guess-{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401);
    }
    let res = http.get(&url).bearer_auth("guess-6").send().await.unwrap();
    assert_eq!(res.status(), 429);
    let wait: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    // Even a good token waits: the budget is checked before any token is.
    let res = http.get(&url).bearer_auth(ALICE).send().await.unwrap();
    assert_eq!(res.status(), 429);
}
