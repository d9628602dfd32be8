//! End-to-end: a Gateway with a TLS passthrough listener (`protocol: TLS`,
//! `tls.mode: Passthrough`) and a `TLSRoute` with two backends, on the real
//! agent in a network namespace. The client and the backends speak real
//! TLS (rustls, ECDSA certificates made by openssl for the test): the agent
//! never terminates it, it only reads the SNI of the ClientHello, picks the
//! backend with the route's weights and splices the bytes. Which backend
//! answered is told by the backend after the handshake (`v1` or `v2`), and
//! the handshake itself proves that the ClientHello reached the backend
//! untouched and that the server's answer came back.

use std::net::SocketAddr;

use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{TcpListener, TcpStream},
    runtime::Runtime,
};
use tokio_rustls::{TlsAcceptor, TlsConnector, client, rustls::pki_types::ServerName};
use traffic_shift_tests::{
    Scenario, metric,
    tls::{Certs, run, runtime_in},
    try_metric,
};

/// The gateway listener, on every local address of the namespace.
const GATEWAY: &str = "127.0.0.1:8443";
/// The conformance case's listener (its port 443).
const CONFORMANCE_GATEWAY: &str = "127.0.0.1:8444";

/// A TLS backend on `addr`: after the handshake it says `name`, then
/// echoes every byte until the client closes.
fn tls_backend(rt: &Runtime, addr: &str, name: &'static str, acceptor: TlsAcceptor) {
    let addr: SocketAddr = addr.parse().expect("addr");
    let listener = run(
        rt,
        async move { TcpListener::bind(addr).await.expect("bind") },
    );
    rt.spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let (mut reader, mut writer) = tokio::io::split(tls);
                if writer
                    .write_all(format!("{name}\n").as_bytes())
                    .await
                    .is_err()
                {
                    return;
                }
                let _ = tokio::io::copy(&mut reader, &mut writer).await;
                let _ = writer.shutdown().await;
            });
        }
    });
}

/// Two Services on the TLS backends, a Gateway with a TLS passthrough
/// listener for `*.example.com` on 8443, and a TLSRoute for
/// `tls.example.com` splitting `v1`/`v2`.
fn rules(v1: u32, v2: u32) -> String {
    format!(
        "\
apiVersion: v1
kind: Service
metadata: {{name: tls-v1}}
spec: {{ports: [{{name: tls, port: 443}}], selector: {{app: tls-echo, version: v1}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: tls-v2}}
spec: {{ports: [{{name: tls, port: 443}}], selector: {{app: tls-echo, version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: tls-v1}}
spec: {{address: 127.0.0.1, ports: {{tls: 19441}}, labels: {{app: tls-echo, version: v1}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: tls-v2}}
spec: {{address: 127.0.0.1, ports: {{tls: 19442}}, labels: {{app: tls-echo, version: v2}}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: tls-gateway}}
spec:
  gatewayClassName: istio
  listeners:
  - name: tls
    port: 8443
    protocol: TLS
    hostname: '*.example.com'
    tls: {{mode: Passthrough}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {{name: tls-echo}}
spec:
  parentRefs: [{{name: tls-gateway, sectionName: tls}}]
  hostnames: [tls.example.com]
  rules:
  - backendRefs:
    - {{name: tls-v1, port: 443, weight: {v1}}}
    - {{name: tls-v2, port: 443, weight: {v2}}}
"
    )
}

/// A TLS connection through `gateway` for `sni`, the handshake done: who
/// answered, and the connection.
async fn connect(
    connector: &TlsConnector,
    gateway: &str,
    sni: &str,
) -> std::io::Result<(String, BufReader<client::TlsStream<TcpStream>>)> {
    let tcp = TcpStream::connect(gateway).await?;
    let name = ServerName::try_from(sni.to_owned()).expect("a DNS name");
    let tls = connector.connect(name, tcp).await?;
    let mut reader = BufReader::new(tls);
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    Ok((line.trim().to_owned(), reader))
}

/// `n` connections for `sni`: how many each backend answered.
async fn burst(connector: &TlsConnector, sni: &str, n: usize) -> (usize, usize) {
    let (mut v1, mut v2) = (0, 0);
    for i in 0..n {
        let (who, _) = connect(connector, GATEWAY, sni)
            .await
            .unwrap_or_else(|e| panic!("connection {i} for {sni}: {e}"));
        match who.as_str() {
            "v1" => v1 += 1,
            "v2" => v2 += 1,
            other => panic!("connection {i}: answered by {other:?}"),
        }
    }
    (v1, v2)
}

/// A ClientHello whose SNI no route takes is accepted (the TCP connect
/// succeeds) and then closed: the handshake fails on an end of stream.
async fn refused(connector: &TlsConnector, gateway: &str, sni: &str) -> String {
    let tcp = TcpStream::connect(gateway)
        .await
        .unwrap_or_else(|e| panic!("{sni}: the gateway accepts every connection: {e}"));
    let name = ServerName::try_from(sni.to_owned()).expect("a DNS name");
    match connector.connect(name, tcp).await {
        Ok(_) => panic!("{sni}: a handshake through the gateway, with no route for it"),
        Err(err) => err.to_string(),
    }
}

/// Bytes both ways through one spliced connection: `size` bytes written
/// while the echo is read back, compared byte for byte.
async fn echo_large(connector: &TlsConnector, size: usize) -> String {
    let (who, conn) = connect(connector, GATEWAY, "tls.example.com")
        .await
        .expect("a connection for the large transfer");
    let (mut reader, mut writer) = tokio::io::split(conn);
    let data: Vec<u8> = (0..size)
        .map(|i| u8::try_from((i * 7 + i / 251) % 256).expect("below 256"))
        .collect();
    let sent = data.clone();
    let write = tokio::spawn(async move {
        writer
            .write_all(&sent)
            .await
            .expect("write the large transfer");
        writer.flush().await.expect("flush");
        writer
    });
    let mut back = vec![0u8; size];
    reader
        .read_exact(&mut back)
        .await
        .expect("read the echo of the large transfer");
    let _writer = write.await.expect("the writer");
    assert!(
        back == data,
        "the {size} bytes came back unchanged through {who}"
    );
    who
}

#[test]
fn a_tls_route_splits_by_sni_exactly_keeps_held_connections_and_splices_both_ways() {
    let certs = Certs::new("tls-route");
    let mut s = Scenario::tcp_echo_backends("tls-route", &[]);
    let rt = runtime_in(&s.netns);
    tls_backend(&rt, "127.0.0.1:19441", "v1", certs.acceptor());
    tls_backend(&rt, "127.0.0.1:19442", "v2", certs.acceptor());
    let connector = certs.connector();

    let event = s.agent.write_rules("tls.yaml", rules(80, 20));
    assert_eq!(event["result"], "applied", "{event}");
    assert!(
        s.agent
            .log_text()
            .contains("TLS passthrough: spliced in the kernel (sk_skb socket map)"),
        "the kernel splice is loaded (else the bytes would be copied in user space)"
    );

    let c = connector.clone();
    let (v1, v2) = run(&rt, async move { burst(&c, "tls.example.com", 1000).await });
    println!("TLSRoute 80/20 over 1000 TLS connections: v1={v1} v2={v2}");
    assert_eq!((v1, v2), (800, 200), "80/20 over 1000 connections, exactly");

    // Istio's TCP metrics, as for a TCP route: 800/200 opened and closed.
    let gateway = ("source_workload", "tls-gateway");
    let page = s
        .agent
        .wait_metrics("the TLS route's 1000 closed connections", |page| {
            try_metric(page, "istio_tcp_connections_closed_total", &[gateway]) == Some(1000)
        });
    for (version, n) in [("v1", 800), ("v2", 200)] {
        let labels = [gateway, ("destination_version", version)];
        assert_eq!(
            metric(&page, "istio_tcp_connections_opened_total", &labels),
            n,
            "{version} opened"
        );
        assert!(
            metric(&page, "istio_tcp_sent_bytes_total", &labels) > 0
                && metric(&page, "istio_tcp_received_bytes_total", &labels) > 0,
            "{version}: bytes both ways counted"
        );
    }

    // SNI no route takes (the listener's hostname, not the route's), no
    // SNI a route takes, bytes that are no ClientHello: accepted, closed.
    let c = connector.clone();
    let errors = run(&rt, async move {
        vec![
            refused(&c, GATEWAY, "other.example.com").await,
            refused(&c, GATEWAY, "tls.example.org").await,
        ]
    });
    println!("no route for the SNI: {errors:?}");
    let not_tls = run(&rt, async {
        let mut tcp = TcpStream::connect(GATEWAY).await.expect("accepted");
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: tls.example.com\r\n\r\n")
            .await
            .expect("write");
        let mut rest = Vec::new();
        tcp.read_to_end(&mut rest).await.map(|_| rest)
    });
    assert!(
        not_tls.as_ref().is_ok_and(Vec::is_empty) || not_tls.is_err(),
        "a request that is no TLS is closed unanswered: {not_tls:?}"
    );

    // A held connection keeps its backend across a shift to all-v2.
    let c = connector.clone();
    let (who, mut held) = run(&rt, async move {
        connect(&c, GATEWAY, "tls.example.com").await.expect("held")
    });
    assert_eq!(who, "v1", "the 1001st of 80/20 is v1's");
    let event = s.agent.write_rules("tls.yaml", rules(0, 100));
    assert_eq!(event["result"], "applied", "{event}");
    let c = connector.clone();
    let (v1, v2) = run(&rt, async move { burst(&c, "tls.example.com", 20).await });
    assert_eq!((v1, v2), (0, 20), "new connections follow the shift");
    let echoed = run(&rt, async move {
        held.get_mut()
            .write_all(b"still here\n")
            .await
            .expect("write");
        let mut line = String::new();
        held.read_line(&mut line).await.expect("read");
        line
    });
    assert_eq!(
        echoed, "still here\n",
        "the held connection still reaches v1"
    );

    // 16 MiB each way through one spliced connection.
    let c = connector.clone();
    let who = run(&rt, async move { echo_large(&c, 16 << 20).await });
    assert_eq!(who, "v2");
    let log = s.agent.log_text();
    assert!(
        !log.contains("cannot splice in the kernel"),
        "every connection was spliced in the kernel:\n{log}"
    );
    drop(rt);
}

/// Two TLSRoutes with one SNI name on the listener: the older takes it
/// (the spec's tie-break: `creationTimestamp`, then `namespace/name`), the
/// other routes none of it and is reported `Accepted` `False`
/// `Conflicted`. A route of the rules directory without a creation time
/// is as old as when the agent first read it: `a-tls-echo`, written after
/// `tls-echo`, loses though its name sorts first, and still after a
/// restart; given an older `creationTimestamp`, it wins.
#[test]
fn the_oldest_tls_route_takes_an_sni_name() {
    let certs = Certs::new("tls-oldest");
    let mut s = Scenario::tcp_echo_backends("tls-oldest", &[]);
    let rt = runtime_in(&s.netns);
    tls_backend(&rt, "127.0.0.1:19441", "v1", certs.acceptor());
    tls_backend(&rt, "127.0.0.1:19442", "v2", certs.acceptor());
    let connector = certs.connector();
    let event = s.agent.write_rules("tls.yaml", rules(100, 0));
    assert_eq!(event["result"], "applied", "{event}");
    let younger = "\
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: a-tls-echo}
spec:
  parentRefs: [{name: tls-gateway, sectionName: tls}]
  hostnames: [tls.example.com]
  rules: [{backendRefs: [{name: tls-v2, port: 443}]}]
";
    let accepted = |s: &Scenario, name: &str| {
        let route = s.agent.get_json("tlsroute", "default", name);
        route["status"]["parents"][0]["conditions"][0].clone()
    };
    for (text, who, (v1, v2), loser, winner) in [
        (
            younger.to_owned(),
            "first seen",
            (100, 0),
            "a-tls-echo",
            "tls-echo",
        ),
        (
            younger.replace(
                "{name: a-tls-echo}",
                "{name: a-tls-echo, creationTimestamp: '2020-01-01T00:00:00Z'}",
            ),
            "created in 2020",
            (0, 100),
            "tls-echo",
            "a-tls-echo",
        ),
    ] {
        let event = s.agent.write_rules("tls-2.yaml", &text);
        assert_eq!(event["result"], "applied", "{who}: {event}");
        let c = connector.clone();
        let got = run(&rt, async move { burst(&c, "tls.example.com", 100).await });
        assert_eq!(got, (v1, v2), "{who}: {winner} takes tls.example.com");
        let condition = accepted(&s, loser);
        println!("{who}: {loser}: {condition}");
        assert_eq!(
            (&condition["status"], &condition["reason"]),
            (&"False".into(), &"Conflicted".into()),
            "{who}: {condition}"
        );
        assert!(
            condition["message"]
                .as_str()
                .unwrap_or_default()
                .starts_with(&format!(
                    "SNI tls.example.com on Gateway default/tls-gateway port 8443 is taken by the \
                 older TLSRoute default/{winner} ("
                )),
            "{who}: {condition}"
        );
        assert_eq!(accepted(&s, winner)["status"], "True", "{who}");
        if loser == "a-tls-echo" {
            // Its first-seen time is kept: a restart, which reads both
            // files at once, does not make it the older by name.
            s.agent.restart(&[]);
            // The agent started on an empty directory, so `restart` waits
            // for no file: wait for both, read at once.
            let files: Vec<Value> = s.agent.wait_events(2);
            assert!(files.iter().all(|e| e["result"] == "applied"), "{files:?}");
            let c = connector.clone();
            let got = run(&rt, async move { burst(&c, "tls.example.com", 100).await });
            assert_eq!(got, (v1, v2), "{who}: after a restart, {winner} still");
        }
    }
    drop(rt);
}

/// The conformance cases' manifests on one node; `BACKEND` is the
/// route's backendRef.
const CONFORMANCE: &str = "\
apiVersion: v1
kind: Service
metadata: {name: tls-backend, namespace: gateway-conformance-infra}
spec: {ports: [{name: tls, port: 443}], selector: {app: tls-backend}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: tls-backend, namespace: gateway-conformance-infra}
spec: {address: 127.0.0.1, ports: {tls: 19443}, labels: {app: tls-backend}}
---
apiVersion: v1
kind: Service
metadata: {name: tls-backend, namespace: gateway-conformance-app-backend}
spec: {ports: [{name: tls, port: 443}], selector: {app: tls-backend}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: tls-backend, namespace: gateway-conformance-app-backend}
spec: {address: 127.0.0.1, ports: {tls: 19443}, labels: {app: tls-backend}}
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: reference-grant-wrong-to-name, namespace: gateway-conformance-app-backend}
spec:
  from: [{group: gateway.networking.k8s.io, kind: TLSRoute, namespace: gateway-conformance-infra}]
  to: [{group: \"\", kind: Service, name: not-tls-backend}]
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: Gateway
metadata: {name: gateway-tlsroute, namespace: gateway-conformance-infra}
spec:
  gatewayClassName: istio
  listeners:
  - name: https
    port: 8444
    protocol: TLS
    hostname: '*.example.com'
    allowedRoutes:
      namespaces: {from: Same}
      kinds: [{kind: TLSRoute}]
    tls: {mode: Passthrough}
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {name: gateway-conformance-infra-test, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: gateway-tlsroute, namespace: gateway-conformance-infra}]
  hostnames: [abc.example.com]
  rules:
  - backendRefs: [BACKEND]
";

/// The conformance case `TLSRouteSimpleSameNamespace` (its manifest on one
/// node: the namespace `gateway-conformance-infra`, the listener's 443 on
/// 8444, `tls-backend` a TLS backend saying `tls-backend`) and
/// `TLSRouteInvalidReferenceGrant` (a backend of another namespace whose
/// ReferenceGrant names another Service: not permitted, the connection is
/// closed, `ResolvedRefs` `RefNotPermitted`), as a table: the route's
/// backendRef, the SNI, who answers (`None`: closed), the route's
/// `ResolvedRefs` reason.
#[test]
fn conformance_tls_route_cases() {
    let certs = Certs::new("tls-conformance");
    let mut s = Scenario::tcp_echo_backends("tls-conf", &[]);
    let rt = runtime_in(&s.netns);
    tls_backend(&rt, "127.0.0.1:19443", "tls-backend", certs.acceptor());
    let connector = certs.connector();
    let cases = [
        (
            "TLSRouteSimpleSameNamespace",
            "{name: tls-backend, port: 443}",
            "abc.example.com",
            Some("tls-backend"),
            "ResolvedRefs",
        ),
        (
            "TLSRouteSimpleSameNamespace: another name of the listener's",
            "{name: tls-backend, port: 443}",
            "def.example.com",
            None,
            "ResolvedRefs",
        ),
        (
            "TLSRouteInvalidReferenceGrant",
            "{name: tls-backend, namespace: gateway-conformance-app-backend, port: 443}",
            "abc.example.com",
            None,
            "RefNotPermitted",
        ),
    ];
    let mut written = String::new();
    for (case, backend, sni, answer, resolved) in cases {
        let text = CONFORMANCE.replace("BACKEND", backend);
        if text != written {
            let event = s.agent.write_rules("conformance.yaml", &text);
            assert_eq!(event["result"], "applied", "{case}: {event}");
            written = text;
        }
        let c = connector.clone();
        let got = run(&rt, async move {
            match connect(&c, CONFORMANCE_GATEWAY, sni).await {
                Ok((who, _)) => Some(who),
                Err(_) => None,
            }
        });
        assert_eq!(got.as_deref(), answer, "{case}: {sni}");
        let yaml = s.agent.ctl(&[
            "get",
            "tlsroute",
            "gateway-conformance-infra-test",
            "-n",
            "gateway-conformance-infra",
            "-o",
            "yaml",
        ]);
        let text = String::from_utf8_lossy(&yaml.stdout);
        assert!(yaml.status.success(), "{case}: get: {yaml:?}");
        assert!(
            text.contains(&format!("reason: {resolved}")) && text.contains("reason: Accepted"),
            "{case}: status:\n{text}"
        );
    }
    drop(rt);
}
