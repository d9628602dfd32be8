//! Demo HTTP backend, like Istio's `httpbin` / Bookinfo's services: answers
//! every request with JSON naming its service and version and echoing the
//! request (method, path and query, authority, headers), over HTTP/1.1
//! (keep-alive) and HTTP/2 cleartext. Test controls: `/status/NNN`,
//! `/delay/MS`, `/fail/N` (the next N requests get 503), `/count`.
#![forbid(unsafe_code)]

use std::{io::IsTerminal, net::SocketAddr};

use anyhow::{Context, Result};
use clap::Parser;
use tokio::{
    net::TcpListener,
    signal::unix::{SignalKind, signal},
};
use tracing_subscriber::EnvFilter;
use traffic_shift_proxy::echo::{self, Echo};

/// HTTP echo server: `http-echo --listen 127.0.0.1:19080 --version v1 --name reviews`.
/// (`--version` names the backend's version, so clap's own flag is off.)
#[derive(Debug, Parser)]
#[command(disable_version_flag = true)]
struct Args {
    /// Address to listen on, IPv4 or IPv6, repeatable; port 0 picks a free port
    /// (the log line shows it). Example: `127.0.0.1:19080` or `[::1]:19080`.
    #[arg(long, required = true, value_name = "ADDR:PORT")]
    listen: Vec<SocketAddr>,
    /// The version it answers with (its `version` label). Example: `v1`.
    #[arg(long)]
    version: String,
    /// The service it answers as. Example: `reviews`.
    #[arg(long, default_value = "http-echo")]
    name: String,
}

fn main() -> std::process::ExitCode {
    if let Err(e) = serve_until_signal() {
        eprintln!("http-echo: error: {e:#}");
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
    let echo = Echo::new(&args.name, &args.version);
    let mut bound = Vec::new();
    for addr in &args.listen {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        bound.push(listener.local_addr()?.to_string());
        tokio::spawn(echo::serve(listener, std::sync::Arc::clone(&echo)));
    }
    tracing::info!(
        "http-echo {} {} listening on {}",
        args.name,
        args.version,
        bound.join(" ")
    );
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("cannot handle SIGINT")?,
        _ = term.recv() => {}
    }
    tracing::info!("http-echo {} {} stopping", args.name, args.version);
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::Args;

    #[test]
    fn arguments_are_consistent_and_parse() {
        Args::command().debug_assert();
        let args = Args::try_parse_from([
            "http-echo",
            "--listen",
            "127.0.0.1:0",
            "--version",
            "v2",
            "--name",
            "reviews",
        ])
        .expect("parses");
        assert_eq!(
            (args.version.as_str(), args.name.as_str()),
            ("v2", "reviews")
        );
    }
}
