//! `runloom token create | list | revoke`: API bearer tokens in the store named by the config.

use super::plugin::{print_json, print_table};
use super::serve::open_store;
use super::{ExitCode, Failure, Outcome};
use crate::api::Scope;
use crate::config::Config;
use clap::Subcommand;

/// `runloom token …`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print its secret (once: only its hash is stored).
    Create {
        /// What it is for, e.g. `alertmanager` or `ci`.
        #[arg(long)]
        name: String,
        /// What it allows (repeatable): `read` (GET routes, /metrics), `run` (read, and
        /// starting and cancelling runs), `admin` (everything), `alert` (only /hooks/…).
        #[arg(long = "scope", required = true, value_parser = |s: &str| s.parse::<Scope>())]
        scopes: Vec<Scope>,
    },
    /// List tokens (never their secrets).
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by id; the server refuses it within seconds.
    Revoke {
        /// Token id, as `runloom token list` shows it.
        id: String,
    },
}

pub(super) async fn run(config: &Config, command: TokenCommand) -> Outcome {
    let store = open_store(config).await?;
    match command {
        TokenCommand::Create { name, scopes } => {
            let name = name.trim().to_string();
            if name.is_empty() {
                return Err(Failure::new(ExitCode::Usage, "`--name` is empty"));
            }
            let mut names: Vec<String> = Vec::new();
            for s in scopes {
                if !names.iter().any(|n| n == s.as_str()) {
                    names.push(s.as_str().to_string());
                }
            }
            let token = store.create_token(&name, &names).await?;
            // The secret alone on stdout, so `$(runloom token create …)` captures it.
            println!("{}", token.secret);
            eprintln!(
                "created token {} `{name}` with scope {}; the secret above is not shown again",
                token.record.id,
                names.join(", ")
            );
            Ok(ExitCode::Success)
        }
        TokenCommand::List { json } => {
            let tokens = store.list_tokens().await?;
            if json {
                print_json(&serde_json::to_value(&tokens).unwrap_or_default(), false);
                return Ok(ExitCode::Success);
            }
            let when = |ms: Option<i64>| ms.map(super::runs::local_time).unwrap_or_default();
            let rows: Vec<[String; 6]> = tokens
                .iter()
                .map(|t| {
                    [
                        t.id.clone(),
                        t.name.clone(),
                        t.scopes.join(","),
                        when(Some(t.created_at)),
                        when(t.last_used_at),
                        when(t.revoked_at),
                    ]
                })
                .collect();
            print_table(
                &["ID", "NAME", "SCOPES", "CREATED", "LAST USED", "REVOKED"],
                &rows,
            );
            Ok(ExitCode::Success)
        }
        TokenCommand::Revoke { id } => match store.revoke_token(&id).await? {
            Some(t) => {
                println!("revoked token {} `{}`", t.id, t.name);
                Ok(ExitCode::Success)
            }
            None => Err(Failure::new(ExitCode::Usage, format!("no token `{id}`"))),
        },
    }
}
