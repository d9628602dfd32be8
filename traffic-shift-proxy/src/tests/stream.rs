//! Request and response bodies streamed through the proxy, the replay buffer
//! of retries and mirrors (Envoy's `per_request_buffer_limit_bytes`), and
//! upgraded connections spliced both ways: real sockets, in-process
//! `http-echo` backends.

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::{Request, body::Bytes};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use super::{Answer, Running, backend, client, destination, route, start, start_with};
use crate::{
    Options,
    echo::{PATTERN_PERIOD, PatternCheck, pattern},
};
use traffic_shift_config::model::{HttpMirror, Retries};

/// `n` bytes of the echo's test pattern.
fn pattern_run(n: usize) -> Vec<u8> {
    (0..n).map(|i| pattern()[i % PATTERN_PERIOD]).collect()
}

async fn post(p: &Running, path: &str, body: Vec<u8>) -> Answer {
    let request = Request::post(format!("http://{}{path}", p.addr))
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let response = client()
        .request(request)
        .await
        .unwrap_or_else(|err| panic!("POST {path} through the proxy failed: {err}"));
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8_lossy(&body).into_owned();
    let json = serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
    Answer { status, body, json }
}

/// The route's `traffic_shift_http_retry_buffer_overflow_total`, 0 if it
/// has no series.
fn overflows(p: &Running, route: &str) -> u64 {
    let mut registry = prometheus_client::registry::Registry::default();
    p.proxy.metrics().register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    let series = format!("traffic_shift_http_retry_buffer_overflow_total{{route=\"{route}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(series.as_str()))
        .map_or(0, |v| v.parse().unwrap())
}

fn retries_5xx() -> Retries {
    Retries {
        attempts: 2,
        retry_on: vec!["5xx".to_owned()],
        ..Retries::default()
    }
}

#[tokio::test]
async fn bodies_past_the_replay_limit_stream_both_ways() {
    let v1 = backend("v1").await;
    // Istio's default retries: the body is kept while it fits.
    let mut r = route(0, vec![], vec![destination("v1", 1, &[&v1])]);
    r.retries = retries_5xx();
    let p = start(vec![r]).await;
    // 8 MiB up, over the 1 MiB buffer: no 413, every byte in order.
    let size = 8 << 20;
    let answer = post(&p, "/upload", pattern_run(size)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.json["body_bytes"], size, "{}", answer.body);
    assert_eq!(answer.json["body_pattern"], true, "{}", answer.body);
    assert_eq!(
        overflows(&p, "default/reviews/http[0]"),
        1,
        "the buffer was given up once"
    );
    // 8 MiB down.
    let response = client()
        .get(format!("http://{}/bytes/{size}", p.addr).parse().unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let (mut check, mut received) = (PatternCheck::default(), 0);
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame.unwrap().data_ref() {
            received += data.len();
            check.feed(data);
        }
    }
    assert_eq!(received, size);
    assert!(check.ok, "the download is the pattern, in order");
}

#[tokio::test]
async fn a_retry_replays_a_body_that_fits_and_not_one_that_outgrew_the_buffer() {
    let v1 = backend("v1").await;
    let mut r = route(0, vec![], vec![destination("v1", 1, &[&v1])]);
    r.retries = retries_5xx();
    let options = Options {
        buffer_limit_bytes: 64 << 10,
        ..Options::default()
    };
    let p = start_with(vec![r], options).await;
    let key = "default/reviews/http[0]";

    // Under the limit: the 503 is retried with the whole body again.
    v1.echo.fail_next(1);
    let answer = post(&p, "/", pattern_run(60 << 10)).await;
    assert_eq!(answer.status, 200, "retried: {}", answer.body);
    assert_eq!(answer.json["body_bytes"], 60 << 10, "{}", answer.body);
    assert_eq!(answer.json["body_pattern"], true, "{}", answer.body);
    assert_eq!(v1.echo.requests(), 2, "one failed attempt, one retry");
    assert_eq!(v1.echo.body_bytes(), 2 * (60 << 10), "the body sent twice");
    assert_eq!(overflows(&p, key), 0);

    // Over it: streamed, not retried, the failure is the client's, counted.
    v1.echo.fail_next(1);
    let answer = post(&p, "/", pattern_run(200 << 10)).await;
    assert_eq!(answer.status, 503, "not retried: {}", answer.body);
    assert_eq!(v1.echo.requests(), 3, "one attempt only");
    assert_eq!(v1.echo.body_bytes(), 2 * (60 << 10) + (200 << 10));
    assert_eq!(overflows(&p, key), 1);

    // And without a failure it simply goes through.
    let answer = post(&p, "/", pattern_run(200 << 10)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.json["body_pattern"], true, "{}", answer.body);
    assert_eq!(overflows(&p, key), 2);
}

#[tokio::test]
async fn a_mirror_gets_a_body_that_fits_and_no_copy_of_one_that_outgrew_the_buffer() {
    let (v1, v2) = (backend("v1").await, backend("v2").await);
    let mut r = route(0, vec![], vec![destination("v1", 1, &[&v1])]);
    r.mirrors = vec![HttpMirror {
        destination: destination("v2", 1, &[&v2]),
        http2: false,
        percentage: 100.0,
    }];
    let options = Options {
        buffer_limit_bytes: 64 << 10,
        ..Options::default()
    };
    let p = start_with(vec![r], options).await;
    let answer = post(&p, "/", pattern_run(50_000)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    // Mirrors are sent aside: wait (bounded) for the copy to arrive.
    for _ in 0..250 {
        if v2.echo.body_bytes() >= 50_000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(v2.echo.requests(), 1, "the mirror got its copy");
    assert_eq!(v2.echo.body_bytes(), 50_000, "with the whole body");

    let answer = post(&p, "/", pattern_run(100_000)).await;
    assert_eq!(answer.status, 200, "the request itself goes through");
    assert_eq!(answer.json["body_bytes"], 100_000, "{}", answer.body);
    assert_eq!(overflows(&p, "default/reviews/http[0]"), 1);
    // A GET after it is mirrored at once; once it arrived, the large
    // request had long been given up.
    assert_eq!(super::get(&client(), p.addr, "/", &[]).await.status, 200);
    for _ in 0..250 {
        if v2.echo.requests() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        v2.echo.requests(),
        2,
        "the GET mirrored, the large POST not"
    );
    assert_eq!(v2.echo.body_bytes(), 50_000);
}

#[tokio::test]
async fn a_client_that_stalls_mid_body_gets_408() {
    let v1 = backend("v1").await;
    let options = Options {
        request_header_timeout: Duration::from_millis(300),
        ..Options::default()
    };
    let p = start_with(
        vec![route(0, vec![], vec![destination("v1", 1, &[&v1])])],
        options,
    )
    .await;
    let mut stream = TcpStream::connect(p.addr).await.unwrap();
    stream
        .write_all(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n0123456789")
        .await
        .unwrap();
    let mut out = vec![0; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut out))
        .await
        .expect("an answer within 10 s")
        .unwrap();
    let answer = String::from_utf8_lossy(&out[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(answer.contains("request body timeout"), "{answer:?}");
}

/// Reads an HTTP/1.1 response head (to the blank line) byte by byte, so
/// nothing after it is taken.
async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let byte = stream.read_u8().await.expect("a response head");
        head.push(byte);
    }
    String::from_utf8_lossy(&head).into_owned()
}

#[tokio::test]
async fn an_upgrade_is_spliced_both_ways_and_counted_once() {
    let v1 = backend("v1").await;
    let p = start(vec![route(0, vec![], vec![destination("v1", 1, &[&v1])])]).await;
    let mut stream = TcpStream::connect(p.addr).await.unwrap();
    stream
        .write_all(
            b"GET /chat HTTP/1.1\r\nhost: x\r\nconnection: Upgrade\r\nupgrade: websocket\r\n\r\n",
        )
        .await
        .unwrap();
    let head = read_head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head:?}");
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("upgrade: websocket"), "{head:?}");
    assert!(lower.contains("connection: upgrade"), "{head:?}");
    // Bytes both ways, more than any buffer on the way holds at once.
    let sent = pattern_run(1 << 20);
    let (mut reader, mut writer) = stream.into_split();
    let writing = tokio::spawn(async move {
        writer.write_all(&sent).await.unwrap();
        writer.shutdown().await.unwrap();
    });
    let mut echoed = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), reader.read_to_end(&mut echoed))
        .await
        .expect("the echo closes after the client did")
        .unwrap();
    writing.await.unwrap();
    assert_eq!(echoed.len(), 1 << 20);
    assert!(
        echoed == pattern_run(1 << 20),
        "the bytes came back in order"
    );
    assert_eq!(v1.echo.requests(), 1);
    // One request, code 101, counted when the connection closed.
    let mut counted = 0;
    for _ in 0..250 {
        counted = p
            .proxy
            .route_stats()
            .values()
            .flat_map(|series| series.values())
            .map(|c| c.requests)
            .sum::<u64>();
        if counted > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(counted, 1, "one request for the whole upgraded connection");
}
