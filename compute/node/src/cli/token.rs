//! `stagecast-node token`: development tokens signed with this node's key.

use std::process::ExitCode;

use clap::{Args, ValueEnum};
use stagecast_shared::token::{ALL_ANALYSES, Scope};

use super::edge::EdgeArgs;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Role {
    /// subscribe and cancel: what a browser watching an analysis needs
    Viewer,
    /// publish and node: what a node sending events and joining a pool needs
    Node,
    /// submit: what a backend queueing work at the edge needs
    Backend,
    /// admin, subscribe, cancel and publish: the node API and everything else
    Admin,
}

impl Role {
    fn scopes(self) -> &'static [Scope] {
        match self {
            Self::Viewer => &[Scope::Subscribe, Scope::Cancel],
            Self::Node => &[Scope::Publish, Scope::Node],
            Self::Backend => &[Scope::Submit],
            Self::Admin => &[
                Scope::Admin,
                Scope::Subscribe,
                Scope::Cancel,
                Scope::Publish,
            ],
        }
    }
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// What the token may do
    #[arg(value_enum)]
    pub role: Role,
    /// Analysis the token is for (repeat for several) [default: every analysis of the tenant]
    #[arg(long = "analysis")]
    pub analyses: Vec<String>,
    /// Lifetime in seconds
    #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(i64).range(1..=31_536_000))]
    pub ttl: i64,
    /// Subject (`sub`) [default: the node id]
    #[arg(long)]
    pub sub: Option<String>,
}

pub fn run(edge: &EdgeArgs, args: TokenArgs) -> anyhow::Result<ExitCode> {
    let mut identity = edge.identity()?;
    if let Some(sub) = args.sub {
        identity.node_id = sub;
    }
    let analyses: Vec<&str> = if args.analyses.is_empty() {
        vec![ALL_ANALYSES]
    } else {
        args.analyses.iter().map(String::as_str).collect()
    };
    let now_s = stagecast_compute::clock::now_s();
    println!(
        "{}",
        identity.token(args.role.scopes(), &analyses, now_s, args.ttl)?
    );
    Ok(ExitCode::SUCCESS)
}
