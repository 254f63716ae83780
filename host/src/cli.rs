//! The command line: `serve`, `token reset`, `plugin check`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::config::{Config, Overrides};
use crate::state::AppState;
use crate::store::Store;

#[derive(Parser)]
#[command(
    name = "openidcs",
    version,
    about = "VM control panel with WebAssembly engine plugins"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Start the API server.
    Serve {
        #[command(flatten)]
        location: Location,
        /// Listen address, overriding `[server] listen`.
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Admin token operations.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Plugin operations.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
}

#[derive(Args)]
pub struct Location {
    /// The config file (default `openidcs.toml`; may be absent).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data directory, overriding `[server] data_dir`.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Replace the admin token and print the new one (only it, on stdout).
    /// Works whether or not a server runs on the data dir; a running server
    /// honours the new token at once.
    Reset {
        #[command(flatten)]
        location: Location,
    },
}

#[derive(Subcommand)]
pub enum PluginCommand {
    /// Report a component's WIT version, exports and imports, or why it would be refused.
    Check { file: PathBuf },
}

impl Location {
    fn load(&self, listen: Option<SocketAddr>) -> anyhow::Result<(Config, PathBuf, Overrides)> {
        let path = self
            .config
            .clone()
            .unwrap_or_else(|| PathBuf::from("openidcs.toml"));
        let overrides = Overrides {
            listen,
            data_dir: self.data_dir.clone(),
        };
        let config = Config::load(&path, self.config.is_some(), &overrides)?;
        Ok((config, path, overrides))
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { location, listen } => {
            let (config, path, overrides) = location.load(listen)?;
            serve(config, path, overrides).await
        }
        Command::Token {
            command: TokenCommand::Reset { location },
        } => {
            let (config, _, _) = location.load(None)?;
            let store = Store::open(&config.database_path()).context("opening the database")?;
            let token = crate::auth::reset_token(&store).context("storing the new token")?;
            println!("{token}");
            Ok(())
        }
        Command::Plugin {
            command: PluginCommand::Check { file },
        } => {
            let report = crate::plugin::check_file(&file)?;
            print!("{report}");
            Ok(())
        }
    }
}

async fn serve(config: Config, config_path: PathBuf, overrides: Overrides) -> anyhow::Result<()> {
    let listen = config.server.listen;
    let state = AppState::start(config, config_path, overrides).await?;
    if let Some(token) = crate::auth::ensure_token(&state.store)? {
        // Printed once: only the hash is stored.
        println!("admin token (shown once, store it now): {token}");
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let address = listener.local_addr()?;
    let _ = state.bound_address.set(address);
    println!("openidcs listening on http://{address}");
    tracing::info!("listening on http://{address}");
    tokio::spawn(crate::service::poller::run(state.clone()));
    let header_read_timeout = Duration::from_secs(state.config().server.header_read_timeout_s);
    let router = crate::api::router(state);
    crate::http::serve(listener, router, header_read_timeout, shutdown_signal()).await;
    Ok(())
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => {
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
