//! `grpc-echo --name NAME --listen ADDR [--listen ADDR ...]`: the gRPC echo
//! backend of the end-to-end tests (`traffic_shift_tests::grpc`), h2c on
//! each address; every answer names the backend. Says `listening` on
//! stderr once every address is bound.
#![forbid(unsafe_code)]

use std::net::SocketAddr;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut name = None;
    let mut listen: Vec<SocketAddr> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args
            .next()
            .unwrap_or_else(|| panic!("{arg} needs a value: --name NAME --listen ADDR"));
        match arg.as_str() {
            "--name" => name = Some(value),
            "--listen" => listen.push(
                value
                    .parse()
                    .unwrap_or_else(|e| panic!("--listen {value}: {e}")),
            ),
            other => panic!("unknown argument {other}: --name NAME --listen ADDR"),
        }
    }
    let name = name.expect("--name NAME");
    assert!(!listen.is_empty(), "--listen ADDR, at least one");
    let mut servers = Vec::new();
    for addr in &listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        servers.push(tokio::spawn(traffic_shift_tests::grpc::serve(
            listener,
            name.clone(),
        )));
    }
    eprintln!("grpc-echo {name} listening on {listen:?}");
    for server in servers {
        let _ = server.await;
    }
}
