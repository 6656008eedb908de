//! `growthmesh node`: opens the data dir (taking the store), starts the libp2p network and the local API, and runs
//! the actor until the shutdown signal; then stops everything and releases the store.

use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::actor::{self, Actor, Exec, Input};
use crate::config::Config;
use crate::remote::{API_FILE_NAME, ApiInfo, TOKEN_FILE_NAME};
use crate::{Error, Node};

/// File in the data dir listing the addresses of members this node met (`ADDR/p2p/PEER_ID`, one a line, rewritten
/// as the node learns them): dialed at start, so a node rejoins the mesh without the node that invited it.
pub const MEMBERS_FILE_NAME: &str = "members";
/// Member addresses kept in [`MEMBERS_FILE_NAME`].
pub const MAX_REMEMBERED_MEMBER_ADDRS: usize = 64;

/// File in the data dir listing addresses dialed at every start, one multiaddr a line: the bootstrap addresses of
/// the ticket this node joined with, so a restarted node finds its federation again without flags.
pub const BOOTSTRAP_FILE_NAME: &str = "bootstrap";
/// How long a starting node waits for a CLI command that holds the store (run just before the node took it).
pub const STORE_WAIT_MS: u64 = 10_000;

/// Errors that stop the daemon.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The node could not be opened.
    #[error(transparent)]
    Node(Box<Error>),
    /// Another process kept the store locked.
    #[error(
        "the store in {dir} stayed locked by another process for {STORE_WAIT_MS} ms: is another `growthmesh node` running on this data dir?"
    )]
    Locked {
        /// The data dir.
        dir: String,
    },
    /// The node belongs to no federation and has no invite to redeem.
    #[error(
        "this node belongs to no federation: run `federation create`, `registry import` a bundle, or `join` a ticket"
    )]
    NoFederation,
    /// The invite waiting in the data dir is unusable.
    #[error("the invite ticket in the data dir is unusable: {0}")]
    Ticket(#[from] crate::invite::TicketError),
    /// A listen or bootstrap address is invalid.
    #[error("{field}: `{value}` is not a multiaddr: {detail}")]
    Address {
        /// The setting.
        field: &'static str,
        /// The value.
        value: String,
        /// Why.
        detail: String,
    },
    /// The network failed to start.
    #[error("network: {0}")]
    Net(#[from] net::Error),
    /// The API could not bind or serve, or a data dir file could not be written.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
}

impl From<Error> for DaemonError {
    fn from(error: Error) -> Self {
        Self::Node(Box::new(error))
    }
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DaemonError {
    let what = what.into();
    move |source| DaemonError::Io { what, source }
}

fn parse_addrs(field: &'static str, values: &[String]) -> Result<Vec<net::Multiaddr>, DaemonError> {
    values
        .iter()
        .map(|value| {
            value
                .parse()
                .map_err(
                    |e: <net::Multiaddr as std::str::FromStr>::Err| DaemonError::Address {
                        field,
                        value: value.clone(),
                        detail: e.to_string(),
                    },
                )
        })
        .collect()
}

/// Runs the node in `dir` until `shutdown` resolves.
pub async fn run(
    dir: &Path,
    mut config: Config,
    exec: Exec,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    let mut node = open_node(dir).await?;
    let ticket = actor::pending_ticket(&node).transpose()?;
    if let Some(ticket) = &ticket {
        let federation: registry::FederationId =
            ticket.body.federation.parse().map_err(Error::from)?;
        if node.replica().federation().is_none() {
            node.adopt(federation)?;
        }
        remember_bootstrap(dir, &ticket.body.bootstrap)?;
    }
    for addr in remembered_bootstrap(dir) {
        if !config.bootstrap_addrs.contains(&addr) {
            config.bootstrap_addrs.push(addr);
        }
    }
    let federation = node
        .replica()
        .federation()
        .ok_or(DaemonError::NoFederation)?;
    let listener = tokio::net::TcpListener::bind(config.api_addr)
        .await
        .map_err(io(format!("binding the API to {}", config.api_addr)))?;
    let api_addr = listener
        .local_addr()
        .map_err(io("reading the API address"))?;
    let token = hex::encode(identity::Keypair::generate().secret_bytes());
    write_private(&dir.join(TOKEN_FILE_NAME), token.as_bytes())?;
    let info = ApiInfo {
        addr: api_addr,
        pid: std::process::id(),
    };
    std::fs::write(
        dir.join(API_FILE_NAME),
        serde_json::to_vec(&info).expect("api info serializes"),
    )
    .map_err(io("writing api.json"))?;

    let net_config = net::Config {
        listen_addrs: parse_addrs("--listen", &config.listen_addrs)?,
        bootstrap_addrs: parse_addrs("--bootstrap", &config.bootstrap_addrs)?,
        mdns: config.mdns,
        relay_server: config.relay_server,
        federation_id: federation.to_hex(),
        limits: config.limits.clone(),
    };
    let mut bootstrap = net_config.bootstrap_addrs.clone();
    for addr in remembered_members(dir) {
        if !bootstrap.contains(&addr) {
            bootstrap.push(addr);
        }
    }
    let keypair = net::Keypair::from_secret_seed(node.keypair().secret_bytes());
    let (client, mut events) = net::spawn(keypair, net_config)?;
    tracing::info!(peer = %client.local_peer_id(), api = %api_addr, federation = %federation, "node started");

    let (inbox, inbox_rx) = mpsc::channel(actor::INBOX_CAPACITY);
    let forward = inbox.clone();
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            if forward.send(Input::Net(event)).await.is_err() {
                break;
            }
        }
    });
    let ticker = inbox.clone();
    let tick = Duration::from_millis(config.tick_ms.max(10));
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(tick);
        loop {
            interval.tick().await;
            if ticker.send(Input::Tick).await.is_err() {
                break;
            }
        }
    });
    for addr in bootstrap {
        let client = client.clone();
        tokio::spawn(async move {
            if let Err(error) = client.dial(addr.clone()).await {
                tracing::warn!(%addr, %error, "bootstrap dial failed");
            }
        });
    }
    let actor = Actor::new(
        node,
        client.clone(),
        tokio::runtime::Handle::current(),
        inbox.clone(),
        config,
        exec,
        ticket,
    );
    let features = actor.features();
    let sources = actor.sources();
    let actor_thread = std::thread::Builder::new()
        .name("growthmesh-node".into())
        .spawn(move || actor.run(inbox_rx))
        .map_err(io("starting the node thread"))?;

    let app = crate::api::router(crate::api::ApiState {
        inbox: inbox.clone(),
        token,
        sources,
        features,
        streams: Default::default(),
        app_requests: Default::default(),
    });
    let (stop_api, api_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = api_stopped.await;
            })
            .await
    });
    shutdown.await;
    tracing::info!("shutting down");
    let _ = std::fs::remove_file(dir.join(API_FILE_NAME));
    let _ = stop_api.send(());
    let _ = inbox.send(Input::Shutdown).await;
    let node = tokio::task::spawn_blocking(move || actor_thread.join())
        .await
        .ok()
        .and_then(Result::ok);
    drop(node);
    let _ = tokio::time::timeout(Duration::from_secs(2), client.shutdown()).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
    Ok(())
}

/// Opens the node, waiting while another process holds the store: a CLI command that found no running node and
/// opened the store itself just before this node started. sled says "locked" only in its message.
async fn open_node(dir: &Path) -> Result<Node, DaemonError> {
    let deadline = Instant::now() + Duration::from_millis(STORE_WAIT_MS);
    loop {
        match Node::open(dir) {
            Err(Error::Store(ref error)) if error.is_locked() => {
                if Instant::now() >= deadline {
                    return Err(DaemonError::Locked {
                        dir: dir.display().to_string(),
                    });
                }
                tracing::info!("the store is held by another process; waiting");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return Ok(other?),
        }
    }
}

/// The member addresses remembered in the data dir (unreadable lines are skipped).
fn remembered_members(dir: &Path) -> Vec<net::Multiaddr> {
    std::fs::read_to_string(dir.join(MEMBERS_FILE_NAME))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.trim().parse().ok())
        .take(MAX_REMEMBERED_MEMBER_ADDRS)
        .collect()
}

/// Rewrites the data dir's member address file with `book` (atomically: a crash leaves the old file or the new).
pub(crate) fn remember_members(
    dir: &Path,
    book: &[(net::PeerId, Vec<net::Multiaddr>)],
) -> std::io::Result<()> {
    let mut lines = Vec::new();
    for (peer, addrs) in book {
        for addr in addrs {
            let text = addr.to_string();
            if text.contains("/p2p/") {
                lines.push(text);
            } else {
                lines.push(format!("{text}/p2p/{peer}"));
            }
        }
    }
    lines.sort();
    lines.dedup();
    lines.truncate(MAX_REMEMBERED_MEMBER_ADDRS);
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let path = dir.join(MEMBERS_FILE_NAME);
    if std::fs::read_to_string(&path).is_ok_and(|old| old == text) {
        return Ok(());
    }
    let temporary = dir.join(format!("{MEMBERS_FILE_NAME}.tmp"));
    std::fs::write(&temporary, text)?;
    std::fs::rename(temporary, path)
}

/// The addresses in the data dir's bootstrap file.
fn remembered_bootstrap(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join(BOOTSTRAP_FILE_NAME))
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Adds `addrs` to the data dir's bootstrap file.
fn remember_bootstrap(dir: &Path, addrs: &[String]) -> Result<(), DaemonError> {
    let mut known = remembered_bootstrap(dir);
    let before = known.len();
    for addr in addrs {
        if !known.contains(addr) {
            known.push(addr.clone());
        }
    }
    if known.len() == before {
        return Ok(());
    }
    let text: String = known.iter().map(|a| format!("{a}\n")).collect();
    std::fs::write(dir.join(BOOTSTRAP_FILE_NAME), text)
        .map_err(io(format!("writing {BOOTSTRAP_FILE_NAME}")))
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), DaemonError> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .map_err(io(format!("writing {}", path.display())))?;
    file.write_all(bytes)
        .map_err(io(format!("writing {}", path.display())))?;
    Ok(())
}
