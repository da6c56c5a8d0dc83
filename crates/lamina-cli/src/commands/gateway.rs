//! `lamina gateway --config FILE`: the gateway (`lamina-gateway`) on a socket until
//! SIGTERM or Ctrl-C; `--check` validates the configuration and exits.

use anyhow::{Context, Result};
use clap::Args;
use lamina_gateway::config::Config;
use lamina_gateway::Gateway;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Args, Debug)]
pub struct GatewayArgs {
    /// The configuration file (TOML): backends, model routes, prices, keys — see docs/gateway.md.
    #[arg(long, short)]
    pub config: PathBuf,
    /// Check the configuration (and that every key's environment variable is set), print a
    /// summary and exit.
    #[arg(long)]
    pub check: bool,
    /// Listen here instead of the configuration's `listen` (port 0: any free port).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
}

pub fn run(args: GatewayArgs) -> Result<()> {
    let mut config = Config::load(&args.config)?;
    config.resolve_secrets(|var| std::env::var(var).ok())?;
    if let Some(l) = args.listen {
        config.listen = l;
    }
    if args.check {
        println!("{}", config.summary());
        return Ok(());
    }
    let handle = lamina_gateway::metrics::prometheus_builder().install_recorder().context("installing the metrics recorder")?;
    let gateway = Arc::new(Gateway::new(config, Some(handle))?);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().context("starting the async runtime")?;
    runtime.block_on(async move {
        let addr = gateway.config.listen;
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("listening on {addr}"))?;
        let local = listener.local_addr()?;
        let routes: Vec<&str> = gateway.config.models.iter().map(|m| m.name.as_str()).collect();
        eprintln!("lamina gateway: listening on http://{local} — routes: {} — backends: {}", routes.join(", "), gateway.config.backends.len());
        lamina_gateway::serve(gateway, listener, super::serve::shutdown_signal("lamina gateway")).await.context("serving")?;
        eprintln!("lamina gateway: stopped");
        Ok(())
    })
}
