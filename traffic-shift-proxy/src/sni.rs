//! The SNI of a TLS ClientHello, read from the bytes a client sent first,
//! without terminating TLS (RFC 8446 4.1.2, RFC 6066 3), and the route an
//! SNI name picks among a listener's TLS passthrough routes.
//!
//! [`client_hello_sni`] takes the bytes peeked so far. A ClientHello may
//! be split over several TLS records and TCP segments: until the whole
//! handshake message is there it answers [`Hello::Incomplete`], and the
//! caller peeks again once more bytes came. Every length is checked
//! against what holds it; nothing is trusted, nothing panics.

/// The most bytes read before a ClientHello must be complete: records of
/// up to 16 KiB (RFC 8446 5.1), and a ClientHello larger than Envoy's TLS
/// inspector takes (64 KiB) is refused.
pub const MAX_CLIENT_HELLO: usize = 64 * 1024;

/// What the bytes so far say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hello {
    /// A whole ClientHello: its `server_name` (`host_name`, lowercase), or
    /// `None` when it has no SNI extension.
    Complete(Option<String>),
    /// A ClientHello so far; at least this many bytes in all are needed to
    /// know more.
    Incomplete { need: usize },
}

/// Why the bytes are not a ClientHello this can read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a TLS ClientHello: {0}")]
pub struct NotHello(pub &'static str);

const RECORD_HEADER: usize = 5;
const CONTENT_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const EXTENSION_SERVER_NAME: u16 = 0;
const NAME_TYPE_HOST_NAME: u8 = 0;

/// The SNI of the ClientHello at the start of `bytes` (what a client sent
/// first), or what is missing.
pub fn client_hello_sni(bytes: &[u8]) -> Result<Hello, NotHello> {
    // The handshake message, gathered from the fragments of its records.
    let mut message = Vec::new();
    let mut at = 0;
    loop {
        let Some(header) = bytes.get(at..at + RECORD_HEADER) else {
            return Ok(Hello::Incomplete {
                need: at + RECORD_HEADER,
            });
        };
        if header[0] != CONTENT_HANDSHAKE {
            return Err(NotHello("the first record is not a handshake record"));
        }
        if header[1] != 3 {
            return Err(NotHello("the record version is not TLS (3.x)"));
        }
        let length = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if length == 0 || length > 16 * 1024 + 256 {
            return Err(NotHello("a handshake record length out of range"));
        }
        let end = at + RECORD_HEADER + length;
        if end > MAX_CLIENT_HELLO {
            return Err(NotHello("the ClientHello is larger than 64 KiB"));
        }
        let Some(fragment) = bytes.get(at + RECORD_HEADER..end) else {
            return Ok(Hello::Incomplete { need: end });
        };
        message.extend_from_slice(fragment);
        at = end;
        if message.len() >= 4 {
            if message[0] != HANDSHAKE_CLIENT_HELLO {
                return Err(NotHello("the first handshake message is not a ClientHello"));
            }
            let body = usize::from(message[1]) << 16
                | usize::from(message[2]) << 8
                | usize::from(message[3]);
            if body > MAX_CLIENT_HELLO {
                return Err(NotHello("the ClientHello is larger than 64 KiB"));
            }
            if message.len() >= 4 + body {
                return client_hello(&message[4..4 + body]).map(Hello::Complete);
            }
        }
    }
}

/// A reader of a ClientHello body: every read checks the length left.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], NotHello> {
        if self.0.len() < n {
            return Err(NotHello(what));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, NotHello> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, NotHello> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// A vector with a one- or two-byte length.
    fn vector(&mut self, width: usize, what: &'static str) -> Result<&'a [u8], NotHello> {
        let n = if width == 1 {
            usize::from(self.u8(what)?)
        } else {
            usize::from(self.u16(what)?)
        };
        self.take(n, what)
    }
}

/// The SNI of a whole ClientHello body.
fn client_hello(body: &[u8]) -> Result<Option<String>, NotHello> {
    let mut r = Reader(body);
    let version = r.u16("no legacy_version")?;
    if version >> 8 != 3 {
        return Err(NotHello("the ClientHello version is not TLS (3.x)"));
    }
    r.take(32, "no random")?;
    let session = r.vector(1, "a truncated legacy_session_id")?;
    if session.len() > 32 {
        return Err(NotHello("a legacy_session_id longer than 32 bytes"));
    }
    let suites = r.vector(2, "truncated cipher_suites")?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return Err(NotHello("cipher_suites is empty or of odd length"));
    }
    if r.vector(1, "truncated compression_methods")?.is_empty() {
        return Err(NotHello("compression_methods is empty"));
    }
    if r.0.is_empty() {
        // SSL 3.0 / TLS 1.0 without extensions.
        return Ok(None);
    }
    let mut extensions = Reader(r.vector(2, "truncated extensions")?);
    if !r.0.is_empty() {
        return Err(NotHello("bytes after the extensions"));
    }
    let mut sni = None;
    let mut seen = Vec::new();
    while !extensions.0.is_empty() {
        let kind = extensions.u16("a truncated extension type")?;
        let data = extensions.vector(2, "a truncated extension")?;
        if seen.contains(&kind) {
            // RFC 8446 4.2: at most one extension of each type.
            return Err(NotHello("an extension repeated"));
        }
        seen.push(kind);
        if kind == EXTENSION_SERVER_NAME {
            sni = server_name(data)?;
        }
    }
    Ok(sni)
}

/// The `host_name` of a `server_name` extension's data (RFC 6066 3):
/// ASCII, a DNS name, lowercase; `None` for an empty extension (a server's
/// answer form, legal from a client too).
fn server_name(data: &[u8]) -> Result<Option<String>, NotHello> {
    if data.is_empty() {
        return Ok(None);
    }
    let mut r = Reader(data);
    let mut list = Reader(r.vector(2, "a truncated server_name_list")?);
    if !r.0.is_empty() {
        return Err(NotHello("bytes after the server_name_list"));
    }
    let mut host = None;
    while !list.0.is_empty() {
        let name_type = list.u8("a truncated server name")?;
        let name = list.vector(2, "a truncated server name")?;
        if name_type != NAME_TYPE_HOST_NAME {
            continue;
        }
        if host.is_some() {
            return Err(NotHello("two host_name entries in server_name"));
        }
        host = Some(host_name(name)?);
    }
    Ok(host)
}

fn host_name(name: &[u8]) -> Result<String, NotHello> {
    let valid = !name.is_empty()
        && name.len() <= 255
        && name
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    if !valid {
        return Err(NotHello(
            "a host_name that is not a DNS name (letters, digits, '-', '.', '_')",
        ));
    }
    let name = String::from_utf8_lossy(name).to_ascii_lowercase();
    // "The hostname is represented ... without a trailing dot."
    Ok(name.strip_suffix('.').unwrap_or(&name).to_owned())
}

/// The route of an SNI name among `routes` (each with its names: a name,
/// `*.suffix`, or `*`), as the Gateway API and Envoy's filter chain match
/// pick: the route naming it exactly, else the one with the longest
/// `*.suffix` it ends with (a wildcard stands for one label or more, not
/// none: `*.example.com` takes `a.b.example.com`, not `example.com`), else
/// one with `*`. A ClientHello without SNI takes only a `*` route. Among
/// equals, the first.
pub fn route_for<'r, R>(routes: &'r [(Vec<String>, R)], sni: Option<&str>) -> Option<&'r R> {
    let mut best: Option<(usize, &R)> = None;
    for (names, route) in routes {
        for name in names {
            let rank = match (name.as_str(), sni) {
                ("*", _) => 1,
                (name, Some(sni)) if name == sni => usize::MAX,
                (name, Some(sni)) => match name.strip_prefix('*') {
                    Some(suffix)
                        if suffix.starts_with('.')
                            && sni.len() > suffix.len()
                            && sni.ends_with(suffix) =>
                    {
                        1 + suffix.len()
                    }
                    _ => continue,
                },
                (_, None) => continue,
            };
            if best.is_none_or(|(b, _)| rank > b) {
                best = Some((rank, route));
            }
        }
    }
    best.map(|(_, route)| route)
}

#[cfg(test)]
#[path = "sni_tests.rs"]
pub(crate) mod tests;
