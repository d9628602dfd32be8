use std::sync::Arc;

use super::*;

/// A ClientHello body: TLS 1.2 legacy version, a session id, two suites,
/// null compression, then `extensions` (type, data) when given.
fn body(extensions: Option<&[(u16, Vec<u8>)]>) -> Vec<u8> {
    let mut b = vec![3, 3];
    b.extend([7u8; 32]);
    b.push(32);
    b.extend([9u8; 32]);
    b.extend([0, 4, 0x13, 0x01, 0x13, 0x02]);
    b.extend([1, 0]);
    if let Some(extensions) = extensions {
        let mut all = Vec::new();
        for (kind, data) in extensions {
            all.extend(kind.to_be_bytes());
            all.extend(u16::try_from(data.len()).expect("small").to_be_bytes());
            all.extend(data);
        }
        b.extend(u16::try_from(all.len()).expect("small").to_be_bytes());
        b.extend(all);
    }
    b
}

/// A `server_name` extension's data naming `host`.
fn server_name(host: &[u8]) -> Vec<u8> {
    let mut entry = vec![0];
    entry.extend(u16::try_from(host.len()).expect("small").to_be_bytes());
    entry.extend(host);
    let mut data = u16::try_from(entry.len())
        .expect("small")
        .to_be_bytes()
        .to_vec();
    data.extend(entry);
    data
}

/// The handshake message of `body`, in records of at most `fragment` bytes.
fn records(body: &[u8], fragment: usize) -> Vec<u8> {
    let len = u32::try_from(body.len()).expect("small").to_be_bytes();
    let mut message = vec![1, len[1], len[2], len[3]];
    message.extend(body);
    let mut out = Vec::new();
    for chunk in message.chunks(fragment) {
        out.extend([22, 3, 1]);
        out.extend(u16::try_from(chunk.len()).expect("small").to_be_bytes());
        out.extend(chunk);
    }
    out
}

fn hello_for(host: &str) -> Vec<u8> {
    records(
        &body(Some(&[
            (10, vec![0, 2, 0, 29]),
            (0, server_name(host.as_bytes())),
            (43, vec![2, 3, 4]),
        ])),
        16 * 1024,
    )
}

/// A real ClientHello, as rustls writes it for `host`.
#[expect(
    deprecated,
    reason = "ring without post-quantum key exchange is enough for a ClientHello"
)]
pub(crate) fn rustls_hello(host: &str) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS 1.2 and 1.3")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(host.to_owned()).expect("a DNS name");
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).expect("a client");
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).expect("write to a Vec");
    }
    out
}

#[test]
fn a_real_client_hello_gives_its_sni_lowercase() {
    let bytes = rustls_hello("Tls.Example.COM");
    assert_eq!(
        client_hello_sni(&bytes),
        Ok(Hello::Complete(Some("tls.example.com".into())))
    );
}

#[test]
fn every_cut_of_a_client_hello_is_incomplete_until_its_last_byte() {
    for bytes in [rustls_hello("a.example.com"), hello_for("b.example.com")] {
        for cut in 0..bytes.len() {
            match client_hello_sni(&bytes[..cut]) {
                Ok(Hello::Incomplete { need }) => assert!(
                    need > cut && need <= bytes.len(),
                    "cut at {cut} of {}: needs {need}",
                    bytes.len()
                ),
                other => panic!("cut at {cut} of {}: {other:?}", bytes.len()),
            }
        }
    }
}

#[test]
fn a_client_hello_over_several_records_is_gathered() {
    let body = body(Some(&[(0, server_name(b"split.example.com"))]));
    for fragment in [1, 2, 3, 10, 50] {
        let bytes = records(&body, fragment);
        assert_eq!(
            client_hello_sni(&bytes),
            Ok(Hello::Complete(Some("split.example.com".into()))),
            "fragments of {fragment} bytes"
        );
    }
    // What follows the ClientHello (early data, a next record) is not read.
    let mut bytes = hello_for("x.example.com");
    bytes.extend([23, 3, 3, 0, 1, 0xff]);
    assert_eq!(
        client_hello_sni(&bytes),
        Ok(Hello::Complete(Some("x.example.com".into())))
    );
}

#[test]
fn no_sni_is_a_complete_hello_without_a_name() {
    let without = records(&body(Some(&[(10, vec![0, 2, 0, 29])])), 16 * 1024);
    assert_eq!(client_hello_sni(&without), Ok(Hello::Complete(None)));
    let no_extensions = records(&body(None), 16 * 1024);
    assert_eq!(client_hello_sni(&no_extensions), Ok(Hello::Complete(None)));
    let empty_sni = records(&body(Some(&[(0, Vec::new())])), 16 * 1024);
    assert_eq!(client_hello_sni(&empty_sni), Ok(Hello::Complete(None)));
    let trailing_dot = hello_for("dot.example.com.");
    assert_eq!(
        client_hello_sni(&trailing_dot),
        Ok(Hello::Complete(Some("dot.example.com".into())))
    );
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "a table of malformed inputs, each with the reason it is refused"
)]
fn malformed_input_is_refused_with_why() {
    let good = body(Some(&[(0, server_name(b"ok.example.com"))]));
    let mut cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "an HTTP request",
            b"GET / HTTP/1.1\r\n\r\n".to_vec(),
            "not a handshake",
        ),
        (
            "SSLv2",
            vec![0x80, 0x2e, 1, 3, 1, 0, 0x15],
            "not a handshake",
        ),
        (
            "record version 2",
            vec![22, 2, 0, 0, 4, 1, 0, 0, 0],
            "not TLS",
        ),
        ("an empty record", vec![22, 3, 1, 0, 0], "out of range"),
        (
            "a record too long",
            vec![22, 3, 1, 0xff, 0xff],
            "out of range",
        ),
        (
            "a ServerHello",
            vec![22, 3, 3, 0, 4, 2, 0, 0, 0],
            "not a ClientHello",
        ),
        (
            "a ClientHello claiming 16 MiB",
            vec![22, 3, 3, 0, 4, 1, 0xff, 0xff, 0xff],
            "larger than 64 KiB",
        ),
    ];
    let mut truncated = good.clone();
    truncated.truncate(40);
    cases.push((
        "a body shorter than its fields",
        records(&truncated, 16 * 1024),
        "truncated",
    ));
    let mut long_session = good.clone();
    long_session[34] = 33;
    cases.push((
        "a session id of 33 bytes",
        records(&long_session, 16 * 1024),
        "legacy_session_id",
    ));
    let mut odd_suites = body(None);
    odd_suites[68] = 3;
    cases.push((
        "cipher suites of odd length",
        records(&odd_suites, 16 * 1024),
        "odd",
    ));
    let mut extra = good.clone();
    extra.push(0);
    cases.push((
        "a byte after the extensions",
        records(&extra, 16 * 1024),
        "after the extensions",
    ));
    let twice = body(Some(&[
        (0, server_name(b"a.example.com")),
        (0, server_name(b"b.example.com")),
    ]));
    cases.push((
        "two server_name extensions",
        records(&twice, 16 * 1024),
        "repeated",
    ));
    let mut two_names = server_name(b"a.example.com");
    let second = server_name(b"b.example.com");
    two_names.extend(&second[2..]);
    let len = u16::try_from(two_names.len() - 2)
        .expect("small")
        .to_be_bytes();
    two_names[..2].copy_from_slice(&len);
    cases.push((
        "two host_names",
        records(&body(Some(&[(0, two_names)])), 16 * 1024),
        "two host_name",
    ));
    for bad in [
        &b"a b.example.com"[..],
        b"caf\xc3\xa9.example.com",
        b"",
        b"a/b",
    ] {
        cases.push((
            "a host_name that is no DNS name",
            records(&body(Some(&[(0, server_name(bad))])), 16 * 1024),
            "not a DNS name",
        ));
    }
    let mut lying = server_name(b"lie.example.com");
    lying[4] = 200;
    cases.push((
        "a name longer than its extension",
        records(&body(Some(&[(0, lying)])), 16 * 1024),
        "truncated server name",
    ));
    for (what, bytes, expected) in cases {
        match client_hello_sni(&bytes) {
            Err(NotHello(why)) => assert!(why.contains(expected), "{what}: {why}"),
            other => panic!("{what}: expected an error with {expected:?}, got {other:?}"),
        }
    }
}

#[test]
fn routes_are_picked_exact_then_longest_wildcard_then_star() {
    let routes = vec![
        (vec!["*".to_owned()], "any"),
        (vec!["*.example.com".to_owned()], "wild"),
        (vec!["*.deep.example.com".to_owned()], "deeper"),
        (
            vec!["a.example.com".to_owned(), "b.example.org".to_owned()],
            "exact",
        ),
    ];
    for (sni, expected) in [
        (Some("a.example.com"), "exact"),
        (Some("b.example.org"), "exact"),
        (Some("c.example.com"), "wild"),
        (Some("x.y.example.com"), "wild"),
        (Some("x.deep.example.com"), "deeper"),
        (Some("example.com"), "any"),
        (Some("other.net"), "any"),
        (None, "any"),
    ] {
        assert_eq!(route_for(&routes, sni), Some(&expected), "{sni:?}");
    }
    let named = &routes[1..];
    assert_eq!(
        route_for(named, Some("example.com")),
        None,
        "no label for *"
    );
    assert_eq!(route_for(named, Some("other.net")), None);
    assert_eq!(route_for(named, None), None, "no SNI, no named route");
}
