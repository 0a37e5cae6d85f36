//! What a plain RFB client's connect costs (TCP connect to ServerInit, with our blocking
//! client), with the server's WebSocket detection on (`DEFAULT_WEBSOCKET_WAIT`) and off
//! (plain RFB only, the server as it was before WebSocket), connects alternating between
//! the two; prints each one's median. With `--addr`, times connects to that server instead
//! (a running vmdesk-vmm, say).
//!
//!     cargo run --release -p display --example vnc_connect_time -- [--connects N] [--addr HOST:PORT]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use display::client::{Client, ClientOptions};
use display::rfb::{DEFAULT_WEBSOCKET_WAIT, NullInput, VncConfig, VncServer};
use display::surface::Surface;

#[derive(Parser)]
#[command(about = "Times plain RFB connects with and without WebSocket detection")]
struct Args {
    /// Connects to each server.
    #[arg(long, default_value_t = 20)]
    connects: usize,
    /// Time this server only.
    #[arg(long)]
    addr: Option<SocketAddr>,
}

fn connect_time(addr: SocketAddr) -> Duration {
    let t = Instant::now();
    let client = Client::connect(addr, &ClientOptions::default()).expect("connect");
    let took = t.elapsed();
    drop(client);
    took
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let args = Args::parse();
    if let Some(addr) = args.addr {
        let times = (0..args.connects).map(|_| connect_time(addr)).collect();
        println!(
            "{addr}: median connect {} over {} connects",
            ms(median(times)),
            args.connects
        );
        return;
    }
    let surface = Surface::new(640, 480);
    let start = |wait| {
        let mut cfg = VncConfig::new("127.0.0.1:0".parse().unwrap());
        cfg.websocket_wait = wait;
        VncServer::start(cfg, Arc::clone(&surface), Arc::new(NullInput)).unwrap()
    };
    let with = start(Some(DEFAULT_WEBSOCKET_WAIT));
    let without = start(None);
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for _ in 0..args.connects {
        off.push(connect_time(without.local_addr()));
        on.push(connect_time(with.local_addr()));
    }
    let (on, off) = (median(on), median(off));
    println!(
        "plain RFB client, TCP connect to ServerInit, median of {} connects:\n  \
         WebSocket detection off (plain RFB only): {}\n  \
         WebSocket detection on ({} ms wait): {}\n  added: {}",
        args.connects,
        ms(off),
        DEFAULT_WEBSOCKET_WAIT.as_millis(),
        ms(on),
        ms(on.saturating_sub(off))
    );
}
