//! `node` (the daemon), `status`, `peers`, `invite` and `join`.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use node::Node;
use node::invite::{Ticket, TicketBody};

use crate::context::{Context, input, now_ms, slug};
use crate::exit::{self, input_error};

/// Arguments of `node`.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// libp2p listen address; repeat (default from config: TCP and QUIC on every interface).
    #[arg(long)]
    pub listen: Vec<String>,
    /// Address of the local API, e.g. 127.0.0.1:7420.
    #[arg(long)]
    pub api: Option<std::net::SocketAddr>,
    /// Do not discover peers with mDNS.
    #[arg(long)]
    pub no_mdns: bool,
    /// Serve as a relay for members behind NAT (members only); for a node others can dial.
    #[arg(long)]
    pub relay_server: bool,
    /// Peer to dial at start (multiaddr, with or without /p2p/PEER_ID); repeat.
    #[arg(long)]
    pub bootstrap: Vec<String>,
    /// TOML config file (every setting optional; flags override it).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// Arguments of `invite`.
#[derive(Debug, Args)]
pub struct InviteArgs {
    /// Role granted.
    #[arg(long, value_enum)]
    pub role: model::Role,
    /// Display name of the new member.
    #[arg(long)]
    pub name: String,
    /// Pod or partner name (default: from the name).
    #[arg(long, alias = "org")]
    pub pod: Option<String>,
    /// Validity, e.g. 24h, 30m, 7d.
    #[arg(long, default_value = "24h")]
    pub expires: String,
}

/// Arguments of `join`.
#[derive(Debug, Args)]
pub struct JoinArgs {
    /// The ticket printed by `invite`.
    pub ticket: String,
}

/// Runs the daemon until SIGINT or SIGTERM.
pub fn run_node(data_dir: PathBuf, args: NodeArgs) -> anyhow::Result<u8> {
    let mut config = match &args.config {
        Some(path) => node::config::Config::load(path).map_err(|e| input_error(e.to_string()))?,
        None => node::config::Config::default(),
    };
    if !args.listen.is_empty() {
        config.listen_addrs = args.listen;
    }
    if let Some(api) = args.api {
        config.api_addr = api;
    }
    if args.no_mdns {
        config.mdns = false;
    }
    if args.relay_server {
        config.relay_server = true;
    }
    config.bootstrap_addrs.extend(args.bootstrap);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let exec: node::actor::Exec = std::sync::Arc::new(crate::exec_in_node);
    runtime.block_on(async move {
        node::daemon::run(&data_dir, config, exec, shutdown_signal())
            .await
            .map_err(|error| match error {
                node::daemon::DaemonError::Address { .. }
                | node::daemon::DaemonError::Ticket(_) => input_error(error.to_string()),
                other => anyhow::Error::new(other),
            })
    })?;
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    Ok(exit::OK)
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            (Ok(mut interrupt), Ok(mut terminate)) => {
                tokio::select! {
                    _ = interrupt.recv() => {}
                    _ = terminate.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `status`: identity, heads, and (when the node runs) peers and sync state.
pub fn status(context: &Context, node: &mut Node) -> anyhow::Result<u8> {
    let identity = node.identity();
    let network = context.network.clone().unwrap_or_default();
    let view = node.view();
    let own = identity.public_key.clone();
    // A revoked (or void) node knows it: it says so here and refuses its own writes with the reason.
    let standing = if view.void_admissions.contains_key(&own) {
        "void"
    } else {
        match view.members.get(&own) {
            None => "not a member",
            Some(member) if member.revoked => "revoked",
            Some(_) => "member",
        }
    };
    let equivocations = view.equivocations.get(&own).cloned().unwrap_or_default();
    let excluded = node.replica().excluded().count();
    let value = serde_json::json!({
        "running": context.network.is_some(),
        "standing": standing,
        "equivocations": equivocations,
        "excluded": excluded,
        "public_key": identity.public_key,
        "peer_id": identity.peer_id,
        "federation": identity.federation,
        "listen_addrs": network.listen_addrs,
        "member_addrs": network.member_addrs,
        "peers": network.peers,
        "heads": node.heads(),
        "changes": node.replica().len(),
        "pending": node.replica().pending_len(),
        "rejections": network.rejections,
        "sync_bytes_in": network.sync_bytes_in,
        "sync_bytes_out": network.sync_bytes_out,
        "round_trips": network.round_trips,
        "invite": network.invite,
        "reachability": network.nat.reachability,
        "external_addrs": network.nat.external_addrs,
        "relays": network.nat.relays,
        "connections": network.nat.connections,
    });
    context.print(&value, |v| {
        outln!(
            context,
            "node:       {} ({})",
            v["peer_id"].as_str().unwrap_or_default(),
            if v["running"] == true {
                "running"
            } else {
                "not running"
            }
        );
        outln!(
            context,
            "federation: {}",
            v["federation"].as_str().unwrap_or("-")
        );
        outln!(context, "standing:   {standing}");
        for proof in &equivocations {
            outln!(
                context,
                "warning:    this key signed two changes at number {} in {} (a copied data dir?): {}",
                proof.seq,
                proof.doc,
                proof.changes.join(" and ")
            );
        }
        outln!(
            context,
            "changes:    {} accepted, {} excluded, {} pending, {} heads",
            v["changes"],
            v["excluded"],
            v["pending"],
            node.heads().len()
        );
        for addr in &network.listen_addrs {
            outln!(context, "listening:  {addr}");
        }
        if context.network.is_some() {
            outln!(context, "reachable:  {}", network.nat.reachability);
        }
        for addr in &network.nat.external_addrs {
            outln!(context, "external:   {addr}");
        }
        for relay in &network.nat.relays {
            outln!(context, "relay:      {relay}");
        }
        for peer in &network.peers {
            outln!(
                context,
                "peer:       {} {:<8} {} (accepted {}, rejected {})",
                peer.peer_id,
                peer.role,
                peer.name,
                peer.accepted,
                peer.rejected
            );
        }
        for (reason, count) in &network.rejections {
            outln!(context, "rejected:   {count} {reason}");
        }
    })?;
    Ok(exit::OK)
}

/// `peers`: connected members.
pub fn peers(context: &Context) -> anyhow::Result<u8> {
    let network = context.network.clone().unwrap_or_default();
    context.print(
        &serde_json::json!({ "peers": network.peers, "running": context.network.is_some() }),
        |_| {
            if context.network.is_none() {
                outln!(
                    context,
                    "the node is not running (start it with `growthmesh node`)"
                );
            }
            let ago = |ms: Option<u64>| {
                ms.map_or_else(
                    || "never".to_owned(),
                    |ms| format!("{} s ago", (now_ms() as u64).saturating_sub(ms) / 1000),
                )
            };
            let rows: Vec<Vec<String>> = network
                .peers
                .iter()
                .map(|peer| {
                    vec![
                        peer.name.clone(),
                        peer.role.clone(),
                        ago(peer.last_sync_ms),
                        ago(peer.last_push_ms),
                        peer.accepted.to_string(),
                        peer.rejected.to_string(),
                        peer.peer_id.clone(),
                    ]
                })
                .collect();
            if context.network.is_some() {
                context.table(
                    &[
                        "NAME",
                        "ROLE",
                        "LAST PULL",
                        "LAST PUSH",
                        "ACCEPTED",
                        "REJECTED",
                        "PEER",
                    ],
                    &rows,
                );
            }
        },
    )?;
    Ok(exit::OK)
}

/// `invite`: a signed ticket for a new member, alone on stdout.
pub fn invite(context: &Context, node: &mut Node, args: InviteArgs) -> anyhow::Result<u8> {
    let role = args.role;
    input(model::validate_text(
        "--name",
        &args.name,
        model::MAX_TITLE_BYTES,
    ))?;
    let validity = node::invite::parse_duration_ms(&args.expires).ok_or_else(|| {
        input_error(format!(
            "--expires: `{}` is not a duration like 24h, 30m or 7d",
            args.expires
        ))
    })?;
    let scope = match role {
        model::Role::Pod | model::Role::Partner => {
            let scope = args.pod.unwrap_or_else(|| slug(&args.name));
            input(model::validate_slug("--pod", &scope))?;
            Some(scope)
        }
        _ => None,
    };
    match node.standing() {
        Some((model::Role::Council, _, false)) => {}
        _ => anyhow::bail!("only a council member may issue invites; this key is not one"),
    }
    let federation = node
        .identity()
        .federation
        .ok_or(registry::Error::NoFederation)?;
    // Our own addresses, then those of up to `MAX_TICKET_MEMBERS` other connected members: the joiner dials them
    // all and redeems with the first that answers, so it gets in while this node is away.
    let bootstrap: Vec<String> = context
        .network
        .as_ref()
        .map(|n| {
            n.listen_addrs
                .iter()
                .chain(&n.member_addrs)
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    if bootstrap.is_empty() {
        eprintln!(
            "warning: the node is not running, so the ticket names no address; the joiner needs --bootstrap"
        );
    }
    let mut nonce = [0u8; 16];
    rand::fill(&mut nonce);
    let body = TicketBody {
        federation,
        role,
        name: args.name,
        scope,
        bootstrap,
        expires_at_ms: now_ms() + validity,
        nonce: hex::encode(nonce),
        issuer: node.identity().public_key,
    };
    let ticket = Ticket::issue(body, node.keypair()).to_text();
    context.print(&serde_json::json!({ "ticket": ticket }), |_| {
        outln!(context, "{ticket}")
    })?;
    Ok(exit::OK)
}

/// `join`: records a ticket; the next `node` run redeems it.
pub fn join(context: &Context, node: &mut Node, args: JoinArgs) -> anyhow::Result<u8> {
    let ticket =
        Ticket::parse(&args.ticket, now_ms()).map_err(|e| anyhow::anyhow!("TICKET: {e}"))?;
    let federation: registry::FederationId = ticket.body.federation.parse()?;
    if let Some(current) = node.replica().federation()
        && current != federation
    {
        anyhow::bail!("TICKET: it is for federation {federation}, this node belongs to {current}");
    }
    node.adopt(federation)?;
    std::fs::write(
        node.dir().join(node::invite::TICKET_FILE_NAME),
        args.ticket.trim(),
    )
    .context("recording the ticket")?;
    let value = serde_json::json!({
        "federation": federation.to_hex(), "role": ticket.body.role, "name": ticket.body.name,
        "bootstrap": ticket.body.bootstrap, "expires_at_ms": ticket.body.expires_at_ms,
    });
    context.print(&value, |_| {
        outln!(
            context,
            "ticket recorded for federation {federation}; run `growthmesh node` to redeem it"
        )
    })?;
    Ok(exit::OK)
}
