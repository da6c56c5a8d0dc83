//! `lamina gateway --config FILE`: the gateway (`lamina-gateway`) on a socket until
//! SIGTERM or Ctrl-C; SIGHUP reloads the file (a bad one is refused and the old one kept);
//! `--check` validates the configuration and exits; `lamina gateway report LOG` summarises
//! a request log.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use lamina_gateway::config::Config;
use lamina_gateway::{Gateway, Live};
use std::net::SocketAddr;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct GatewayArgs {
    #[command(subcommand)]
    pub command: Option<GatewayCommand>,
    /// The configuration file (TOML): backends, model routes, prices, keys — see docs/gateway.md.
    #[arg(long, short, required = true)]
    pub config: Option<PathBuf>,
    /// Check the configuration (and that every key's environment variable is set), print a
    /// summary and exit.
    #[arg(long)]
    pub check: bool,
    /// Listen here instead of the configuration's `listen` (port 0: any free port).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
}

fn load(path: &Path) -> Result<Config, lamina_gateway::config::ConfigError> {
    let mut config = Config::load(path)?;
    config.resolve_secrets(|var| std::env::var(var).ok())?;
    Ok(config)
}

/// Reloads the configuration on every SIGHUP.
async fn reload_on_hangup(live: Arc<Live>, path: PathBuf) {
    #[cfg(unix)]
    {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else { return };
        while hup.recv().await.is_some() {
            let result = load(&path).map_err(anyhow::Error::from).and_then(|c| live.reload(c).map_err(anyhow::Error::from));
            match result {
                Ok(()) => eprintln!("lamina gateway: reloaded {}", path.display()),
                Err(e) => eprintln!("lamina gateway: reload refused, the previous configuration stays in force: {e:#}"),
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (live, path);
}

#[derive(Subcommand, Debug)]
pub enum GatewayCommand {
    /// Summarise a request log: spend, tokens, latency percentiles, errors, fallbacks and
    /// cache hits by model and by key.
    Report {
        /// The log (the `log` file of the gateway's configuration).
        log: PathBuf,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn report(log: &Path, json: bool) -> Result<()> {
    let context = || format!("reading the request log {}", log.display());
    let r = if lamina_gateway::log::is_sqlite(log) {
        anyhow::ensure!(log.is_file(), "{}: no such file", log.display());
        let lines = lamina_gateway::log::sqlite_records(log).map_err(anyhow::Error::msg).with_context(context)?;
        lamina_gateway::report::summarize(lines.as_bytes()).with_context(context)?
    } else {
        let file = std::fs::File::open(log).with_context(context)?;
        lamina_gateway::report::summarize(std::io::BufReader::new(file)).with_context(context)?
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print!("{}", r.render());
    }
    Ok(())
}

pub fn run(args: GatewayArgs) -> Result<()> {
    if let Some(GatewayCommand::Report { log, json }) = &args.command {
        return report(log, *json);
    }
    let path = args.config.clone().context("--config FILE is required")?;
    let mut config = load(&path)?;
    if let Some(l) = args.listen {
        config.listen = l;
    }
    if args.check {
        println!("{}", config.summary());
        return Ok(());
    }
    let handle = lamina_gateway::metrics::prometheus_builder().install_recorder().context("installing the metrics recorder")?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().context("starting the async runtime")?;
    runtime.block_on(async move {
        let fleet = match &config.state {
            Some(url) => Some(
                lamina_gateway::fleet::Fleet::connect(url, &config.state_prefix, std::time::Duration::from_secs(5))
                    .await
                    .with_context(|| format!("connecting to the shared state in {}", path.display()))?,
            ),
            None => None,
        };
        let live = Arc::new(Live::new(Gateway::new(config, Some(handle), fleet)?));
        let gateway = live.get();
        let addr = gateway.config.listen;
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("listening on {addr}"))?;
        let local = listener.local_addr()?;
        let routes: Vec<&str> = gateway.config.models.iter().map(|m| m.name.as_str()).collect();
        eprintln!("lamina gateway: listening on http://{local} — routes: {} — backends: {}", routes.join(", "), gateway.config.backends.len());
        drop(gateway);
        tokio::spawn(reload_on_hangup(live.clone(), path));
        lamina_gateway::serve(live, listener, super::serve::shutdown_signal("lamina gateway")).await.context("serving")?;
        eprintln!("lamina gateway: stopped");
        Ok(())
    })
}
