//! The passthrough server on loopback: real sockets, real ClientHellos
//! (rustls), backends that tell who they are and echo.

use std::{collections::BTreeMap, time::Duration};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use traffic_shift_config::model::{Destination, Endpoint, Selection};

use super::*;
use crate::sni::tests::rustls_hello;

/// A backend that answers every connection with `name`, then echoes.
async fn backend(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                stream.write_all(name.as_bytes()).await.ok();
                let mut buf = vec![0u8; 4096];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 || stream.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

fn route(key: &str, sni: &[&str], listener: SocketAddr, weights: &[(u32, SocketAddr)]) -> TcpRoute {
    TcpRoute {
        key: key.into(),
        source: std::path::Path::new("test").into(),
        gateway: Some("default/gw".into()),
        service_host: "tls.local".into(),
        service_port: listener.port(),
        listeners: vec![listener],
        unix: Vec::new(),
        sni: sni.iter().map(|s| (*s).to_owned()).collect(),
        prefixes: Vec::new(),
        selection: Selection::Smooth,
        destinations: weights
            .iter()
            .map(|(weight, addr)| Destination {
                host: "tls.local".into(),
                subset: None,
                weight: *weight,
                endpoint_selection: Selection::Smooth,
                outlier: None,
                endpoints: vec![Endpoint {
                    addr: *addr,
                    labels: BTreeMap::new(),
                }],
            })
            .collect(),
    }
}

/// Sends `hello` in `parts` writes (each its own segment: no delay), and
/// reads the backend's two-byte name and the echo of the hello.
async fn through(gateway: SocketAddr, hello: &[u8], parts: usize) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(gateway).await?;
    stream.set_nodelay(true)?;
    for part in hello.chunks(hello.len().div_ceil(parts)) {
        stream.write_all(part).await?;
        stream.flush().await?;
    }
    let mut name = [0u8; 2];
    stream.read_exact(&mut name).await?;
    let mut echo = vec![0u8; hello.len()];
    stream.read_exact(&mut echo).await?;
    assert!(
        echo == hello,
        "the ClientHello reached the backend byte for byte"
    );
    Ok(String::from_utf8_lossy(&name).into_owned())
}

#[tokio::test]
async fn routes_by_sni_splits_exactly_and_closes_what_no_route_takes() {
    let (v1, v2, other) = (
        backend("v1").await,
        backend("v2").await,
        backend("ot").await,
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let gateway = listener.local_addr().expect("addr");
    let splice = Splice::new(Duration::from_secs(5));
    let passthrough = Passthrough::new(Arc::clone(&splice), Duration::from_millis(300), None);
    let routes = [
        route("tls a", &["a.example.com"], gateway, &[(80, v1), (20, v2)]),
        route("tls wild", &["*.example.org"], gateway, &[(1, other)]),
    ];
    splice.update(&routes);
    passthrough.update(&routes);
    let task = tokio::spawn(Arc::clone(&passthrough).serve(listener));

    let hello = rustls_hello("a.example.com");
    let (mut n1, mut n2) = (0, 0);
    for i in 0..100 {
        // Whole, and split over 2 to 7 segments.
        match through(gateway, &hello, 1 + i % 7)
            .await
            .expect("routed")
            .as_str()
        {
            "v1" => n1 += 1,
            "v2" => n2 += 1,
            other => panic!("answered by {other}"),
        }
    }
    assert_eq!((n1, n2), (80, 20), "80/20 over 100 connections, exactly");
    let wild = through(gateway, &rustls_hello("x.y.example.org"), 3).await;
    assert_eq!(wild.expect("routed").as_str(), "ot", "*.example.org");

    // No route for the SNI, no ClientHello, nothing sent: accepted, then
    // closed (the read sees the end, nothing else).
    for (what, bytes) in [
        ("an SNI no route takes", rustls_hello("b.example.com")),
        ("no TLS", b"GET / HTTP/1.1\r\n\r\n".to_vec()),
        ("nothing within the hello timeout", Vec::new()),
    ] {
        let mut stream = TcpStream::connect(gateway).await.expect("accepted");
        stream.write_all(&bytes).await.expect("write");
        let mut rest = Vec::new();
        let read = stream.read_to_end(&mut rest).await;
        assert!(
            read.is_ok_and(|n| n == 0) || rest.is_empty(),
            "{what}: closed unanswered, got {rest:?}"
        );
    }
    assert_eq!(passthrough.closed_unrouted(), 3);
    task.abort();
}
