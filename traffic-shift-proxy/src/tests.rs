//! The proxy end to end on loopback: real sockets, in-process `http-echo`
//! backends, a real hyper client.

use std::{collections::BTreeMap, fmt::Write as _, net::SocketAddr, sync::Arc, time::Duration};

use http_body_util::{BodyExt, Full};
use hyper::{Request, body::Bytes};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

use super::{Options, Proxy, echo::Echo};
use traffic_shift_config::{
    http::{DelayKind, FaultAbort, FaultDelay},
    model::{
        Destination, Endpoint, Fault, Headers, HttpDestination, HttpListener, HttpMatch,
        HttpMirror, HttpRoute, HttpSelection, Retries, Rewrite, Selection, StringMatch,
        VirtualHost,
    },
};

/// Bodies streamed, the replay buffer, upgrades.
mod stream;

const KEY: &str = "gateway default/gw port 8080";

struct Backend {
    addr: SocketAddr,
    echo: Arc<Echo>,
    task: JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn backend(version: &str) -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let echo = Echo::new("reviews", version);
    let task = tokio::spawn(super::echo::serve(listener, Arc::clone(&echo)));
    Backend { addr, echo, task }
}

fn destination(subset: &str, weight: u32, backends: &[&Backend]) -> Destination {
    Destination {
        host: "reviews.default.svc.cluster.local".into(),
        subset: Some(subset.into()),
        weight,
        endpoint_selection: Selection::Smooth,
        outlier: None,
        endpoints: backends
            .iter()
            .map(|b| Endpoint {
                addr: b.addr,
                labels: BTreeMap::from([
                    ("app".to_owned(), "reviews".to_owned()),
                    ("version".to_owned(), b.echo.version.clone()),
                ]),
            })
            .collect(),
    }
}

fn to(dests: Vec<Destination>) -> Vec<HttpDestination> {
    dests
        .into_iter()
        .map(|destination| HttpDestination {
            destination,
            http2: false,
            endpoint_selection: HttpSelection::Smooth,
            headers: Headers::default(),
            actions: None,
        })
        .collect()
}

fn route(i: usize, matches: Vec<HttpMatch>, dests: Vec<Destination>) -> HttpRoute {
    HttpRoute {
        key: format!("default/reviews/http[{i}]"),
        name: None,
        matches,
        destinations: to(dests),
        selection: HttpSelection::Smooth,
        redirect: None,
        direct_response: None,
        rewrite: None,
        timeout: None,
        retries: Retries::default(),
        fault: None,
        mirrors: Vec::new(),
        headers: Headers::default(),
        cors: None,
    }
}

fn uri(m: StringMatch) -> HttpMatch {
    HttpMatch {
        uri: Some(m),
        ..HttpMatch::default()
    }
}

fn listener(routes: Vec<HttpRoute>) -> HttpListener {
    HttpListener {
        tls: None,
        unix: Vec::new(),
        key: KEY.into(),
        gateway: Some("default/gw".into()),
        port: 8080,
        listeners: vec!["0.0.0.0:8080".parse().unwrap()],
        prefixes: Vec::new(),
        virtual_hosts: vec![VirtualHost {
            virtual_service: "default/reviews".into(),
            source: std::path::Path::new("rules/reviews.yaml").into(),
            domains: vec!["*".into()],
            routes,
        }],
    }
}

struct Running {
    proxy: Arc<Proxy>,
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start_with(routes: Vec<HttpRoute>, options: Options) -> Running {
    let proxy = Proxy::new(options);
    proxy.update(vec![listener(routes)]).unwrap();
    let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let task = tokio::spawn(Arc::clone(&proxy).serve_gateway(socket, KEY.into()));
    Running { proxy, addr, task }
}

async fn start(routes: Vec<HttpRoute>) -> Running {
    start_with(routes, Options::default()).await
}

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

struct Answer {
    status: u16,
    body: String,
    json: serde_json::Value,
}

impl Answer {
    fn version(&self) -> &str {
        self.json["version"].as_str().unwrap_or("(none)")
    }
}

async fn get(
    client: &Client<HttpConnector, Full<Bytes>>,
    proxy: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Answer {
    let mut request = Request::get(format!("http://{proxy}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = client
        .request(request.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap_or_else(|err| panic!("GET {path} through the proxy failed: {err}"));
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8_lossy(&body).into_owned();
    let json = serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
    Answer { status, body, json }
}

#[tokio::test]
async fn uri_prefix_and_regex_matches_pick_their_routes() {
    let (v1, v2, v3) = (
        backend("v1").await,
        backend("v2").await,
        backend("v3").await,
    );
    let p = start(vec![
        route(
            0,
            vec![uri(StringMatch::Prefix("/api/".into()))],
            vec![destination("v1", 1, &[&v1])],
        ),
        route(
            1,
            vec![uri(StringMatch::Regex("/items/[0-9]+".into()))],
            vec![destination("v2", 1, &[&v2])],
        ),
        route(
            2,
            vec![uri(StringMatch::Exact("/exact".into()))],
            vec![destination("v3", 1, &[&v3])],
        ),
    ])
    .await;
    let c = client();
    for (path, want) in [
        ("/api/x", Some("v1")),
        ("/api/", Some("v1")),
        ("/items/42", Some("v2")),
        ("/items/42?x=1", Some("v2")),
        // The regex must match the whole path.
        ("/items/42/more", None),
        ("/x/items/42", None),
        ("/exact", Some("v3")),
        ("/exactly", None),
        ("/ap", None),
    ] {
        let answer = get(&c, p.addr, path, &[]).await;
        if let Some(version) = want {
            assert_eq!(answer.status, 200, "{path}: {}", answer.body);
            assert_eq!(answer.version(), version, "{path} went to the wrong route");
        } else {
            assert_eq!(
                answer.status, 404,
                "{path} must match no route: {}",
                answer.body
            );
            assert!(
                answer.body.contains("no route"),
                "404 body names the cause: {}",
                answer.body
            );
        }
    }
}

#[tokio::test]
async fn header_match_sends_jason_to_v2_and_others_to_v1() {
    let (v1, v2) = (backend("v1").await, backend("v2").await);
    let jason = HttpMatch {
        headers: BTreeMap::from([("end-user".to_owned(), StringMatch::Exact("jason".into()))]),
        ..HttpMatch::default()
    };
    let p = start(vec![
        route(0, vec![jason], vec![destination("v2", 1, &[&v2])]),
        route(1, vec![], vec![destination("v1", 1, &[&v1])]),
    ])
    .await;
    let c = client();
    for _ in 0..10 {
        assert_eq!(
            get(&c, p.addr, "/reviews/0", &[("end-user", "jason")])
                .await
                .version(),
            "v2"
        );
        assert_eq!(
            get(&c, p.addr, "/reviews/0", &[("end-user", "mary")])
                .await
                .version(),
            "v1"
        );
        assert_eq!(get(&c, p.addr, "/reviews/0", &[]).await.version(), "v1");
    }
}

#[tokio::test]
async fn method_query_and_without_headers_matches() {
    let (v1, v2) = (backend("v1").await, backend("v2").await);
    let m = HttpMatch {
        method: Some(StringMatch::Exact("GET".into())),
        query_params: BTreeMap::from([("debug".to_owned(), StringMatch::Exact("1".into()))]),
        without_headers: BTreeMap::from([("x-skip".to_owned(), StringMatch::Any)]),
        ..HttpMatch::default()
    };
    let p = start(vec![
        route(0, vec![m], vec![destination("v2", 1, &[&v2])]),
        route(1, vec![], vec![destination("v1", 1, &[&v1])]),
    ])
    .await;
    let c = client();
    assert_eq!(get(&c, p.addr, "/?debug=1", &[]).await.version(), "v2");
    assert_eq!(get(&c, p.addr, "/?debug=2", &[]).await.version(), "v1");
    assert_eq!(
        get(&c, p.addr, "/?debug=1", &[("x-skip", "yes")])
            .await
            .version(),
        "v1"
    );
}

#[tokio::test]
async fn split_50_50_over_1000_requests_is_500_plus_minus_1() {
    let (v1, v2) = (backend("v1").await, backend("v2").await);
    let p = start(vec![route(
        0,
        vec![],
        vec![destination("v1", 50, &[&v1]), destination("v2", 50, &[&v2])],
    )])
    .await;
    let c = client();
    let mut v1_count = 0;
    for _ in 0..1000 {
        let answer = get(&c, p.addr, "/", &[]).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        v1_count += usize::from(answer.version() == "v1");
    }
    assert!(
        (499..=501).contains(&v1_count),
        "50/50 gave v1 {v1_count} of 1000, want 500 +- 1"
    );
}

#[tokio::test]
async fn split_80_20_gives_exactly_20_of_every_100() {
    let (v1, v2) = (backend("v1").await, backend("v2").await);
    let p = start(vec![route(
        0,
        vec![],
        vec![destination("v1", 80, &[&v1]), destination("v2", 20, &[&v2])],
    )])
    .await;
    let c = client();
    for window in 0..3 {
        let mut v2_count = 0;
        for _ in 0..100 {
            v2_count += usize::from(get(&c, p.addr, "/", &[]).await.version() == "v2");
        }
        assert_eq!(
            v2_count, 20,
            "window {window}: 80/20 gave v2 {v2_count} of 100"
        );
    }
}

#[tokio::test]
async fn rewrite_uri_prefix_and_authority_keep_host_otherwise() {
    let v1 = backend("v1").await;
    let mut rewritten = route(
        0,
        vec![uri(StringMatch::Prefix("/old/".into()))],
        vec![destination("v1", 1, &[&v1])],
    );
    rewritten.rewrite = Some(Rewrite {
        uri: Some("/new/".into()),
        authority: Some("reviews.internal".into()),
        uri_regex: None,
    });
    let plain = route(1, vec![], vec![destination("v1", 1, &[&v1])]);
    let p = start(vec![rewritten, plain]).await;
    let c = client();
    let answer = get(
        &c,
        p.addr,
        "/old/page?x=1",
        &[("host", "shop.example:8080")],
    )
    .await;
    assert_eq!(answer.json["path"], "/new/page?x=1", "{}", answer.body);
    assert_eq!(answer.json["authority"], "reviews.internal");
    let answer = get(&c, p.addr, "/other", &[("host", "shop.example:8080")]).await;
    assert_eq!(answer.json["path"], "/other");
    assert_eq!(
        answer.json["authority"], "shop.example:8080",
        "Host kept as sent"
    );
    assert_eq!(answer.json["headers"]["x-forwarded-proto"], "http");
    assert_eq!(answer.json["headers"]["x-forwarded-for"], "127.0.0.1");
}

#[tokio::test]
async fn header_operations_on_request_and_response() {
    let v1 = backend("v1").await;
    let mut r = route(0, vec![], vec![destination("v1", 1, &[&v1])]);
    r.headers.request.set.insert("x-set".into(), "yes".into());
    r.headers.request.remove.push("x-secret".into());
    r.headers
        .response
        .add
        .insert("x-served-by".into(), "proxy".into());
    let p = start(vec![r]).await;
    let request = Request::get(format!("http://{}/", p.addr))
        .header("x-secret", "s")
        .header("x-set", "no")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = client().request(request).await.unwrap();
    assert_eq!(response.headers()["x-served-by"], "proxy");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["headers"]["x-set"], "yes");
    assert!(json["headers"].get("x-secret").is_none(), "removed: {json}");
}

#[tokio::test]
async fn fault_abort_10_percent_over_1000_requests() {
    let v1 = backend("v1").await;
    let mut r = route(0, vec![], vec![destination("v1", 1, &[&v1])]);
    r.fault = Some(Fault {
        delay: None,
        abort: Some(FaultAbort {
            error: Some(traffic_shift_config::http::AbortError::HttpStatus(418)),
            percentage: Some(10.0),
        }),
    });
    let p = start(vec![r]).await;
    let c = client();
    let mut aborted = 0;
    for _ in 0..1000 {
        let answer = get(&c, p.addr, "/", &[]).await;
        match answer.status {
            418 => {
                aborted += 1;
                assert!(
                    answer.body.contains("fault filter abort"),
                    "{}",
                    answer.body
                );
            }
            200 => {}
            other => panic!("unexpected status {other}: {}", answer.body),
        }
    }
    // Binomial(1000, 0.1): mean 100, sd 9.5; 100 +- 40 is ~4.2 sigma.
    assert!(
        (60..=140).contains(&aborted),
        "10% abort gave {aborted} of 1000, want 100 +- 40"
    );
}

#[tokio::test]
async fn fault_delay_holds_the_request() {
    let v1 = backend("v1").await;
    let mut r = route(0, vec![], vec![destination("v1", 1, &[&v1])]);
    r.fault = Some(Fault {
        delay: Some(FaultDelay {
            delay: DelayKind::Fixed(Duration::from_millis(300)),
            percentage: None,
        }),
        abort: None,
    });
    let p = start(vec![r]).await;
    let started = std::time::Instant::now();
    let answer = get(&client(), p.addr, "/", &[]).await;
    assert_eq!(answer.status, 200);
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "a 300ms delay fault answered after {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn retries_turn_an_upstream_503_into_200() {
    let v1 = backend("v1").await;
    let mut r = route(0, vec![], vec![destination("v1", 1, &[&v1])]);
    // Istio's default policy.
    r.retries = Retries {
        attempts: 2,
        retry_on: [
            "connect-failure",
            "refused-stream",
            "unavailable",
            "cancelled",
            "retriable-status-codes",
            "503",
        ]
        .map(String::from)
        .to_vec(),
        ..Retries::default()
    };
    let p = start(vec![r]).await;
    v1.echo.fail_next(1);
    let answer = get(&client(), p.addr, "/", &[]).await;
    assert_eq!(answer.status, 200, "the 503 was retried: {}", answer.body);
    assert_eq!(v1.echo.requests(), 2, "one failed attempt, one retry");
    // Without retries the 503 goes through.
    let mut r = route(0, vec![], vec![destination("v1", 1, &[&v1])]);
    r.retries = Retries::default();
    p.proxy.update(vec![listener(vec![r])]).unwrap();
    v1.echo.fail_next(1);
    assert_eq!(get(&client(), p.addr, "/", &[]).await.status, 503);
    let outcomes = p.proxy.endpoint_outcomes();
    assert_eq!(outcomes[&v1.addr].consecutive_5xx, 1, "{outcomes:?}");
    assert_eq!(outcomes[&v1.addr].errors_5xx, 2, "{outcomes:?}");
}

#[tokio::test]
async fn a_timeout_gives_504() {
    let v1 = backend("v1").await;
    let mut r = route(0, vec![], vec![destination("v1", 1, &[&v1])]);
    r.timeout = Some(Duration::from_millis(200));
    let p = start(vec![r]).await;
    let answer = get(&client(), p.addr, "/delay/2000", &[]).await;
    assert_eq!(answer.status, 504, "{}", answer.body);
    assert!(
        answer.body.contains("upstream request timeout"),
        "{}",
        answer.body
    );
}

#[tokio::test]
async fn mirror_copies_arrive_at_the_mirror() {
    let (v1, v2) = (backend("v1").await, backend("v2").await);
    let mut r = route(0, vec![], vec![destination("v1", 1, &[&v1])]);
    r.mirrors = vec![HttpMirror {
        destination: destination("v2", 1, &[&v2]),
        http2: false,
        percentage: 100.0,
    }];
    let p = start(vec![r]).await;
    let c = client();
    for _ in 0..20 {
        assert_eq!(
            get(&c, p.addr, "/", &[]).await.version(),
            "v1",
            "the answer is the primary's"
        );
    }
    // Mirrors are sent aside: wait (bounded) for them to arrive.
    for _ in 0..100 {
        if v2.echo.requests() >= 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(v2.echo.requests(), 20, "every request mirrored");
    assert_eq!(v1.echo.requests(), 20);
}

#[tokio::test]
async fn errors_as_envoy_gives_them() {
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let mut refused = destination("v1", 1, &[]);
    refused.endpoints.push(Endpoint {
        addr: dead_addr,
        labels: BTreeMap::new(),
    });
    let p = start(vec![
        route(
            0,
            vec![uri(StringMatch::Prefix("/none".into()))],
            vec![destination("v1", 1, &[])],
        ),
        route(
            1,
            vec![uri(StringMatch::Prefix("/refused".into()))],
            vec![refused],
        ),
    ])
    .await;
    let c = client();
    let answer = get(&c, p.addr, "/none", &[]).await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (503, "no healthy upstream\n")
    );
    let answer = get(&c, p.addr, "/refused", &[]).await;
    assert_eq!(answer.status, 503);
    assert!(
        answer.body.contains("connection failure"),
        "{}",
        answer.body
    );
    let answer = get(&c, p.addr, "/nothing-here", &[]).await;
    assert_eq!(answer.status, 404);
    assert!(answer.body.starts_with("no route"), "{}", answer.body);
}

/// Sends raw bytes, returns what the proxy answered until it closed (or 5s).
async fn raw(proxy: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn bad_input_is_refused_without_a_crash() {
    let v1 = backend("v1").await;
    let p = start(vec![route(0, vec![], vec![destination("v1", 1, &[&v1])])]).await;
    let answer = raw(p.addr, b"NOT HTTP AT ALL\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 400"), "malformed: {answer:?}");
    let big = format!(
        "GET / HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "a".repeat(100 << 10)
    );
    let answer = raw(p.addr, big.as_bytes()).await;
    assert!(
        answer.starts_with("HTTP/1.1 431"),
        "oversized headers: {answer:?}"
    );
    let many = (0..200).fold(String::new(), |mut all, i| {
        let _ = write!(all, "x-h{i}: v\r\n");
        all
    });
    let answer = raw(
        p.addr,
        format!("GET / HTTP/1.1\r\nhost: x\r\n{many}\r\n").as_bytes(),
    )
    .await;
    assert!(
        answer.starts_with("HTTP/1.1 431"),
        "too many headers: {answer:?}"
    );
    // Still serving.
    assert_eq!(get(&client(), p.addr, "/", &[]).await.status, 200);
}

#[tokio::test]
async fn an_idle_client_is_timed_out() {
    let options = Options {
        request_header_timeout: Duration::from_millis(300),
        ..Options::default()
    };
    let p = start_with(vec![], options).await;
    for opening in [&b""[..], b"GET / HTTP/1.1\r\n"] {
        let mut stream = TcpStream::connect(p.addr).await.unwrap();
        stream.write_all(opening).await.unwrap();
        let mut buf = Vec::new();
        let read =
            tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf)).await;
        assert!(
            read.is_ok(),
            "a client that sent {opening:?} and nothing more was not closed"
        );
    }
}

#[tokio::test]
async fn a_keep_alive_client_reuses_its_connection_and_h2c_works() {
    let v1 = backend("v1").await;
    let p = start(vec![route(0, vec![], vec![destination("v1", 1, &[&v1])])]).await;
    let stream = TcpStream::connect(p.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    for i in 0..5 {
        sender.ready().await.unwrap();
        let request = Request::get(format!("/{i}"))
            .header("host", "reviews")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = sender
            .send_request(request)
            .await
            .unwrap_or_else(|err| panic!("request {i} on one connection: {err}"));
        assert_eq!(response.status(), 200);
        let _ = response.into_body().collect().await;
    }
    let stream = TcpStream::connect(p.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let request = Request::get(format!("http://{}/h2", p.addr))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.expect("h2c request");
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["path"], "/h2");
    assert_eq!(json["version"], "v1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_while_100_keep_alive_clients_run_fails_no_request() {
    let (v1, v2) = (backend("v1").await, backend("v2").await);
    let p = start(vec![route(0, vec![], vec![destination("v1", 1, &[&v1])])]).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..100 {
        let (addr, stop) = (p.addr, Arc::clone(&stop));
        clients.push(tokio::spawn(async move {
            let c = client();
            let mut seen = BTreeMap::<String, usize>::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let answer = get(&c, addr, "/", &[]).await;
                assert_eq!(
                    answer.status, 200,
                    "a request failed during updates: {}",
                    answer.body
                );
                *seen.entry(answer.version().to_owned()).or_default() += 1;
            }
            seen
        }));
    }
    for i in 0..20 {
        tokio::time::sleep(Duration::from_millis(25)).await;
        let dest = if i % 2 == 0 {
            destination("v2", 1, &[&v2])
        } else {
            destination("v1", 1, &[&v1])
        };
        p.proxy
            .update(vec![listener(vec![route(0, vec![], vec![dest])])])
            .unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = BTreeMap::<String, usize>::new();
    for client in clients {
        for (version, n) in client.await.expect("a client saw a failed request") {
            *total.entry(version).or_default() += n;
        }
    }
    assert!(
        total.get("v1").is_some_and(|&n| n > 0) && total.get("v2").is_some_and(|&n| n > 0),
        "both configs served: {total:?}"
    );
}

#[tokio::test]
async fn metrics_count_requests_per_version_and_code() {
    let (v1, v2) = (backend("v1").await, backend("v2").await);
    let p = start(vec![
        route(
            0,
            vec![uri(StringMatch::Prefix("/missing".into()))],
            vec![destination("v1", 1, &[])],
        ),
        route(
            1,
            vec![],
            vec![destination("v1", 1, &[&v1]), destination("v2", 1, &[&v2])],
        ),
    ])
    .await;
    let c = client();
    for _ in 0..10 {
        get(&c, p.addr, "/", &[]).await;
    }
    get(&c, p.addr, "/status/500", &[]).await;
    get(&c, p.addr, "/missing", &[]).await;
    let render = || {
        let mut registry = prometheus_client::registry::Registry::default();
        p.proxy.metrics().register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text
    };
    // A proxied request is counted once its body has gone out, which can
    // be just after the client read it: wait (bounded) for all 12.
    let mut text = render();
    for _ in 0..100 {
        if text.contains("istio_request_duration_milliseconds_count") {
            let total: u64 = text
                .lines()
                .filter(|l| l.starts_with("istio_request_duration_milliseconds_count{"))
                .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
                .sum();
            if total == 12 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        text = render();
    }
    let count = |version: &str, code: &str, flags: &str| -> u64 {
        text.lines()
            .filter(|l| {
                l.starts_with("istio_requests_total{")
                    && l.contains(&format!("destination_version=\"{version}\""))
                    && l.contains(&format!("response_code=\"{code}\""))
                    && l.contains(&format!("response_flags=\"{flags}\""))
                    && l.contains("request_protocol=\"http\"")
                    && l.contains("destination_service=\"reviews.default.svc.cluster.local\"")
            })
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum()
    };
    // 11 requests 50/50 from a fresh cursor: v1 gets 6 (one of them the 500), v2 5.
    assert_eq!(
        count("v1", "200", "-") + count("v1", "500", "-"),
        6,
        "{text}"
    );
    assert_eq!(
        count("v2", "200", "-") + count("v2", "500", "-"),
        5,
        "{text}"
    );
    assert_eq!(
        count("v1", "500", "-") + count("v2", "500", "-"),
        1,
        "{text}"
    );
    assert_eq!(count("unknown", "503", "UH"), 1, "{text}");
    assert!(
        text.contains("istio_request_duration_milliseconds_bucket{"),
        "{text}"
    );
    assert!(text.contains("le=\"0.5\""), "Istio's buckets: {text}");
}

#[tokio::test]
async fn redirect_and_direct_response_as_istio() {
    let mut redirect = route(0, vec![uri(StringMatch::Prefix("/old/".into()))], vec![]);
    redirect.redirect = Some(traffic_shift_config::model::HttpRedirect {
        uri: None,
        prefix_rewrite: Some("/new/".into()),
        uri_regex: None,
        authority: Some("shop.example".into()),
        port: None,
        scheme: None,
        redirect_code: 308,
    });
    let mut direct = route(1, vec![uri(StringMatch::Exact("/health".into()))], vec![]);
    direct.direct_response = Some(traffic_shift_config::model::DirectResponse {
        status: 418,
        body: Some(traffic_shift_config::http::DirectBody::String(
            "teapot\n".into(),
        )),
    });
    let p = start(vec![redirect, direct]).await;
    let request = Request::get(format!("http://{}/old/page?q=1", p.addr))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = client().request(request).await.unwrap();
    assert_eq!(response.status(), 308);
    assert_eq!(
        response.headers()["location"],
        "http://shop.example/new/page?q=1"
    );
    let answer = get(&client(), p.addr, "/health", &[]).await;
    assert_eq!((answer.status, answer.body.as_str()), (418, "teapot\n"));
}

#[tokio::test]
async fn virtual_host_by_authority_and_h2_upstream() {
    let (v1, v2) = (backend("v1").await, backend("v2").await);
    let mut h2 = route(1, vec![], vec![destination("v2", 1, &[&v2])]);
    h2.destinations[0].http2 = true;
    let mut l = listener(vec![route(0, vec![], vec![destination("v1", 1, &[&v1])])]);
    l.virtual_hosts[0].domains = vec!["reviews.example".into()];
    l.virtual_hosts.push(VirtualHost {
        virtual_service: "default/wild".into(),
        source: std::path::Path::new("rules/wild.yaml").into(),
        domains: vec!["*.example".into()],
        routes: vec![h2],
    });
    let p = start(vec![]).await;
    p.proxy.update(vec![l]).unwrap();
    let c = client();
    let answer = get(&c, p.addr, "/", &[("host", "Reviews.Example:8080")]).await;
    assert_eq!(
        answer.version(),
        "v1",
        "exact domain, case and port ignored"
    );
    let answer = get(&c, p.addr, "/", &[("host", "ratings.example")]).await;
    assert_eq!(answer.version(), "v2", "wildcard domain: {}", answer.body);
    assert_eq!(answer.json["protocol"], "HTTP/2.0", "h2c upstream");
    let answer = get(&c, p.addr, "/", &[("host", "other.org")]).await;
    assert_eq!(answer.status, 404, "no virtual host: {}", answer.body);
}

#[tokio::test]
async fn consistent_hash_by_header_keeps_a_user_on_one_version() {
    let (v1, v2) = (backend("v1").await, backend("v2").await);
    let mut r = route(
        0,
        vec![],
        vec![destination("v1", 50, &[&v1]), destination("v2", 50, &[&v2])],
    );
    r.selection = HttpSelection::Header("x-user".into());
    let p = start(vec![r]).await;
    let c = client();
    let mut per_version = BTreeMap::<String, usize>::new();
    for user in 0..200 {
        let user = format!("user-{user}");
        let first = get(&c, p.addr, "/", &[("x-user", &user)]).await;
        for _ in 0..3 {
            let again = get(&c, p.addr, "/", &[("x-user", &user)]).await;
            assert_eq!(again.version(), first.version(), "{user} moved");
        }
        *per_version.entry(first.version().to_owned()).or_default() += 1;
    }
    // Binomial(200, 0.5): sd 7.1; 100 +- 35 is ~5 sigma.
    let v1_users = per_version.get("v1").copied().unwrap_or(0);
    assert!(
        (65..=135).contains(&v1_users),
        "50/50 by user gave v1 {v1_users} of 200 users"
    );
}

#[tokio::test]
async fn mesh_connections_are_served_by_their_original_destination() {
    let (v1, v2) = (backend("v1").await, backend("v2").await);
    let service: SocketAddr = "10.96.0.10:9080".parse().unwrap();
    let other: SocketAddr = "10.96.0.11:9080".parse().unwrap();
    let mesh = |key: &str, addr: SocketAddr, dest: Destination| HttpListener {
        tls: None,
        unix: Vec::new(),
        key: key.into(),
        gateway: None,
        port: 9080,
        listeners: vec![addr],
        prefixes: Vec::new(),
        virtual_hosts: vec![VirtualHost {
            virtual_service: "default/reviews".into(),
            source: std::path::Path::new("rules/reviews.yaml").into(),
            domains: vec!["reviews".into()],
            routes: vec![route(0, vec![], vec![dest])],
        }],
    };
    let proxy = Proxy::new(Options::default());
    proxy
        .update(vec![
            mesh("mesh reviews:9080", service, destination("v1", 1, &[&v1])),
            mesh("mesh other:9080", other, destination("v2", 1, &[&v2])),
        ])
        .unwrap();
    let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    // Stands in for the kernel's record, by client port mod 3 (Linux gives
    // connect() even ports): 1 connected to `service`, 2 to `other`, 0 to
    // an address the proxy does not know.
    let original_dst: super::OriginalDst =
        Arc::new(move |peer: SocketAddr, _local| match peer.port() {
            p if p % 3 == 0 => None,
            p if p % 3 == 1 => Some(service),
            _ => Some(other),
        });
    let task = tokio::spawn(Arc::clone(&proxy).serve_mesh(socket, original_dst));
    let mut seen = BTreeMap::<(bool, String), usize>::new();
    for _ in 0..40 {
        let stream = TcpStream::connect(addr).await.unwrap();
        let port = stream.local_addr().unwrap().port();
        let io = TokioIo::new(stream);
        let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(io).await else {
            continue;
        };
        tokio::spawn(conn);
        // Any authority: the address chose the service.
        let request = Request::get("/")
            .header("host", "anything")
            .body(Full::new(Bytes::new()))
            .unwrap();
        if let Ok(response) = sender.send_request(request).await {
            assert_ne!(
                port % 3,
                0,
                "a connection with no original destination was served"
            );
            let body = response.into_body().collect().await.unwrap().to_bytes();
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let version = json["version"].as_str().unwrap().to_owned();
            let want = if port % 3 == 1 { "v1" } else { "v2" };
            assert_eq!(version, want, "client port {port}");
            *seen.entry((true, version)).or_default() += 1;
        } else {
            assert_eq!(port % 3, 0, "client port {port} was refused");
            *seen.entry((false, String::new())).or_default() += 1;
        }
    }
    task.abort();
    assert_eq!(seen.len(), 3, "served v1, v2, and refused: {seen:?}");
}

#[tokio::test]
async fn ignore_uri_case_and_regex_rewrite() {
    let v1 = backend("v1").await;
    let mut r = route(
        0,
        vec![HttpMatch {
            uri: Some(StringMatch::Prefix("/Service/".into())),
            ignore_uri_case: true,
            ..HttpMatch::default()
        }],
        vec![destination("v1", 1, &[&v1])],
    );
    r.rewrite = Some(Rewrite {
        uri: None,
        authority: None,
        uri_regex: Some(("^/service/([^/]+)(/.*)$".into(), "\\2/instance/\\1".into())),
    });
    let p = start(vec![r]).await;
    let answer = get(&client(), p.addr, "/SERVICE/x", &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let answer = get(&client(), p.addr, "/service/foo/v1/api?a=b", &[]).await;
    assert_eq!(answer.json["path"], "/v1/api/instance/foo?a=b");
}

#[tokio::test]
async fn slow_clients_are_bounded_in_number_and_time() {
    let v1 = backend("v1").await;
    let options = Options {
        request_header_timeout: Duration::from_millis(500),
        max_connections: 20,
        ..Options::default()
    };
    let p = start_with(
        vec![route(0, vec![], vec![destination("v1", 1, &[&v1])])],
        options,
    )
    .await;
    // 20 slow clients, each holding a partial request head.
    let mut slow = Vec::new();
    for _ in 0..20 {
        let mut stream = TcpStream::connect(p.addr).await.unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n")
            .await
            .unwrap();
        slow.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // One more is closed at once, unanswered.
    let answer = raw(p.addr, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert!(answer.is_empty(), "over the connection bound: {answer:?}");
    // The slow ones are timed out, which frees their places.
    for mut stream in slow {
        let mut buf = Vec::new();
        let read =
            tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "a slow client was not timed out");
    }
    assert_eq!(get(&client(), p.addr, "/", &[]).await.status, 200);
}

#[tokio::test]
async fn endpoint_selection_by_header_and_round_robin() {
    let (a, b) = (backend("a").await, backend("b").await);
    let mut hashed = route(
        0,
        vec![uri(StringMatch::Prefix("/hashed".into()))],
        vec![destination("v1", 1, &[&a, &b])],
    );
    hashed.destinations[0].endpoint_selection = HttpSelection::Header("x-user".into());
    let round_robin = route(1, vec![], vec![destination("v1", 1, &[&a, &b])]);
    let p = start(vec![hashed, round_robin]).await;
    let c = client();
    let mut users_on_a = 0;
    for user in 0..50 {
        let user = format!("user-{user}");
        let first = get(&c, p.addr, "/hashed", &[("x-user", &user)]).await;
        for _ in 0..3 {
            let again = get(&c, p.addr, "/hashed", &[("x-user", &user)]).await;
            assert_eq!(again.version(), first.version(), "{user} moved endpoint");
        }
        users_on_a += usize::from(first.version() == "a");
    }
    assert!(
        (1..50).contains(&users_on_a),
        "users spread over both: {users_on_a} of 50 on a"
    );
    // Round robin: strictly alternating.
    let versions: Vec<String> = sequential_versions(&c, p.addr, 10).await;
    for pair in versions.windows(2) {
        assert_ne!(pair[0], pair[1], "round robin alternates: {versions:?}");
    }
}

async fn sequential_versions(
    c: &Client<HttpConnector, Full<Bytes>>,
    proxy: SocketAddr,
    n: usize,
) -> Vec<String> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(get(c, proxy, "/", &[]).await.version().to_owned());
    }
    out
}

#[tokio::test]
async fn route_stats_count_per_destination_and_endpoint_across_updates() {
    let (v1, v3) = (backend("v1").await, backend("v3").await);
    let routes = |w1: u32, w3: u32| {
        vec![route(
            0,
            vec![],
            vec![destination("v1", w1, &[&v1]), destination("v3", w3, &[&v3])],
        )]
    };
    let p = start(routes(50, 50)).await;
    let c = client();
    for _ in 0..10 {
        get(&c, p.addr, "/", &[]).await;
    }
    get(&c, p.addr, "/status/503", &[]).await;
    get(&c, p.addr, "/status/404", &[]).await;
    // A rules change that reweighs the destinations keeps their counts.
    p.proxy.update(vec![listener(routes(20, 80))]).unwrap();
    let key = (KEY.to_owned(), "default/reviews/http[0]".to_owned());
    let host = "reviews.default.svc.cluster.local".to_owned();
    let of = |stats: &super::RouteStats, subset: &str, addr: SocketAddr| {
        stats
            .get(&key)
            .and_then(|r| r.get(&(Some((host.clone(), Some(subset.to_owned()))), Some(addr))))
            .copied()
            .unwrap_or_default()
    };
    // Counted when the body has gone out: wait (bounded) for all 12.
    let mut stats = p.proxy.route_stats();
    for _ in 0..100 {
        if of(&stats, "v1", v1.addr).requests + of(&stats, "v3", v3.addr).requests == 12 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        stats = p.proxy.route_stats();
    }
    let (s1, s3) = (of(&stats, "v1", v1.addr), of(&stats, "v3", v3.addr));
    assert_eq!((s1.requests, s3.requests), (6, 6), "{stats:?}");
    assert_eq!(s1.errors_5xx + s3.errors_5xx, 1, "{stats:?}");
    assert_eq!(s1.errors_4xx + s3.errors_4xx, 1, "{stats:?}");
    assert_eq!(s1.buckets.iter().sum::<u64>(), 6, "{stats:?}");
    assert!(s1.quantile(0.5).is_some_and(|ms| ms > 0.0), "{stats:?}");
    // A route that leaves the rules loses its counts.
    p.proxy
        .update(vec![HttpListener {
            tls: None,
            unix: Vec::new(),
            key: "gateway default/other port 8081".into(),
            ..listener(routes(1, 1))
        }])
        .unwrap();
    assert!(!p.proxy.route_stats().contains_key(&key));
}

#[test]
fn quantiles_interpolate_within_buckets_as_prometheus_does() {
    use super::{BUCKETS, Counts};
    let mut counts = Counts::default();
    assert_eq!(counts.quantile(0.5), None, "no requests: no latency");
    // 10 requests in (1, 5] ms, 10 in (5, 10] ms.
    counts.buckets[2] = 10;
    counts.buckets[3] = 10;
    counts.requests = 20;
    assert_eq!(counts.quantile(0.5), Some(5.0));
    assert_eq!(counts.quantile(0.25), Some(3.0));
    assert_eq!(counts.quantile(0.99), Some(9.9));
    // In the first bucket: from 0.
    let mut first = Counts::default();
    first.buckets[0] = 4;
    assert_eq!(first.quantile(0.5), Some(0.25));
    // In +Inf: the last finite bound.
    let mut slow = Counts::default();
    slow.buckets[BUCKETS - 1] = 1;
    assert_eq!(slow.quantile(0.99), Some(3_600_000.0));
    // Differences: a counter that went down counts from zero.
    let later = Counts {
        requests: 25,
        ..counts
    };
    assert_eq!(later.since(&counts).requests, 5);
    assert_eq!(counts.since(&later).requests, 20);
}
