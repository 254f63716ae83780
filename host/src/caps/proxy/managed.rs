//! An nginx that openidcs runs itself (`[proxy] managed = true`): its own
//! prefix under the data dir, its own `nginx.conf` (written at every start),
//! started with the server and stopped with it. The embedded default uses
//! it, so `make run` serves proxy sites without touching `/etc/nginx`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::ProxyError;
use super::files::check_nginx_path;

/// The managed nginx of one data dir.
#[derive(Clone, Debug)]
pub struct ManagedNginx {
    prefix: PathBuf,
    binary: PathBuf,
}

impl ManagedNginx {
    /// The nginx under `<data_dir>/nginx`; `nginx` from `PATH`, else
    /// Debian's `/usr/sbin/nginx` (not on a normal user's `PATH`).
    pub fn in_data_dir(data_dir: &Path) -> ManagedNginx {
        let binary = std::env::var_os("PATH")
            .into_iter()
            .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
            .map(|directory| directory.join("nginx"))
            .find(|candidate| candidate.is_file())
            .unwrap_or_else(|| PathBuf::from("/usr/sbin/nginx"));
        ManagedNginx {
            prefix: data_dir.join("nginx"),
            binary,
        }
    }

    /// Where the server blocks go (the proxy's `conf_dir`).
    pub fn sites_dir(&self) -> PathBuf {
        self.prefix.join("sites")
    }

    fn pid_file(&self) -> PathBuf {
        self.prefix.join("nginx.pid")
    }

    fn command(&self, verb: &[&str]) -> Vec<String> {
        let mut command = vec![self.binary.display().to_string()];
        for (flag, path) in [
            ("-p", self.prefix.clone()),
            ("-c", self.prefix.join("nginx.conf")),
            // Before the configuration is read, nginx logs to its compiled-in
            // path, which a normal user cannot open.
            ("-e", self.prefix.join("logs/error.log")),
        ] {
            command.push(flag.to_owned());
            command.push(path.display().to_string());
        }
        command.extend(verb.iter().map(|word| (*word).to_owned()));
        command
    }

    pub fn test_command(&self) -> Vec<String> {
        self.command(&["-t", "-q"])
    }

    pub fn reload_command(&self) -> Vec<String> {
        self.command(&["-s", "reload"])
    }

    /// The process id in the pid file, when that process is alive.
    pub fn running_pid(&self) -> Option<u32> {
        let pid: u32 = std::fs::read_to_string(self.pid_file())
            .ok()?
            .trim()
            .parse()
            .ok()?;
        (pid > 0 && is_nginx(pid)).then_some(pid)
    }

    /// Write `nginx.conf` and start nginx, or reload the one a previous run
    /// left (after a `kill -9` of the server it is still there).
    pub async fn start(&self, http_port: u16, https_port: u16) -> Result<(), ProxyError> {
        check_nginx_path(&self.prefix)?;
        for directory in ["sites", "logs", "tmp"] {
            let path = self.prefix.join(directory);
            std::fs::create_dir_all(&path).map_err(|source| ProxyError::Io {
                action: "creating",
                path: path.display().to_string(),
                source,
            })?;
        }
        let conf = self.prefix.join("nginx.conf");
        std::fs::write(&conf, self.render(http_port, https_port)).map_err(|source| {
            ProxyError::Io {
                action: "writing",
                path: conf.display().to_string(),
                source,
            }
        })?;
        super::nginx::test(&self.test_command()).await?;
        let verb: &[&str] = if self.running_pid().is_some() {
            &["-s", "reload"]
        } else {
            &[]
        };
        super::nginx::run(&self.command(verb))
            .await?
            .map_err(|stderr| ProxyError::Reload {
                command: format!("{} {}", self.binary.display(), verb.join(" ")),
                stderr,
            })
    }

    /// Stop nginx gracefully (open connections finish) and wait for it.
    pub async fn stop(&self) {
        let Some(pid) = self.running_pid() else {
            return;
        };
        if let Ok(Err(stderr)) = super::nginx::run(&self.command(&["-s", "quit"])).await {
            tracing::warn!("stopping the managed nginx: {stderr}");
        }
        for _ in 0..100 {
            if !is_nginx(pid) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        tracing::warn!("the managed nginx (pid {pid}) did not stop within 5 s");
    }

    /// The whole configuration: one worker, every path under the prefix, a
    /// default server that answers unknown names with 404 (and refuses TLS
    /// handshakes for them), and the sites.
    fn render(&self, http_port: u16, https_port: u16) -> String {
        let prefix = self.prefix.display();
        let mut text = String::new();
        let _ = writeln!(
            text,
            "# Written by openidcs at every start: its own nginx (`[proxy] managed = true`).\n\
             daemon on;\n\
             pid {prefix}/nginx.pid;\n\
             error_log {prefix}/logs/error.log;\n\
             worker_processes 1;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n\
             \x20   access_log off;\n\
             \x20   client_body_temp_path {prefix}/tmp/body;\n\
             \x20   proxy_temp_path {prefix}/tmp/proxy;\n\
             \x20   fastcgi_temp_path {prefix}/tmp/fastcgi;\n\
             \x20   uwsgi_temp_path {prefix}/tmp/uwsgi;\n\
             \x20   scgi_temp_path {prefix}/tmp/scgi;\n\
             \x20   # Workers may run as another user than the data dir's owner:\n\
             \x20   # answers stream through memory, never a temp file.\n\
             \x20   proxy_max_temp_file_size 0;\n\
             \x20   server_names_hash_bucket_size 128;\n\
             \x20   server {{\n\
             \x20       listen {http_port} default_server;\n\
             \x20       listen {https_port} ssl default_server;\n\
             \x20       ssl_reject_handshake on;\n\
             \x20       return 404;\n\
             \x20   }}\n\
             \x20   include {prefix}/sites/*.conf;\n\
             }}"
        );
        text
    }
}

/// Whether `pid` is a live nginx: a stale pid file may name a reused pid,
/// and an nginx that exited stays a zombie until its parent reaps it.
fn is_nginx(pid: u32) -> bool {
    // `/proc/<pid>/stat`: `pid (comm) state ...`.
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let named_nginx = stat.contains("(nginx)");
    let state = stat
        .rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next());
    named_nginx && !matches!(state, Some('Z' | 'X'))
}
