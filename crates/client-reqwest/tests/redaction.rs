//! The uploadUrl is a bearer credential: its secret never shows in a log line, an
//! error, a progress event or `Debug` output; the token never goes to it.

#![allow(clippy::pedantic)] // test code favours brevity over pedantry

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::*;
use http::Method;
use tracing_subscriber::fmt::MakeWriter;
use upsession_client_reqwest::{Error, ProgressSink, UploadOptions, UploadUrl};
use upsession_conformance::fake::{Fault, RetryAfter};

/// Log lines, captured.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Self;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Asserts that `text` shows neither the uploadUrl query's parameter name nor its
/// secret value (`name=value`).
fn assert_no_secret_of(query: &str, what: &str, text: &str) {
    let (name, secret) = query.split_once('=').expect("a name=value query");
    assert!(
        !text.contains(secret),
        "{what} shows the uploadUrl's secret:\n{text}"
    );
    assert!(
        !text.contains(name),
        "{what} shows the uploadUrl's query:\n{text}"
    );
}

fn assert_no_secret(what: &str, text: &str) {
    assert_no_secret_of("tempauth=SECRET", what, text);
}

#[tokio::test]
async fn the_upload_urls_secret_never_shows_in_logs_events_or_errors() {
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("upsession_client_reqwest=trace")
        .with_writer(logs.clone())
        .with_ansi(false)
        .finish();
    // Global, not scoped: callsites first hit by another test's thread would
    // otherwise be cached as uninteresting. Every test here then logs into it,
    // which only widens the check.
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let server = with_file(6 * FRAGMENT as usize, 50).await;
    server.inject(Method::PUT, 2, Fault::LoseResponse);
    server.inject(Method::PUT, 3, Fault::ResetMidBody);
    let throttled = Fault::Throttle {
        unavailable: false,
        retry_after: RetryAfter::Seconds(0),
    };
    server.inject(Method::PUT, 4, throttled);
    server.inject(Method::PUT, 6, Fault::Expire);
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&events);
    let sink = ProgressSink::callback(move |e| {
        seen.lock().unwrap().push(format!("{e}\n{e:?}"));
    });
    let client = builder(&server)
        .state_dir(server.dir().join("states"))
        .build()
        .unwrap();
    let err = server
        .upload(&client, UploadOptions::new().progress(sink))
        .await
        .unwrap_err();
    // The uploadUrl as the fake saw it: its path, and its query with the secret.
    let (upload_path, query) = server
        .log()
        .into_iter()
        .find(|r| r.to_upload_url)
        .map(|r| (r.path, r.query.unwrap()))
        .unwrap();
    let assert_no_secret = |what: &str, text: &str| assert_no_secret_of(&query, what, text);
    assert!(matches!(err, Error::SessionExpired { .. }), "{err:?}");
    assert_no_secret("the error", &format!("{err}\n{err:?}"));
    assert_no_secret("the client's Debug", &format!("{client:?}"));

    let events = events.lock().unwrap().join("\n");
    assert_no_secret("progress events", &events);
    assert!(
        events.contains(&format!("{upload_path}?<redacted>")),
        "{events}"
    );

    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert_no_secret("the logs", &logs);
    assert!(
        logs.contains("?<redacted>"),
        "the uploadUrl is logged, redacted:\n{logs}"
    );
    assert!(!logs.contains(server.token()), "the token is never logged");

    // The status and cancel errors of the now unknown session.
    let url: UploadUrl = format!("{}{upload_path}?{query}", server.origin()).into();
    for e in [
        client.status(&url).await.unwrap_err(),
        client.cancel(&url).await.unwrap_err(),
    ] {
        assert_no_secret("a status or cancel error", &format!("{e}\n{e:?}"));
    }
    assert_token_only_to_graph(&server);
}

#[tokio::test]
async fn transport_errors_do_not_show_the_upload_url() {
    // Nothing listens on port 1: the connection is refused.
    let client = upsession_client_reqwest::Client::builder().build().unwrap();
    let url = UploadUrl::new("http://127.0.0.1:1/upload/s1?tempauth=SECRET-T");
    for e in [
        client.status(&url).await.unwrap_err(),
        client.cancel(&url).await.unwrap_err(),
    ] {
        assert!(matches!(e, Error::Http(_)), "{e:?}");
        assert_no_secret("a transport error", &format!("{e}\n{e:?}"));
    }
    assert_no_secret("an UploadUrl", &format!("{url} {url:?}"));
}

#[tokio::test]
async fn the_token_goes_to_graph_and_never_to_the_upload_url() {
    let server = with_file(2 * FRAGMENT as usize, 51).await;
    server.inject(Method::PUT, 1, Fault::LoseResponse);
    let client = client(&server);
    let draft = client.create_draft("s").await.unwrap();
    let up = client
        .upload_file(&draft, &server.path, UploadOptions::new())
        .await
        .unwrap();
    server.assert_stored(&up);
    let log = server.log();
    assert!(log.iter().any(|r| r.to_upload_url && r.method == "PUT"));
    assert!(log.iter().any(|r| r.to_upload_url && r.method == "GET"));
    assert_eq!(log.iter().filter(|r| r.authorization.is_some()).count(), 2);
    assert_token_only_to_graph(&server);
}
