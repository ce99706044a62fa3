//! Cluster-only commands: `boundkv status` on a cluster, `boundkv member add|remove`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use boundkv_client::{NodeStatus, Role};
use clap::{Args, Subcommand};

use crate::fmt;
use crate::target::Cluster;

/// Prints each node's clock as it reads it (`boundkv clock --clock cluster`: the cluster clock
/// lives in the nodes): the source, the leader it follows, the last round trip, the status and
/// the bound. Exit status 0 when every node answered with a usable clock.
pub(crate) fn print_clocks(c: &Cluster) -> anyhow::Result<ExitCode> {
    let seed = c.block_on(c.client.status())?;
    let mut all_usable = true;
    for m in &seed.members {
        let s = c.block_on(async {
            tokio::time::timeout(Duration::from_secs(2), c.client.status_of(m.id)).await
        });
        match s {
            Ok(Ok(s)) => {
                all_usable &= s.clock.problem.is_none();
                println!(
                    "node {:<3} {} ({}, ±{}){}",
                    s.id,
                    s.clock.source,
                    s.clock.status,
                    fmt::duration(s.clock.bound),
                    s.clock.problem.as_ref().map(|p| format!(" UNUSABLE: {p}")).unwrap_or_default(),
                );
            }
            Ok(Err(e)) => {
                all_usable = false;
                println!("node {:<3} UNREACHABLE   {e}", m.id);
            }
            Err(_) => {
                all_usable = false;
                println!("node {:<3} UNREACHABLE   no answer within 2 s", m.id);
            }
        }
    }
    Ok(if all_usable { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// Prints the cluster's members, leader and term, and each node's indexes and clock. Exit
/// status 0 when a leader is known.
pub(crate) fn print_status(c: &Cluster) -> anyhow::Result<ExitCode> {
    let seed = c.block_on(c.client.status())?;
    let statuses: Vec<(u64, Result<NodeStatus, String>)> = seed
        .members
        .iter()
        .map(|m| {
            let s = c.block_on(async {
                match tokio::time::timeout(Duration::from_secs(2), c.client.status_of(m.id)).await {
                    Ok(Ok(s)) => Ok(s),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("no answer within 2 s".to_string()),
                }
            });
            (m.id, s)
        })
        .collect();
    let leader = statuses.iter().find_map(|(_, s)| match s {
        Ok(s) if s.role == Role::Leader => Some((s.id, s.term)),
        _ => None,
    });
    match leader {
        Some((id, term)) => {
            println!("cluster  {} members; leader node {id}, term {term}", seed.members.len())
        }
        None => println!(
            "cluster  {} members; NO LEADER (an election may be under way)",
            seed.members.len()
        ),
    }
    for m in &seed.members {
        let s = statuses.iter().find(|(id, _)| *id == m.id).map(|(_, s)| s);
        match s {
            Some(Ok(s)) => {
                let lag = s.clock.latest.as_nanos().saturating_sub(s.closed_ts.as_nanos());
                println!(
                    "node {:<3} {:<13} clients {:<21} applied {:<8} commit {:<8} clock {} ({}, ±{}){}{}",
                    s.id,
                    s.role.to_string(),
                    m.client_address,
                    s.applied_index,
                    s.commit_index,
                    s.clock.source,
                    s.clock.status,
                    fmt::duration(s.clock.bound),
                    s.clock.problem.as_ref().map(|p| format!(" UNUSABLE: {p}")).unwrap_or_default(),
                    if s.role == Role::Leader {
                        format!(" lease {}", if s.lease_valid { "valid" } else { "LAPSED" })
                    } else {
                        format!(" follower reads lag {}", fmt::duration(Duration::from_nanos(lag)))
                    },
                );
                if !s.clock.leap.is_empty() {
                    println!("         leap seconds {}", s.clock.leap);
                }
                // What this node's peer clock checks measured of the others.
                for p in &s.clock.peers {
                    let sign = if p.offset_nanos < 0 { "-" } else { "+" };
                    println!(
                        "         clock of node {:<3} {sign}{} ±{} from node {}'s{}",
                        p.id,
                        fmt::duration(Duration::from_nanos(p.offset_nanos.unsigned_abs())),
                        fmt::duration(p.uncertainty),
                        s.id,
                        if p.consistent { "" } else { "  INCONSISTENT" },
                    );
                }
            }
            Some(Err(e)) => {
                println!("node {:<3} UNREACHABLE   clients {:<21} {e}", m.id, m.client_address)
            }
            None => println!("node {:<3} ?", m.id),
        }
    }
    Ok(if leader.is_some() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// `boundkv member add|remove`.
#[derive(Args, Debug)]
pub(crate) struct MemberCmd {
    #[command(subcommand)]
    action: MemberAction,
}

#[derive(Subcommand, Debug)]
enum MemberAction {
    /// Add a node: it joins as a learner, catches up, then becomes a voter (through a joint
    /// configuration). Start it first with `boundkv serve --id ID ...` and no --initial-cluster.
    Add {
        /// The member: `ID=PEER_ADDR/CLIENT_ADDR`, e.g. `4=127.0.0.1:7104/127.0.0.1:7004`; add
        /// `/smear` for a node started with `--leap smear` (the leader refuses a node whose
        /// leap policy differs from the membership's).
        member: String,
    },
    /// Remove a node (through a joint configuration). Removing the leader hands leadership over
    /// first.
    Remove {
        /// The node's id.
        id: u64,
    },
}

impl MemberCmd {
    pub(crate) fn run(&self, c: Cluster) -> anyhow::Result<ExitCode> {
        let members = match &self.action {
            MemberAction::Add { member } => {
                let m = boundkv_server::parse_member(member)?;
                c.block_on(c.client.add_member_with_leap(
                    m.id,
                    m.peer_address,
                    m.client_address,
                    m.leap.to_string(),
                ))?
            }
            MemberAction::Remove { id } => {
                if *id == 0 {
                    bail!("node ids start at 1");
                }
                c.block_on(c.client.remove_member(*id))?
            }
        };
        println!("members now:");
        for m in members {
            println!(
                "  node {} peers {} clients {} leap {}{}",
                m.id,
                m.peer_address,
                m.client_address,
                m.leap,
                if m.voter { "" } else { " (learner)" }
            );
        }
        Ok(ExitCode::SUCCESS)
    }
}
