//! The server over HTTP/2 (h2c, prior knowledge) on 127.0.0.1: real uploads, and
//! the clients that would hold connections without using them: a preface and
//! nothing more, headers dripped after a fast preface, a re-sent fragment trickled,
//! hundreds of idle connections, one address holding busy ones. Every wait is
//! bounded; nothing asserts on how long something took beyond generous limits.

#![allow(clippy::pedantic)] // test code favours brevity over pedantry

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use upsession_core::Limits;
use upsession_server_hyper::Config;
use upsession_testbed::kit::{
    Admission, TestServer, admission, h2_frame, h2_frame_kinds, h2_get, h2_kind, h2_pinned,
    h2_read_until, preface_only, read_until_closed, seeded,
};

const MIB: usize = 1024 * 1024;

/// A loopback source address other than 127.0.0.1: one client of many.
fn ip(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

/// The kit's server with small limits, then `change`.
async fn start_with(change: impl FnOnce(Config) -> Config) -> TestServer {
    TestServer::start_with(|c| {
        change(
            c.with_limits(
                Limits::default()
                    .with_min_size(10)
                    .with_max_size(100_000_000)
                    .with_max_fragment(4 * MIB as u64),
            )
            .with_timeouts(Duration::from_secs(30), Duration::from_secs(30)),
        )
    })
    .await
}

/// A reqwest client speaking HTTP/2 with prior knowledge (h2c), no pooling.
fn h2c() -> reqwest::Client {
    reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap()
}

/// Asserts that `/healthz` answers 200 over a new connection, HTTP/1.1 and HTTP/2.
async fn served(srv: &TestServer) {
    for (client, version) in [
        (
            reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap(),
            reqwest::Version::HTTP_11,
        ),
        (h2c(), reqwest::Version::HTTP_2),
    ] {
        let res = client
            .get(format!("{}/healthz", srv.origin()))
            .send()
            .await
            .expect("a real client is answered");
        assert_eq!(res.status(), 200);
        assert_eq!(res.version(), version);
    }
}

/// A counter's value on `/metrics` (OpenMetrics: `upsession_{name}_total N`).
async fn counter(srv: &TestServer, name: &str) -> u64 {
    let page = reqwest::get(format!("{}/metrics", srv.origin()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let prefix = format!("upsession_{name}_total ");
    page.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("{prefix} on {page}"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_real_http2_upload_of_several_fragments_ends_201_with_the_exact_bytes() {
    let srv = TestServer::start().await;
    let graph = upsession_testbed::kit::Graph::with_client(h2c(), srv.base(), srv.token());
    let data = seeded(10 * MIB + 12_345, 21);
    let url = graph.open_session(data.len()).await;
    let done = graph.upload(&url, &data, 4 * MIB).await;
    assert_eq!(done.version(), reqwest::Version::HTTP_2);
    assert_eq!(done.status(), 201);
    let location = upsession_testbed::kit::location(&done);
    assert!(graph.download(&location).await == data, "the exact bytes");
}

#[tokio::test]
async fn an_idle_preface_only_connection_gets_goaway_and_is_closed() {
    let srv = start_with(|c| c.with_idle_timeout(Duration::from_secs(1))).await;
    let mut conn = preface_only(srv.addr(), ip(1)).await;
    let (got, closed) = read_until_closed(&mut conn, Duration::from_secs(10)).await;
    let kinds = h2_frame_kinds(&got);
    assert!(
        closed,
        "closed within 10 s of a 1 s idle timeout: {kinds:?}"
    );
    assert_eq!(kinds.first(), Some(&h2_kind::SETTINGS), "{kinds:?}");
    assert!(
        kinds.contains(&h2_kind::GOAWAY),
        "said GOAWAY first: {kinds:?}"
    );
    assert!(counter(&srv, "connections_closed_idle").await >= 1);
    served(&srv).await;
}

#[tokio::test]
async fn a_connection_goes_idle_after_its_request_and_is_closed_with_goaway() {
    let srv = start_with(|c| c.with_idle_timeout(Duration::from_secs(1))).await;
    let mut conn = preface_only(srv.addr(), ip(1)).await;
    let mut hello = h2_frame(h2_kind::SETTINGS, 0, 0, &[]);
    hello.extend(h2_get("/healthz"));
    conn.write_all(&hello).await.unwrap();
    let (got, closed) = read_until_closed(&mut conn, Duration::from_secs(10)).await;
    let kinds = h2_frame_kinds(&got);
    assert!(closed, "closed once idle: {kinds:?}");
    let answered = kinds.iter().position(|k| *k == h2_kind::HEADERS);
    let goaway = kinds.iter().position(|k| *k == h2_kind::GOAWAY);
    assert!(
        answered.is_some() && goaway > answered,
        "answered, then GOAWAY: {kinds:?}"
    );
}

#[tokio::test]
async fn headers_dripped_after_a_fast_preface_are_cut_by_the_header_timeout() {
    let srv = start_with(|c| c.with_header_timeout(Duration::from_secs(1))).await;
    // A request of ~130 bytes of headers: the preface, SETTINGS and the frame's
    // own 9-byte header at once, then one byte every 100 ms (13 s in all).
    let mut block = h2_get("/healthz")[9..].to_vec();
    block.extend([0x00, 5]);
    block.extend(b"x-pad");
    block.push(100);
    block.extend([b'p'; 100]);
    let frame = h2_frame(h2_kind::HEADERS, 0x5, 1, &block);
    let conn = preface_only(srv.addr(), ip(1)).await;
    let (mut rd, mut wr) = conn.into_split();
    wr.write_all(&h2_frame(h2_kind::SETTINGS, 0, 0, &[]))
        .await
        .unwrap();
    wr.write_all(&frame[..9]).await.unwrap();
    let sent = Arc::new(AtomicUsize::new(9));
    let dripping = {
        let (sent, frame) = (Arc::clone(&sent), frame.clone());
        tokio::spawn(async move {
            for byte in &frame[9..] {
                if wr.write_all(&[*byte]).await.is_err() {
                    break;
                }
                sent.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            wr
        })
    };
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match tokio::io::AsyncReadExt::read(&mut rd, &mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    let sent_when_closed = sent.load(Ordering::SeqCst);
    dripping.abort();
    let kinds = h2_frame_kinds(&got);
    println!(
        "dripped headers cut after {sent_when_closed} of {} bytes",
        frame.len()
    );
    assert!(closed, "closed within 10 s of a 1 s header timeout");
    assert!(
        !kinds.contains(&h2_kind::HEADERS),
        "never answered: {kinds:?}"
    );
    assert!(
        sent_when_closed < frame.len(),
        "cut before the headers ended"
    );
    served(&srv).await;
}

#[tokio::test]
async fn a_re_sent_fragment_trickled_over_http2_is_cut_by_the_fragment_deadline() {
    let srv = start_with(|c| c.with_fragment_timeout(Duration::from_secs(1))).await;
    let data = seeded(3000, 22);
    let url = srv.open_session(data.len()).await;
    assert_eq!(srv.put(&url, &data, 0, 999).await.status(), 200);
    // The same range again, a byte every 50 ms: 50 s if nothing cut it.
    let tcp = TcpStream::connect(srv.addr()).await.unwrap();
    let (mut client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let req = http::Request::put(url.as_str())
        .header("content-range", "bytes 0-999/3000")
        .header("content-length", "1000")
        .body(())
        .unwrap();
    let (answer, mut body) = client.send_request(req, false).unwrap();
    let sent = Arc::new(AtomicUsize::new(0));
    let trickle = {
        let sent = Arc::clone(&sent);
        let bytes = data[..1000].to_vec();
        tokio::spawn(async move {
            for byte in bytes {
                if body
                    .send_data(bytes::Bytes::from(vec![byte]), false)
                    .is_err()
                {
                    break;
                }
                sent.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let started = Instant::now();
    let answer = tokio::time::timeout(Duration::from_secs(20), answer)
        .await
        .expect("answered within 20 s")
        .expect("an answer, not a reset");
    let sent_when_answered = sent.load(Ordering::SeqCst);
    trickle.abort();
    println!(
        "re-send answered {} after {:?}, {sent_when_answered} of 1000 bytes sent",
        answer.status(),
        started.elapsed()
    );
    assert_eq!(answer.status(), 408, "cut by the fragment deadline");
    assert!(sent_when_answered < 1000, "before its body ended");
    assert_eq!(srv.next_expected(&url).await, Some(1000), "the bytes stay");
    served(&srv).await;
}

#[tokio::test]
async fn preface_only_connections_filling_the_server_give_way_to_real_clients() {
    let srv = start_with(|c| c.with_max_connections(32)).await;
    let mut idle = Vec::new();
    for _ in 0..32 {
        let mut conn = preface_only(srv.addr(), ip(2)).await;
        assert_eq!(
            admission(&mut conn, Duration::from_secs(10)).await,
            Admission::Served
        );
        idle.push(conn);
    }
    // Full of preface-only connections: real clients are served all the same.
    served(&srv).await;
    let evicted = counter(&srv, "connections_evicted").await;
    assert!(evicted >= 2, "{evicted} connections gave way");
    // Those that gave way were told (GOAWAY) and closed; the others stay.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut goaway = 0;
    for conn in &mut idle[..4] {
        let left = deadline.saturating_duration_since(Instant::now());
        let (got, closed) = read_until_closed(conn, left.min(Duration::from_secs(3))).await;
        if closed && h2_frame_kinds(&got).contains(&h2_kind::GOAWAY) {
            goaway += 1;
        }
    }
    assert!(
        goaway >= 2,
        "the longest idle gave way first: {goaway} of 4"
    );
    assert_eq!(counter(&srv, "connections_refused").await, 0);
}

#[tokio::test]
async fn one_address_busy_at_its_cap_is_refused_503_while_another_is_served() {
    let srv = start_with(|c| c.with_max_connections_per_ip(4)).await;
    // Four connections from 127.0.0.2, each with a request in flight (an answer
    // its client never lets through): none of them can give way.
    let mut pinned = Vec::new();
    for _ in 0..4 {
        pinned.push(h2_pinned(srv.addr(), ip(2)).await);
    }
    let mut fifth = preface_only(srv.addr(), ip(2)).await;
    match admission(&mut fifth, Duration::from_secs(10)).await {
        Admission::Refused(answer) => {
            assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
            assert!(answer.contains("serviceNotAvailable"), "{answer}");
        }
        other => panic!("the fifth from 127.0.0.2 was {other:?}"),
    }
    let mut other = preface_only(srv.addr(), ip(3)).await;
    assert_eq!(
        admission(&mut other, Duration::from_secs(10)).await,
        Admission::Served
    );
    served(&srv).await;
    assert_eq!(counter(&srv, "connections_refused_per_ip").await, 1);
    // The pinned ones are still open: a connection with a request in flight
    // is never closed for idleness or to make room.
    for conn in &mut pinned {
        let kinds = h2_read_until(conn, h2_kind::GOAWAY, Duration::from_millis(200)).await;
        assert!(!kinds.contains(&h2_kind::GOAWAY), "{kinds:?}");
    }
}

#[tokio::test]
async fn hundreds_of_preface_only_connections_from_many_addresses_leave_room() {
    // 600 preface-only connections from 6 addresses against 256 slots: the
    // newest keep coming in, the longest idle give way, and real clients are
    // served throughout.
    let srv = start_with(|c| c.with_max_connections(256)).await;
    let mut held = Vec::new();
    for i in 0..600 {
        let conn = preface_only(srv.addr(), ip(10 + (i % 6) as u8)).await;
        held.push(conn);
        if i % 100 == 99 {
            served(&srv).await;
        }
    }
    let mut last = held.pop().unwrap();
    assert_eq!(
        admission(&mut last, Duration::from_secs(10)).await,
        Admission::Served
    );
    served(&srv).await;
    assert!(counter(&srv, "connections_evicted").await >= 600 - 256);
}

#[tokio::test]
async fn a_response_its_client_never_takes_is_cut_after_the_idle_timeout() {
    let srv = start_with(|c| c.with_idle_timeout(Duration::from_secs(1))).await;
    // A request whose answer the client never lets through (its window stays 0).
    let mut pinned = h2_pinned(srv.addr(), ip(2)).await;
    let (_, closed) = read_until_closed(&mut pinned, Duration::from_secs(20)).await;
    assert!(closed, "the stalled connection was cut");
    served(&srv).await;
}
