//! Test support: spawn nodes on loopback and wait for their events with a deadline.

use std::{future::Future, time::Duration};

use net::{Client, Config, Event, Keypair, Multiaddr, PeerId};
use tokio::sync::mpsc;

/// Every wait in these tests; a failing test fails after this rather than hanging.
pub const WAIT: Duration = Duration::from_secs(15);

/// A running node as a test sees it.
pub struct Node {
    pub client: Client,
    pub events: mpsc::Receiver<Event>,
    pub peer_id: PeerId,
    pub addr: Multiaddr,
}

/// Loopback-only config with a fast heartbeat; `tweak` adjusts it per test.
pub fn config(tweak: impl FnOnce(&mut Config)) -> Config {
    let mut config = Config {
        listen_addrs: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("valid multiaddr")],
        mdns: false,
        federation_id: "ab12".to_owned(),
        ..Config::default()
    };
    config.limits.heartbeat_ms = 100;
    tweak(&mut config);
    config
}

/// Spawns a node from `seed` and waits until it listens.
pub async fn spawn_node(seed: u8, tweak: impl FnOnce(&mut Config)) -> Node {
    let keypair = Keypair::from_secret_seed([seed; 32]);
    let peer_id = keypair.peer_id();
    let (client, mut events) = net::spawn(keypair, config(tweak)).expect("node spawns");
    let addr = next(&mut events, |event| match event {
        Event::NewListenAddr { addr } => Some(addr),
        _ => None,
    })
    .await;
    Node {
        client,
        events,
        peer_id,
        addr,
    }
}

/// Waits for the first event `pick` accepts, skipping the others.
pub async fn next<T>(
    events: &mut mpsc::Receiver<Event>,
    mut pick: impl FnMut(Event) -> Option<T>,
) -> T {
    within(async {
        loop {
            let event = events.recv().await.expect("event loop is running");
            if let Some(found) = pick(event) {
                return found;
            }
        }
    })
    .await
}

/// Awaits `future`, failing the test after `WAIT`.
pub async fn within<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(WAIT, future).await.expect("timed out")
}

/// Answers every inbound request on `node` with `reply(bytes)` until its event channel closes.
pub fn serve(client: Client, mut events: mpsc::Receiver<Event>, reply: fn(&[u8]) -> Vec<u8>) {
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            if let Event::InboundRequest { id, bytes, .. } = event {
                let _ = client.respond(id, reply(&bytes)).await;
            }
        }
    });
}
