use super::*;

async fn read(bytes: &[u8]) -> Result<Request, FrameError> {
    read_request(bytes).await
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn a_request_is_one_json_line_or_the_input_up_to_its_end() {
    let rt = runtime();
    let apply = Request::Apply {
        files: vec![FileText {
            path: "vs.yaml".into(),
            text: "kind: VirtualService\nspec: {}\n".into(),
        }],
        dry_run: false,
    };
    let line = encode(&apply);
    assert_eq!(
        line.split(|&b| b == b'\n').count() - 1,
        1,
        "newlines inside the texts are escaped: {}",
        String::from_utf8_lossy(&line)
    );
    assert_eq!(rt.block_on(read(&line)).expect("one line"), apply);
    // What follows the first line is not read.
    let mut two = line.clone();
    two.extend_from_slice(b"{\"command\":\"version\"}\n");
    assert_eq!(rt.block_on(read(&two)).expect("first line"), apply);
    // No newline: the end of input ends it.
    assert_eq!(
        rt.block_on(read(b"{\"command\":\"version\"}"))
            .expect("up to the end"),
        Request::Version
    );
    assert_eq!(
        rt.block_on(read(b"{\"command\":\"get\",\"kind\":\"Gateway\"}\n"))
            .expect("get"),
        Request::Get {
            kind: Some("Gateway".into())
        }
    );
    assert_eq!(
        rt.block_on(read(b"{\"command\":\"get\"}"))
            .expect("get all"),
        Request::Get { kind: None }
    );
}

#[test]
fn malformed_requests_are_errors_that_say_what_to_send() {
    let rt = runtime();
    for (input, expected) in [
        (&b""[..], "empty request: send one JSON object on one line"),
        (b"\n", "empty request"),
        (
            b"hello\n",
            "malformed request: expected value at line 1 column 1",
        ),
        (
            b"{\"command\":\"apply\"",
            "malformed request: EOF while parsing",
        ),
        (
            b"{\"command\":\"reboot\"}\n",
            "malformed request: unknown variant `reboot`, expected one of `apply`, `delete`, `get`, `version`",
        ),
        (
            b"{\"command\":\"apply\"}\n",
            "malformed request: missing field `files`",
        ),
        (b"[1,2]\n", "malformed request: "),
    ] {
        let err = rt
            .block_on(read(input))
            .expect_err(&format!("{:?} is refused", String::from_utf8_lossy(input)));
        let message = err.to_string();
        assert!(
            message.starts_with(expected),
            "{:?}: want {expected:?}..., got {message:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn a_request_over_the_limit_is_refused_without_reading_it_all() {
    let rt = runtime();
    // Exactly the limit (the newline not counted) is read.
    let padding = MAX_REQUEST_BYTES - "{\"command\":\"version\"}".len();
    let mut at_limit = b"{\"command\":\"version\"}".to_vec();
    at_limit.extend(std::iter::repeat_n(b' ', padding));
    at_limit.push(b'\n');
    assert_eq!(
        rt.block_on(read(&at_limit)).expect("at the limit"),
        Request::Version
    );
    // One byte more is refused, and the rest is never read.
    let mut over = at_limit.clone();
    over.insert(0, b' ');
    over.extend(std::iter::repeat_n(b'x', 10 << 20));
    let err = rt.block_on(read(&over)).expect_err("over the limit");
    assert!(matches!(err, FrameError::TooLarge), "{err}");
    assert!(
        err.to_string()
            .contains(&format!("more than {MAX_REQUEST_BYTES} bytes")),
        "{err}"
    );
}

#[test]
fn responses_round_trip_through_their_json() {
    for response in [
        Response::Changed {
            changes: vec![Change {
                kind: "VirtualService".into(),
                namespace: "default".into(),
                name: "tcp-echo".into(),
                action: Action::Configured,
            }],
            warnings: vec!["w".into()],
            dry_run: false,
        },
        Response::Refused {
            errors: vec!["a".into(), "b".into()],
        },
        Response::Error {
            message: "no".into(),
        },
        Response::Version {
            version: "0.1.0".into(),
        },
    ] {
        let bytes = encode(&response);
        let back: Response = serde_json::from_slice(&bytes).expect("parses");
        assert_eq!(back, response);
    }
    assert_eq!(
        String::from_utf8(encode(&Response::Refused {
            errors: vec!["x".into()]
        }))
        .expect("UTF-8"),
        "{\"result\":\"refused\",\"errors\":[\"x\"]}\n"
    );
}

/// A temporary directory for a socket, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("ts-admin-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A real server on a real socket, with a loop that answers `version`
/// (and counts the calls that reached it) in place of the agent's.
fn serve_versions(
    rt: &tokio::runtime::Runtime,
    path: &Path,
) -> (AdminServer, Arc<std::sync::atomic::AtomicUsize>) {
    let (server, mut calls) = rt
        .block_on(async { AdminServer::bind(path) })
        .expect("bind");
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = Arc::clone(&count);
    rt.spawn(async move {
        while let Some(call) = calls.recv().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            call.reply(Response::Version {
                version: "test".into(),
            });
        }
    });
    (server, count)
}

/// Sends raw bytes, half-closes, returns the raw answer.
fn raw(path: &Path, bytes: &[u8]) -> String {
    let mut stream = std::os::unix::net::UnixStream::connect(path).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    // The server may answer (and stop reading) before all is written.
    let _ = stream.write_all(bytes);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read the answer");
    answer
}

#[test]
fn the_server_answers_bad_requests_and_keeps_serving() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = TempDir::new("serve");
    let path = dir.0.join("admin.sock");
    let (server, reached) = serve_versions(&rt, &path);
    let mode = std::fs::metadata(&path)
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "root only: {mode:o}");

    let answer = raw(&path, b"{\"command\":\n");
    assert!(
        answer.starts_with("{\"result\":\"error\",\"message\":\"malformed request: "),
        "{answer}"
    );
    let mut huge = b"{\"command\":\"apply\",\"files\":[{\"path\":\"x\",\"text\":\"".to_vec();
    huge.extend(std::iter::repeat_n(b'a', MAX_REQUEST_BYTES + 1000));
    huge.extend_from_slice(b"\"}]}\n");
    let answer = raw(&path, &huge);
    assert!(
        answer.contains(&format!("more than {MAX_REQUEST_BYTES} bytes")),
        "{answer}"
    );
    assert_eq!(
        reached.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "bad requests never reach the agent loop"
    );
    // And it still serves, through the client.
    assert_eq!(
        call(&path, &Request::Version).expect("version"),
        Response::Version {
            version: "test".into()
        }
    );
    assert_eq!(reached.load(std::sync::atomic::Ordering::SeqCst), 1);
    // The client checks the size itself.
    let too_big = Request::Apply {
        files: vec![FileText {
            path: "big.yaml".into(),
            text: "#".repeat(MAX_REQUEST_BYTES),
        }],
        dry_run: false,
    };
    let err = call(&path, &too_big).expect_err("too big");
    assert!(matches!(err, ClientError::TooLarge { .. }), "{err}");

    // A second server on the same path is refused while this one lives.
    let err = rt
        .block_on(async { AdminServer::bind(&path) })
        .err()
        .expect("in use");
    assert!(matches!(err, AdminError::InUse { .. }), "{err}");
    drop(server);
    assert!(!path.exists(), "the socket file goes with the server");
    let err = call(&path, &Request::Version).expect_err("no agent");
    assert!(err.is_not_running(), "{err}");
    assert!(
        err.to_string()
            .starts_with("the agent is not running: no admin socket at "),
        "{err}"
    );
}

#[test]
fn a_stale_socket_is_replaced_and_a_file_is_not() {
    let rt = runtime();
    let dir = TempDir::new("stale");
    let path = dir.0.join("admin.sock");
    // A socket nobody accepts on, as a killed agent leaves it.
    drop(std::os::unix::net::UnixListener::bind(&path).expect("bind"));
    let err = call(&path, &Request::Version).expect_err("nobody listens");
    assert!(
        err.to_string()
            .contains("the agent is not running: nothing accepts connections on the admin socket"),
        "{err}"
    );
    let (server, _) = rt
        .block_on(async { AdminServer::bind(&path) })
        .expect("a stale socket is replaced");
    drop(server);
    std::fs::write(&path, "not a socket").expect("write");
    let err = rt
        .block_on(async { AdminServer::bind(&path) })
        .err()
        .expect("a file is not replaced");
    assert!(matches!(err, AdminError::NotASocket { .. }), "{err}");
    assert_eq!(
        std::fs::read_to_string(&path).expect("kept"),
        "not a socket"
    );
}

/// `get` never carries key material, from the agent or from the store
/// (both build their items with `Item::new`): a Secret's values are
/// redacted, its keys kept; other kinds are shown as they are.
#[test]
fn an_item_of_a_secret_has_its_values_redacted() {
    let secret = serde_json::json!({
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "data": {"tls.crt": "LS0tLS1CRUdJTg==", "tls.key": "LS0tLS1CRUdJTiBQUklWQVRF"},
        "stringData": {"extra": "plain"},
    });
    let item = Item::new(("Secret", "default", "cert"), "apply".into(), None, secret);
    assert_eq!(item.document["data"]["tls.crt"], "<redacted>");
    assert_eq!(item.document["data"]["tls.key"], "<redacted>");
    assert_eq!(item.document["stringData"]["extra"], "<redacted>");
    assert_eq!(item.document["type"], "kubernetes.io/tls");
    let vs = serde_json::json!({"kind": "VirtualService", "data": {"x": "kept"}});
    let item = Item::new(
        ("VirtualService", "default", "vs"),
        "apply".into(),
        None,
        vs.clone(),
    );
    assert_eq!(item.document, vs);
}
