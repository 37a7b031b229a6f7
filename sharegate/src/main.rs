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

mod check;
mod cli;
mod client;
mod compose;
mod doctor;
mod edge;
mod offline;

use anyhow::Result;
use clap::Parser;
use cli::{ApiArgs, CheckConfigCmd, Cli, ClientKeys, Cmd};
use client::{Answer, ApiClient};
use std::process::ExitCode;

/// mimalloc for every allocation of the process (see the note in Cargo.toml).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<ExitCode> {
    let cli = Cli::parse();
    // One runtime for every command; the offline ones simply never await.
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(run(cli.cmd))
}

async fn run(cmd: Cmd) -> Result<ExitCode> {
    match cmd {
        Cmd::Serve(a) => long_running(compose::serve(a)).await,
        Cmd::Dev(a) => long_running(compose::dev(a)).await,
        Cmd::Edge(a) => long_running(edge::run(a)).await,
        Cmd::Mint(m) => api(&m.api, async |c| c.mint_link(&m.request()).await).await,
        Cmd::Revoke(r) => {
            let key = r.idempotency_key.as_deref();
            api(&r.api, async |c| c.revoke(&r.request(), key).await).await
        }
        Cmd::Apikeys(k) => api(&k.api, async |c| c.create_api_key(&k.request()).await).await,
        Cmd::Share(s) => api(&s.api, async |c| c.create_share(&s.request()).await).await,
        Cmd::Diagnose(d) => api(&d.api, async |c| c.diagnose(&d.request()).await).await,
        Cmd::Keys(ClientKeys::Rotate(a)) => api(&a, async |c| c.rotate_keys().await).await,
        Cmd::Keys(ClientKeys::List(a)) => api(&a, async |c| c.list_keys().await).await,
        Cmd::Audit(q) => api(&q.api, async |c| c.audit(&q.query()).await).await,
        Cmd::Access(a) => api(&a.api, async |c| c.put_access(&a.asset, &a.request()).await).await,
        Cmd::Invalidate(i) => {
            let key = i.idempotency_key.as_deref();
            api(&i.api, async |c| c.invalidate(&i.request(), key).await).await
        }
        Cmd::CheckConfig(CheckConfigCmd::Serve(a)) => Ok(check::serve(&a)),
        Cmd::CheckConfig(CheckConfigCmd::Edge(a)) => Ok(check::edge(&a)),
        Cmd::Doctor(a) => doctor::run(a).await,
        Cmd::Probe(p) => Ok(probe(&p).await),
        Cmd::Demo(a) => offline::demo(a).await,
        Cmd::Keygen => offline::keygen(),
        Cmd::Token(t) => offline::token(t),
    }
}

/// A server command (`serve`, `dev`, `edge`): with tracing, until it fails or is interrupted.
async fn long_running(server: impl Future<Output = Result<()>>) -> Result<ExitCode> {
    init_tracing();
    server.await?;
    Ok(ExitCode::SUCCESS)
}

/// An API command: one call with the key from `SHAREGATE_API_KEY`, its answer printed.
async fn api(args: &ApiArgs, call: impl AsyncFnOnce(&ApiClient) -> Result<Answer>) -> Result<ExitCode> {
    let client = ApiClient::from_env(&args.api)?;
    Ok(print(call(&client).await?))
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

/// `sharegate probe <url>`: a container health check without a shell or curl in the image.
async fn probe(p: &cli::ProbeArgs) -> ExitCode {
    let ok = reqwest::Client::builder()
        .timeout(std::time::Duration::from_millis(p.timeout_ms))
        .build()
        .ok()
        .map(|c| c.get(&p.url).send());
    let ok = match ok {
        Some(send) => send.await.is_ok_and(|r| r.status().is_success()),
        None => false,
    };
    if ok {
        ExitCode::SUCCESS
    } else {
        eprintln!("sharegate probe: {} is not healthy", p.url);
        ExitCode::FAILURE
    }
}

/// Resolves on SIGTERM (container runtimes, systemd, Kubernetes) or SIGINT (Ctrl-C): servers then stop accepting and
/// finish the requests in flight. Without it, as PID 1 in a container the process would ignore SIGTERM and be killed
/// at the end of the grace period, mid-request.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down: finishing requests in flight");
}

fn init_tracing() {
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        // Colour codes only for a person at a terminal: journald, container logs and files get plain lines.
        .with_ansi(std::io::stdout().is_terminal())
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .try_init();
}
