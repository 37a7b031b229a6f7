//! The `sharegate` command: the composition root of the control-plane library (`sharegate-control-plane`) and the
//! native edge (`sharegate-edge-native`).
//!
//! `serve` and `dev` put the service (and for `dev` an edge and the demo asset) together in one process; `edge` runs
//! the native edge; `mint`, `revoke`, `share`, ... call a running control plane's API; `demo`, `keygen` and `token`
//! work offline with a key from the environment. Nothing is decided here: decisions are the edge engine's and the
//! service's; this crate parses the command line, reads the environment and wires the pieces to sockets.
//!
//! Modules by job: [`cli`] what the command line accepts, [`client`] the typed API client, [`compose`] `serve` and
//! `dev`, [`edge`] every use of the native edge, [`offline`] the token tools.
#![forbid(unsafe_code)]

mod cli;
mod client;
mod compose;
mod edge;
mod offline;

use anyhow::Result;
use clap::Parser;
use cli::{Cli, ClientKeys, Cmd};
use client::{Answer, ApiClient};
use std::process::ExitCode;

fn main() -> Result<ExitCode> {
    let cli = Cli::parse();
    // One runtime for every command; the offline ones simply never await.
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(run(cli.cmd))
}

async fn run(cmd: Cmd) -> Result<ExitCode> {
    match cmd {
        Cmd::Serve(a) => {
            init_tracing();
            compose::serve(a).await.map(|()| ExitCode::SUCCESS)
        }
        Cmd::Dev(a) => {
            init_tracing();
            compose::dev(a).await.map(|()| ExitCode::SUCCESS)
        }
        Cmd::Edge(a) => {
            init_tracing();
            edge::run(a).await.map(|()| ExitCode::SUCCESS)
        }
        Cmd::Mint(m) => Ok(print(ApiClient::from_env(&m.api.api)?.mint_link(&m.request()).await?)),
        Cmd::Revoke(r) => {
            let client = ApiClient::from_env(&r.api.api)?;
            Ok(print(client.revoke(&r.request(), r.idempotency_key.as_deref()).await?))
        }
        Cmd::Apikeys(k) => Ok(print(
            ApiClient::from_env(&k.api.api)?.create_api_key(&k.request()).await?,
        )),
        Cmd::Share(s) => Ok(print(
            ApiClient::from_env(&s.api.api)?.create_share(&s.request()).await?,
        )),
        Cmd::Diagnose(d) => Ok(print(ApiClient::from_env(&d.api.api)?.diagnose(&d.request()).await?)),
        Cmd::Keys(ClientKeys::Rotate(a)) => Ok(print(ApiClient::from_env(&a.api)?.rotate_keys().await?)),
        Cmd::Keys(ClientKeys::List(a)) => Ok(print(ApiClient::from_env(&a.api)?.list_keys().await?)),
        Cmd::Audit(q) => Ok(print(ApiClient::from_env(&q.api.api)?.audit(&q.query()).await?)),
        Cmd::Demo(a) => offline::demo(a).await,
        Cmd::Keygen => offline::keygen(),
        Cmd::Token(t) => offline::token(t),
    }
}

/// Print the API's answer; an error status fails the command (the JSON error printed says why, the exit status tells
/// scripts).
fn print(answer: Answer) -> ExitCode {
    println!("{}", answer.pretty());
    if answer.status.is_success() {
        ExitCode::SUCCESS
    } else {
        eprintln!("sharegate: {}", answer.status);
        ExitCode::FAILURE
    }
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .try_init();
}
