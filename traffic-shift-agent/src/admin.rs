//! The agent's admin socket: how `traffic-shift apply|delete|get|version`
//! reach a running agent.
//!
//! Transport: a Unix stream socket (`--admin-socket`, default
//! [`DEFAULT_SOCKET`]), mode 0600 and owned by root; the agent also reads
//! the peer's credentials (`SO_PEERCRED`) and refuses any uid but 0, so a
//! socket whose mode was loosened (or a descriptor passed to another user)
//! still serves root only.
//!
//! Protocol: one request per connection. The client sends one JSON object
//! ([`Request`]) on one line (`\n`, or the end of its output, ends it), at
//! most [`MAX_REQUEST_BYTES`], within [`REQUEST_TIMEOUT`]; the agent answers
//! one JSON object ([`Response`]) on one line and closes the connection. A
//! request that is too big, late, not JSON or not a known command gets a
//! [`Response::Error`] saying so; the agent carries on. Requests go to the
//! agent loop one at a time ([`Call`]), in between its rescans of the rules
//! directory, so two applies never interleave.
//!
//! Being line-delimited JSON, the socket can be tried by hand:
//! `echo '{"command":"version"}' | socat - UNIX-CONNECT:/run/traffic-shift/admin.sock`.

use std::{
    io::{Read as _, Write as _},
    os::unix::fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncRead, AsyncReadExt as _, AsyncWriteExt as _},
    net::{UnixListener, UnixStream},
    sync::{Semaphore, mpsc, oneshot},
};

/// Where the agent serves its admin socket and the CLI looks for it.
pub const DEFAULT_SOCKET: &str = "/run/traffic-shift/admin.sock";

/// The largest request the agent reads. A request carries rules files'
/// texts, all or nothing together; one file may have up to
/// [`traffic_shift_config::MAX_FILE_BYTES`] (4 MiB), and 100 000 services
/// (ServiceEntry and VirtualService each) in files of 1 000 are 55 MB,
/// JSON escaping included.
pub const MAX_REQUEST_BYTES: usize = 128 << 20;

/// The largest answer the CLI reads (`get -o yaml` of many resources:
/// 100 000 services are 90 MB).
pub const MAX_RESPONSE_BYTES: usize = 256 << 20;

/// How long a client has to send its whole request (and to take the answer).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the CLI waits for the answer: an apply waits its turn behind a
/// rescan, then compiles and writes the maps.
pub const CLIENT_TIMEOUT: Duration = Duration::from_mins(1);

/// Requests served at once; further connections wait in the accept queue.
const MAX_CONNECTIONS: usize = 8;

/// One rules file as the CLI read it: `path` names it in messages (the
/// agent never opens it), `text` is its content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileText {
    pub path: String,
    pub text: String,
}

/// What a client asks for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Request {
    /// Create or replace every resource of `files`, all or nothing.
    Apply {
        files: Vec<FileText>,
        /// Check everything the agent checks (the whole resulting set
        /// resolved and compiled) and change nothing.
        #[serde(default)]
        dry_run: bool,
    },
    /// Remove every resource `files` names (by kind, namespace and name),
    /// all or nothing.
    Delete {
        files: Vec<FileText>,
        /// Resources that are not applied are skipped instead of refusing
        /// the request.
        #[serde(default)]
        ignore_not_found: bool,
        #[serde(default)]
        dry_run: bool,
    },
    /// The resources in force (applied and from the rules directory), of
    /// one kind (its Istio name, `VirtualService`) or of all.
    Get {
        #[serde(default)]
        kind: Option<String>,
    },
    /// The agent's version.
    Version,
    /// The rollouts as they stand (`rollout status`, `get rollouts`): one
    /// (`NAMESPACE/NAME`, or a name one namespace has) or all.
    Rollouts {
        #[serde(default)]
        name: Option<String>,
    },
    /// `rollout promote|pause|resume|abort|retry NAME`.
    Rollout {
        name: String,
        action: crate::rollout::Command,
    },
}

impl Request {
    /// The command's name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Apply { .. } => "apply",
            Self::Delete { .. } => "delete",
            Self::Get { .. } => "get",
            Self::Version => "version",
            Self::Rollouts { .. } => "rollout status",
            Self::Rollout { action, .. } => action.as_str(),
        }
    }
}

/// The agent's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    /// `apply` / `delete` went through (or would, with `dry_run`): what
    /// happened to each resource, in the order the files name them, and
    /// the warnings about them.
    Changed {
        changes: Vec<Change>,
        #[serde(default)]
        warnings: Vec<String>,
        #[serde(default)]
        dry_run: bool,
    },
    /// `get`: the resources, sorted by namespace and name.
    Resources { items: Vec<Item> },
    /// `version`.
    Version { version: String },
    /// `rollouts` and `rollout`: the rollouts as they stand (after the
    /// command).
    Rollouts {
        rollouts: Vec<crate::rollout::RolloutStatus>,
    },
    /// The request was understood and refused: every reason, one line
    /// each. Nothing changed.
    Refused { errors: Vec<String> },
    /// The request could not be served: not root, too big, too slow, not
    /// JSON, unknown command. Nothing changed.
    Error { message: String },
}

/// What happened to one resource.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// The Istio kind, `VirtualService`.
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub action: Action,
}

/// kubectl's words for what `apply` / `delete` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Not applied before.
    Created,
    /// Applied before, with another document.
    Configured,
    /// Applied before with the same document: nothing to do.
    Unchanged,
    Deleted,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Configured => "configured",
            Self::Unchanged => "unchanged",
            Self::Deleted => "deleted",
        }
    }
}

/// One resource in force, for `get`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Item {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// `apply`, or the rules file that defines it.
    pub source: String,
    /// When it was created (applied: the first apply; rules directory: the
    /// file's modification time), Unix milliseconds.
    pub created_ms: Option<u64>,
    /// The resource as Istio YAML would carry it, as JSON; `apply` takes it
    /// back unchanged.
    pub document: serde_json::Value,
}

impl Item {
    /// One resource for `get`, a Secret's values redacted: `get` never
    /// shows key material, whether it asks the agent or the store.
    pub fn new(
        (kind, namespace, name): (&str, &str, &str),
        source: String,
        created_ms: Option<u64>,
        mut document: serde_json::Value,
    ) -> Self {
        if kind == "Secret" {
            traffic_shift_config::redact(&mut document);
        }
        Self {
            kind: kind.to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            source,
            created_ms,
            document,
        }
    }
}

/// A request that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error(
        "the request is more than {MAX_REQUEST_BYTES} bytes, the most the agent reads; apply fewer files at once"
    )]
    TooLarge,
    #[error("empty request: send one JSON object on one line, e.g. {{\"command\":\"version\"}}")]
    Empty,
    #[error(
        "malformed request: {0}; send one JSON object on one line, e.g. {{\"command\":\"version\"}}"
    )]
    Malformed(#[source] serde_json::Error),
    #[error("cannot read the request: {0}")]
    Io(#[source] std::io::Error),
}

/// Reads one request: bytes up to the first `\n` (or the end of input), at
/// most [`MAX_REQUEST_BYTES`] of them, as JSON.
pub async fn read_request(input: impl AsyncRead + Unpin) -> Result<Request, FrameError> {
    let mut reader = tokio::io::BufReader::new(input.take(MAX_REQUEST_BYTES as u64 + 1));
    let mut line = Vec::new();
    reader
        .read_until(b'\n', &mut line)
        .await
        .map_err(FrameError::Io)?;
    if line.last() == Some(&b'\n') {
        line.pop();
    }
    if line.len() > MAX_REQUEST_BYTES {
        return Err(FrameError::TooLarge);
    }
    if line.iter().all(u8::is_ascii_whitespace) {
        return Err(FrameError::Empty);
    }
    serde_json::from_slice(&line).map_err(FrameError::Malformed)
}

/// One message as sent: JSON on one line (serde_json never writes a raw
/// newline inside one).
pub fn encode(message: &impl Serialize) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(message).expect("protocol types serialize");
    bytes.push(b'\n');
    bytes
}

/// A request, read and checked, waiting for the agent loop's answer.
#[derive(Debug)]
pub struct Call {
    pub request: Request,
    /// The client's pid, for logs.
    pub pid: Option<i32>,
    reply: oneshot::Sender<Response>,
}

impl Call {
    /// Answers the client (which may have gone: then nobody hears it).
    pub fn reply(self, response: Response) {
        let _ = self.reply.send(response);
    }
}

/// Why the admin socket cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(
        "another agent serves the admin socket {path}; stop it, or give this one another --admin-socket"
    )]
    InUse { path: PathBuf },
    #[error(
        "{path} exists and is not a socket; remove it or give the agent another --admin-socket"
    )]
    NotASocket { path: PathBuf },
    #[error("cannot serve the admin socket {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The admin socket, served until dropped; then the socket file is
/// removed (if it is still this one).
pub struct AdminServer {
    path: PathBuf,
    inode: u64,
    task: tokio::task::JoinHandle<()>,
}

impl AdminServer {
    /// Binds `path` (root only: mode 0600) and serves it: each request read
    /// is sent as a [`Call`] on the returned channel, for the agent loop to
    /// answer. A socket file left by an agent that stopped is replaced; a
    /// live one is refused. Needs a tokio runtime.
    pub fn bind(path: &Path) -> Result<(Self, mpsc::Receiver<Call>), AdminError> {
        let io = |source| AdminError::Io {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => {
                match std::os::unix::net::UnixStream::connect(path) {
                    Ok(_) => return Err(AdminError::InUse { path: path.into() }),
                    // Left by an agent that is gone: nobody accepts on it.
                    Err(_) => std::fs::remove_file(path).map_err(io)?,
                }
            }
            Ok(_) => return Err(AdminError::NotASocket { path: path.into() }),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(io(err)),
        }
        // Bound under a temporary name, made root-only, then renamed into
        // place: the socket is never reachable at `path` with a wider mode.
        // (A client that connects to the temporary name in between is
        // still refused by its credentials.)
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(".{}.tmp", std::process::id()));
        let tmp = PathBuf::from(tmp);
        let _ = std::fs::remove_file(&tmp);
        let listener = std::os::unix::net::UnixListener::bind(&tmp).map_err(io)?;
        let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
            .and_then(|()| std::fs::rename(&tmp, path))
            .and_then(|()| std::fs::metadata(path))
            .and_then(|meta| listener.set_nonblocking(true).map(|()| meta.ino()));
        let inode = match placed {
            Ok(inode) => inode,
            Err(err) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(io(err));
            }
        };
        let listener = UnixListener::from_std(listener).map_err(io)?;
        let (calls, receiver) = mpsc::channel(16);
        let task = tokio::spawn(accept_loop(listener, calls));
        Ok((
            Self {
                path: path.to_owned(),
                inode,
                task,
            },
            receiver,
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.task.abort();
        // Only our own socket: another agent may have taken the path over.
        if std::fs::metadata(&self.path).is_ok_and(|meta| meta.ino() == self.inode) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

async fn accept_loop(listener: UnixListener, calls: mpsc::Sender<Call>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok((stream, _)) => {
                let calls = calls.clone();
                tokio::spawn(async move {
                    serve(stream, calls).await;
                    drop(slot);
                });
            }
            Err(err) => {
                // Out of descriptors, typically: wait instead of spinning.
                tracing::warn!(%err, "admin socket: cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One connection: the peer's credentials, its request, the agent's
/// answer. Never fails the agent: a bad client gets an error and is closed.
async fn serve(mut stream: UnixStream, calls: mpsc::Sender<Call>) {
    let credentials = stream.peer_cred();
    let pid = credentials
        .as_ref()
        .ok()
        .and_then(tokio::net::unix::UCred::pid);
    let response = match credentials {
        Err(err) => Response::Error {
            message: format!("cannot read the client's credentials: {err}"),
        },
        Ok(cred) if cred.uid() != 0 => Response::Error {
            message: format!(
                "permission denied: the agent takes admin requests from root (uid 0) only, and this client runs as uid {}; run it as root, e.g. with sudo",
                cred.uid()
            ),
        },
        Ok(_) => match tokio::time::timeout(REQUEST_TIMEOUT, read_request(&mut stream)).await {
            Err(_) => Response::Error {
                message: format!(
                    "no complete request within {} s: send one JSON object on one line",
                    REQUEST_TIMEOUT.as_secs()
                ),
            },
            Ok(Err(err)) => Response::Error {
                message: err.to_string(),
            },
            Ok(Ok(request)) => {
                tracing::debug!(command = request.name(), pid, "admin request");
                let (reply, answer) = oneshot::channel();
                let call = Call {
                    request,
                    pid,
                    reply,
                };
                if calls.send(call).await.is_err() {
                    Response::Error {
                        message: "the agent is stopping".into(),
                    }
                } else {
                    answer.await.unwrap_or_else(|_| Response::Error {
                        message: "the agent is stopping".into(),
                    })
                }
            }
        },
    };
    if let Response::Error { message } = &response {
        tracing::warn!(pid, "admin socket: {message}");
    }
    let sent = tokio::time::timeout(REQUEST_TIMEOUT, async {
        stream.write_all(&encode(&response)).await?;
        stream.shutdown().await
    })
    .await;
    if !matches!(sent, Ok(Ok(()))) {
        return;
    }
    // Read what the client may still be sending (the rest of an oversized
    // request) before closing: a socket closed with unread input resets
    // the connection, and the client would lose the answer.
    let mut sink = vec![0u8; 16 << 10];
    let _ = tokio::time::timeout(REQUEST_TIMEOUT, async {
        let mut left = MAX_RESPONSE_BYTES;
        while left > 0 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}

/// Why the CLI got no answer from the agent.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No socket, or nobody accepting on it.
    #[error(
        "the agent is not running: {reason} at {path} (start it with `traffic-shift run`, or pass the --admin-socket it was started with)"
    )]
    NotRunning { path: PathBuf, reason: &'static str },
    #[error(
        "permission denied: {path} is root-only (it changes the node's routing); run this as root, e.g. with sudo"
    )]
    PermissionDenied { path: PathBuf },
    #[error(
        "the request is {bytes} bytes, more than the {MAX_REQUEST_BYTES} the agent reads; apply fewer files at once"
    )]
    TooLarge { bytes: usize },
    #[error("the agent did not answer within {} s", CLIENT_TIMEOUT.as_secs())]
    Timeout,
    #[error("talking to the agent on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the agent's answer is not understood: {0}; is the agent the same version as this client (`traffic-shift version`)?"
    )]
    BadResponse(#[source] serde_json::Error),
}

impl ClientError {
    /// Whether the agent is simply not there (so `version` can still print
    /// the client's).
    pub fn is_not_running(&self) -> bool {
        matches!(self, Self::NotRunning { .. })
    }
}

/// Sends `request` to the agent on `socket` and returns its answer
/// (blocking; the CLI needs no runtime).
pub fn call(socket: &Path, request: &Request) -> Result<Response, ClientError> {
    let bytes = encode(request);
    if bytes.len() > MAX_REQUEST_BYTES + 1 {
        return Err(ClientError::TooLarge { bytes: bytes.len() });
    }
    let mut stream = std::os::unix::net::UnixStream::connect(socket).map_err(|source| {
        use std::io::ErrorKind;
        match source.kind() {
            ErrorKind::NotFound => ClientError::NotRunning {
                path: socket.to_owned(),
                reason: "no admin socket",
            },
            ErrorKind::ConnectionRefused => ClientError::NotRunning {
                path: socket.to_owned(),
                reason: "nothing accepts connections on the admin socket",
            },
            ErrorKind::PermissionDenied => ClientError::PermissionDenied {
                path: socket.to_owned(),
            },
            _ => ClientError::Io {
                path: socket.to_owned(),
                source,
            },
        }
    })?;
    let io = |source: std::io::Error| match source.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => ClientError::Timeout,
        _ => ClientError::Io {
            path: socket.to_owned(),
            source,
        },
    };
    stream.set_read_timeout(Some(CLIENT_TIMEOUT)).map_err(io)?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT)).map_err(io)?;
    // A refusal (not root) comes before the request is read: the answer
    // is still there to read when the write fails.
    let written = stream
        .write_all(&bytes)
        .and_then(|()| stream.shutdown(std::net::Shutdown::Write));
    let mut answer = Vec::new();
    let read = (&stream)
        .take(MAX_RESPONSE_BYTES as u64)
        .read_to_end(&mut answer);
    match (written, read) {
        (_, Ok(_)) if !answer.is_empty() => {}
        (Err(err), _) | (Ok(()), Err(err)) => return Err(io(err)),
        (Ok(()), Ok(_)) => {
            return Err(io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the agent closed the connection without an answer",
            )));
        }
    }
    serde_json::from_slice(answer.trim_ascii_end()).map_err(ClientError::BadResponse)
}

#[cfg(test)]
mod tests;
