//! The command line: `serve`, `token reset|create|list|revoke`, `plugin check`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::config::{Config, Overrides};
use crate::model::{Role, TokenCreate};
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
    /// Create a named token with a role and print it (only it, on stdout).
    Create {
        #[command(flatten)]
        location: Location,
        /// `[A-Za-z0-9_.-]{1,64}`, unique.
        #[arg(long)]
        name: String,
        /// admin, operator or read-only.
        #[arg(long)]
        role: String,
        /// Hosts it reaches, comma separated; none = every host.
        #[arg(long, value_delimiter = ',')]
        hosts: Vec<String>,
        /// Days until it stops working; none = never.
        #[arg(long)]
        expires_days: Option<u32>,
    },
    /// List the named tokens: name, role, hosts, created, expires, last used.
    List {
        #[command(flatten)]
        location: Location,
    },
    /// Revoke a named token.
    Revoke {
        #[command(flatten)]
        location: Location,
        name: String,
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

    /// The database of the configured data dir, for the token commands.
    fn store(&self) -> anyhow::Result<Store> {
        let (config, _, _) = self.load(None)?;
        Store::open(&config.database_path()).context("opening the database")
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
            let token =
                crate::auth::reset_token(&location.store()?).context("storing the new token")?;
            println!("{token}");
            Ok(())
        }
        Command::Token {
            command:
                TokenCommand::Create {
                    location,
                    name,
                    role,
                    hosts,
                    expires_days,
                },
        } => {
            let role = Role::parse(&role)
                .with_context(|| format!("--role {role:?}: one of admin, operator, read-only"))?;
            let input = TokenCreate {
                name,
                role,
                hosts,
                expires_days,
            };
            let created = crate::service::tokens::create(&location.store()?, input)?;
            println!("{}", created.token);
            Ok(())
        }
        Command::Token {
            command: TokenCommand::List { location },
        } => {
            for token in crate::service::tokens::list(&location.store()?)? {
                let hosts = if token.hosts.is_empty() {
                    "*".to_owned()
                } else {
                    token.hosts.join(",")
                };
                let time = |at: Option<i64>| at.map_or("-".to_owned(), crate::store::format_ms);
                println!(
                    "{}\t{}\t{hosts}\tcreated {}\texpires {}\tlast used {}",
                    token.name,
                    token.role.as_str(),
                    crate::store::format_ms(token.created_at),
                    time(token.expires_at),
                    time(token.last_used_at)
                );
            }
            Ok(())
        }
        Command::Token {
            command: TokenCommand::Revoke { location, name },
        } => {
            crate::service::tokens::revoke(&location.store()?, &name)?;
            println!("revoked {name}");
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
    let server = &state.config().server;
    let tls = if server.plain_http {
        None
    } else {
        let tls = crate::tls::ServerTls::load(server)?;
        println!(
            "certificate {} (SHA-256 fingerprint {})",
            tls.cert_path.display(),
            tls.fingerprint
        );
        Some(tokio_rustls::TlsAcceptor::from(tls.config))
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let address = listener.local_addr()?;
    let _ = state.bound_address.set(address);
    let base = state.public_base_url();
    println!("openidcs listening on {base}");
    println!("web panel: {base}/ (sign in with the token)");
    tracing::info!("listening on {base}");
    for (endpoints, reason) in crate::service::system::endpoints_off(&state) {
        println!("off: {endpoints} ({reason})");
    }
    tokio::spawn(crate::service::poller::run(state.clone()));
    let header_read_timeout = Duration::from_secs(state.config().server.header_read_timeout_s);
    let router = crate::api::router(state.clone());
    crate::http::serve(
        listener,
        router,
        header_read_timeout,
        tls,
        shutdown_signal(),
    )
    .await;
    if let Some(nginx) = &state.managed_nginx {
        nginx.stop().await;
    }
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
