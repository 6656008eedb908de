//! `init`, `federation create`, and `member add|revoke|list`.

use anyhow::Context as _;
use clap::{Args, Subcommand};
use model::{Member, Revocation, Role};
use registry::Op;

use node::Node;

use crate::context::{Context, input, now_ms, slug};
use crate::exit::{self, input_error};

/// Arguments of `init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Display name of this node.
    #[arg(long)]
    pub name: String,
}

/// `federation` subcommands.
#[derive(Debug, Subcommand)]
pub enum FederationCommand {
    /// Found a federation with this node's key as the first council member.
    Create {
        /// Federation name.
        #[arg(long)]
        name: String,
    },
}

/// `member` subcommands.
#[derive(Debug, Subcommand)]
pub enum MemberCommand {
    /// Admit a member (council only).
    Add {
        /// The member's public key, as `init` printed it.
        public_key: String,
        /// The member's role.
        #[arg(long, value_enum)]
        role: Role,
        /// Display name.
        #[arg(long)]
        name: String,
        /// Pod (for role pod; for role council, the pod the member sits for, whose experiments it may not vote on)
        /// or organisation (for role partner); defaults to the name for pods and partners.
        #[arg(long, alias = "org")]
        pod: Option<String>,
    },
    /// Revoke a member for good (council only).
    Revoke {
        /// The member's public key.
        public_key: String,
        /// Why.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// List members.
    List,
}

/// Runs `init`.
pub fn init(context: &Context, node: &mut Node, args: InitArgs) -> anyhow::Result<u8> {
    input(model::validate_text(
        "--name",
        &args.name,
        model::MAX_TITLE_BYTES,
    ))?;
    std::fs::write(context.data_dir.join(node::NAME_FILE), &args.name)
        .context("writing the node name")?;
    let mut info = serde_json::to_value(node.identity())?;
    info["name"] = serde_json::Value::from(args.name);
    context.print(&info, |i| {
        outln!(
            context,
            "public key: {}",
            i["public_key"].as_str().unwrap_or_default()
        );
        outln!(
            context,
            "peer id:    {}",
            i["peer_id"].as_str().unwrap_or_default()
        );
    })?;
    Ok(exit::OK)
}

/// Runs a `federation` subcommand.
pub fn federation(
    context: &Context,
    node: &mut Node,
    command: FederationCommand,
) -> anyhow::Result<u8> {
    match command {
        FederationCommand::Create { name } => {
            let outcome = node.create_federation(&name, now_ms()).map_err(map_write)?;
            let mut info = serde_json::to_value(node.identity())?;
            info["change"] = outcome.change.clone().into();
            info["heads"] = serde_json::to_value(&outcome.heads)?;
            info["name"] = name.into();
            context.print(&info, |i| {
                outln!(
                    context,
                    "federation: {}",
                    i["federation"].as_str().unwrap_or_default()
                );
                outln!(
                    context,
                    "public key: {}",
                    i["public_key"].as_str().unwrap_or_default()
                );
                outln!(
                    context,
                    "peer id:    {}",
                    i["peer_id"].as_str().unwrap_or_default()
                );
            })?;
            Ok(exit::OK)
        }
    }
}

/// Runs a `member` subcommand.
pub fn member(context: &Context, node: &mut Node, command: MemberCommand) -> anyhow::Result<u8> {
    match command {
        MemberCommand::Add {
            public_key,
            role,
            name,
            pod,
        } => {
            let key: identity::PublicKey = input(public_key.parse())?;
            input(model::validate_text(
                "--name",
                &name,
                model::MAX_TITLE_BYTES,
            ))?;
            let scope = match role {
                Role::Pod | Role::Partner => {
                    let scope = pod.unwrap_or_else(|| slug(&name));
                    input(model::validate_slug("--pod", &scope))?;
                    Some(scope)
                }
                // A council member may sit for a pod: its votes on that pod's experiments do not count.
                Role::Council => match pod.filter(|p| !p.is_empty()) {
                    Some(pod) => {
                        input(model::validate_slug("--pod", &pod))?;
                        Some(pod)
                    }
                    None => None,
                },
                Role::Steward => None,
            };
            let member = Member {
                public_key: key.to_hex(),
                name,
                role,
                scope,
                admitted_by: node.identity().public_key,
                admitted_at_ms: now_ms(),
                revoked: false,
            };
            let outcome = node
                .write(&Op::AddMember(member), now_ms())
                .map_err(map_write)?;
            context.print_write(&outcome, "member added")
        }
        MemberCommand::Revoke { public_key, reason } => {
            let key: identity::PublicKey = input(public_key.parse())?;
            if !node.view().members.contains_key(&key.to_hex()) {
                return Err(input_error(format!("PUBLIC_KEY: {key} is not a member")));
            }
            let revocation = Revocation {
                by: node.identity().public_key,
                reason,
                at_ms: now_ms(),
            };
            let op = Op::RevokeMember {
                public_key: key.to_hex(),
                revocation,
            };
            let outcome = node.write(&op, now_ms()).map_err(map_write)?;
            context.print_write(&outcome, "member revoked")
        }
        MemberCommand::List => {
            let view = node.view();
            let members: Vec<serde_json::Value> = view
                .members
                .values()
                .map(|m| {
                    let mut value = serde_json::to_value(m).expect("members serialize");
                    let equivocations = view.equivocations.get(&m.public_key);
                    value["equivocating"] = serde_json::Value::Bool(equivocations.is_some());
                    value["equivocations"] =
                        serde_json::to_value(equivocations.cloned().unwrap_or_default())
                            .expect("equivocations serialize");
                    value["void"] =
                        serde_json::Value::Bool(view.void_admissions.contains_key(&m.public_key));
                    value
                })
                .collect();
            context.print(&serde_json::json!({ "members": members }), |_| {
                let founder = view.federation.as_ref().map(|f| f.founder.as_str());
                // In the order they joined (the founder first), not by key.
                let mut joined: Vec<&model::Member> = view.members.values().collect();
                joined.sort_by(|a, b| {
                    (a.admitted_at_ms, &a.name, &a.public_key).cmp(&(
                        b.admitted_at_ms,
                        &b.name,
                        &b.public_key,
                    ))
                });
                let rows: Vec<Vec<String>> = joined
                    .iter()
                    .map(|m| {
                        let state = if view.void_admissions.contains_key(&m.public_key) {
                            "void"
                        } else if m.revoked || view.revocations.contains_key(&m.public_key) {
                            "revoked"
                        } else if view.equivocations.contains_key(&m.public_key) {
                            "equivocating"
                        } else {
                            "active"
                        };
                        let mut name = m.name.clone();
                        if founder == Some(m.public_key.as_str()) {
                            name.push_str(" (founder)");
                        }
                        vec![
                            name,
                            m.role.to_string(),
                            m.scope.clone().unwrap_or_else(|| "-".into()),
                            state.to_owned(),
                            model::calendar::format_date(m.admitted_at_ms),
                            m.public_key.clone(),
                        ]
                    })
                    .collect();
                context.table(&["NAME", "ROLE", "POD", "STATE", "ADMITTED", "KEY"], &rows);
                for m in view.members.values() {
                    for proof in view.equivocations.get(&m.public_key).into_iter().flatten() {
                        outln!(
                            context,
                            "{} equivocated in {} at number {} (epoch {}): {}",
                            m.name,
                            proof.doc,
                            proof.seq,
                            proof.epoch,
                            proof.changes.join(" and ")
                        );
                    }
                }
            })?;
            Ok(exit::OK)
        }
    }
}

/// Maps node write errors: invalid fields are input errors (exit 2), the rest are failures (exit 1).
pub fn map_write(error: node::Error) -> anyhow::Error {
    match error {
        node::Error::Registry(registry::Error::Invalid(e)) => input_error(e.to_string()),
        other => anyhow::Error::new(other),
    }
}
