//! Demo backend, like Istio's `tcp-echo-server`: answers every line `hello`
//! with `<prefix> hello`, so a client sees which backend (version) it reached.
//!
//! For tests, the line `whoami` is answered with
//! `<prefix> peer=<client addr:port> local=<local addr:port>`.
#![forbid(unsafe_code)]

use std::{io::IsTerminal, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::{Context, Result};
use clap::Parser;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
    signal::unix::{SignalKind, signal},
};
use tracing_subscriber::EnvFilter;

/// TCP line echo server: `tcp-echo --listen 127.0.0.1:19001 --listen [::1]:19001 --prefix one`.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to listen on, IPv4 or IPv6, repeatable; port 0 picks a free port
    /// (the log line shows it). Example: `127.0.0.1:19001` or `[::1]:19001`.
    #[arg(long, required = true, value_name = "ADDR:PORT")]
    listen: Vec<SocketAddr>,
    /// Word put before each answer. Example: `one` answers `one hello` to `hello`.
    #[arg(long)]
    prefix: String,
}

fn main() -> std::process::ExitCode {
    if let Err(e) = serve_until_signal() {
        eprintln!("tcp-echo: error: {e:#}");
        return std::process::ExitCode::FAILURE;
    }
    std::process::ExitCode::SUCCESS
}

#[tokio::main]
async fn serve_until_signal() -> Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let args = Args::parse();
    let prefix: Arc<str> = args.prefix.into();

    let mut listeners = Vec::with_capacity(args.listen.len());
    for addr in &args.listen {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        listeners.push(listener);
    }
    let bound = listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.to_string()))
        .collect::<std::io::Result<Vec<_>>>()?;
    tracing::info!("tcp-echo {prefix} listening on {}", bound.join(" "));

    for listener in listeners {
        tokio::spawn(accept_loop(listener, Arc::clone(&prefix)));
    }

    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("cannot handle SIGINT")?,
        _ = term.recv() => {}
    }
    tracing::info!("tcp-echo {prefix} stopping");
    Ok(())
}

async fn accept_loop(listener: TcpListener, prefix: Arc<str>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let prefix = Arc::clone(&prefix);
                tokio::spawn(async move {
                    if let Err(e) = serve(stream, &prefix).await {
                        tracing::debug!("connection ended with error: {e}");
                    }
                });
            }
            Err(e) => {
                // EMFILE and the like: back off instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Answers each line until the client closes; a last line without `\n` is
/// answered too. Lines are bytes, not necessarily UTF-8.
async fn serve(stream: TcpStream, prefix: &str) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let (peer, local) = (stream.peer_addr()?, stream.local_addr()?);
    let (reader, mut writer) = stream.into_split();
    let mut reader = BufReader::new(reader);
    let mut line = Vec::new();
    let mut reply = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).await? == 0 {
            return Ok(());
        }
        let text = line
            .strip_suffix(b"\n")
            .map_or(&line[..], |l| l.strip_suffix(b"\r").unwrap_or(l));
        reply.clear();
        if text == b"whoami" {
            reply.extend_from_slice(format!("{prefix} peer={peer} local={local}").as_bytes());
        } else {
            reply.extend_from_slice(prefix.as_bytes());
            reply.push(b' ');
            reply.extend_from_slice(text);
        }
        reply.push(b'\n');
        writer.write_all(&reply).await?;
    }
}
