//! A small blocking HTTP/1.1 client for the tests: one request at a time on
//! a connection that may be kept alive, bodies by `Content-Length`, chunked
//! or to the close. Written here (not a client crate) so the tests see the
//! bytes on the wire exactly as the proxy sends them, and so `ts-client`
//! stays a plain std program that runs inside a test's cgroup.

use std::{
    fmt::Write as _,
    io::{BufRead, BufReader, Write},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Names lowercased, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Which backend answered: the JSON body's `version` (`http-echo`), else
    /// the body's first word (an error page of the proxy names its cause).
    pub fn answer(&self) -> String {
        if let Ok(serde_json::Value::Object(body)) = serde_json::from_slice(&self.body)
            && let Some(version) = body.get("version").and_then(|v| v.as_str())
        {
            return version.to_owned();
        }
        self.text()
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_owned()
    }

    /// The JSON body, if it is JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

pub struct Conn {
    stream: BufReader<TcpStream>,
    /// The server said it closes the connection.
    closed: bool,
}

impl Conn {
    pub fn connect(target: SocketAddr) -> std::io::Result<Self> {
        let stream = TcpStream::connect_timeout(&target, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream: BufReader::new(stream),
            closed: false,
        })
    }

    /// Whether another request may be sent on this connection.
    pub fn reusable(&self) -> bool {
        !self.closed
    }

    /// Sends one request and reads its response. `headers` are sent as
    /// given (add `host` yourself to choose the authority; else the target
    /// address is used).
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        keep_alive: bool,
    ) -> std::io::Result<Response> {
        let mut head = format!("{method} {path} HTTP/1.1\r\n");
        if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
            let peer = self.stream.get_ref().peer_addr()?;
            let _ = write!(head, "host: {peer}\r\n");
        }
        for (name, value) in headers {
            let _ = write!(head, "{name}: {value}\r\n");
        }
        if !body.is_empty() || method == "POST" || method == "PUT" {
            let _ = write!(head, "content-length: {}\r\n", body.len());
        }
        if !keep_alive {
            head.push_str("connection: close\r\n");
        }
        head.push_str("\r\n");
        let stream = self.stream.get_mut();
        stream.write_all(head.as_bytes())?;
        stream.write_all(body)?;
        let response = read_response(&mut self.stream, method == "HEAD")?;
        if !keep_alive
            || response
                .header("connection")
                .is_some_and(|c| c.eq_ignore_ascii_case("close"))
        {
            self.closed = true;
        }
        Ok(response)
    }
}

fn bad(what: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.into())
}

fn read_line(reader: &mut impl BufRead) -> std::io::Result<String> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed before a response",
        ));
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// Reads one response (status line, headers, body).
pub fn read_response(reader: &mut impl BufRead, head_only: bool) -> std::io::Result<Response> {
    let status_line = read_line(reader)?;
    let mut parts = status_line.splitn(3, ' ');
    let (Some(version), Some(code)) = (parts.next(), parts.next()) else {
        return Err(bad(format!("bad status line {status_line:?}")));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(bad(format!("bad status line {status_line:?}")));
    }
    let status: u16 = code
        .parse()
        .map_err(|_| bad(format!("bad status {code:?}")))?;
    let mut headers = Vec::new();
    loop {
        let line = read_line(reader)?;
        if line.is_empty() {
            break;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| bad(format!("bad header {line:?}")))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let mut response = Response {
        status,
        headers,
        body: Vec::new(),
    };
    if head_only || status == 204 || status == 304 || (100..200).contains(&status) {
        return Ok(response);
    }
    if response
        .header("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        loop {
            let size_line = read_line(reader)?;
            let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| bad(format!("bad chunk size {size_line:?}")))?;
            if size == 0 {
                // Trailers, then the blank line.
                while !read_line(reader)?.is_empty() {}
                break;
            }
            let start = response.body.len();
            response.body.resize(start + size, 0);
            reader.read_exact(&mut response.body[start..])?;
            read_line(reader)?;
        }
    } else if let Some(length) = response.header("content-length") {
        let length: usize = length
            .parse()
            .map_err(|_| bad(format!("bad content-length {length:?}")))?;
        response.body.resize(length, 0);
        reader.read_exact(&mut response.body)?;
    } else {
        reader.read_to_end(&mut response.body)?;
    }
    Ok(response)
}

/// One request on a connection of its own.
pub fn get(target: SocketAddr, path: &str, headers: &[(&str, &str)]) -> std::io::Result<Response> {
    Conn::connect(target)?.request("GET", path, headers, b"", false)
}
