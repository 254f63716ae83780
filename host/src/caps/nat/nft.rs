//! Running `nft`: the configured command prefix, our table, and nothing else.
//!
//! Two invocations exist: `<prefix> -j -f -` with a batch built by
//! [`super::ruleset::Batch`] on stdin (applied atomically by nft), and
//! `<prefix> -j list table inet <table>`. No shell is involved; every
//! argument is passed as is.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::NatError;
use super::ruleset::{FAMILY, LiveTable};
use crate::model::rules;

/// A hung `nft` (a wedged netlink socket, a stuck `ip netns exec`) must not
/// hold the change lock for ever.
const TIMEOUT: Duration = Duration::from_secs(30);
/// Enough of nft's stderr to show the error and its caret line.
const MAX_STDERR: usize = 4000;

pub(super) struct Nft {
    program: String,
    prefix_args: Vec<String>,
    table: String,
}

impl Nft {
    /// Checks the `[nat]` settings: a program to run and a table name nft's
    /// command line accepts (the read names the table on it). The config
    /// loader checks the same rule; this one guards every other way in.
    pub fn new(command: Vec<String>, table: String) -> Result<Nft, String> {
        let mut words = command.into_iter();
        let program = words
            .next()
            .filter(|program| !program.is_empty())
            .ok_or("nft_command is empty")?;
        rules::check_table_name("nat.table", &table)
            .map_err(|invalid| format!("not a valid nftables table name: {invalid}"))?;
        Ok(Nft {
            program,
            prefix_args: words.collect(),
            table,
        })
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// Apply one batch; nft applies all of it or none.
    pub async fn apply(&self, batch: &Value) -> Result<(), NatError> {
        let input = batch.to_string();
        self.run(&["-j", "-f", "-"], Some(input.as_bytes()))
            .await
            .map(drop)
    }

    /// Our table's rules; empty when the table does not exist (yet, or any
    /// more).
    pub async fn read(&self) -> Result<LiveTable, NatError> {
        let args = ["-j", "list", "table", FAMILY, self.table.as_str()];
        let stdout = match self.run(&args, None).await {
            Ok(stdout) => stdout,
            // nft's own answer for a missing table (`ip netns exec` failing
            // to find nft says "exec of ... failed" instead).
            Err(NatError::Command { stderr, .. })
                if stderr.contains("Error: No such file or directory") =>
            {
                return Ok(LiveTable::default());
            }
            Err(error) => return Err(error),
        };
        let parse_error = |message: String| NatError::Parse {
            command: self.describe(&args),
            message,
        };
        let listing: Value =
            serde_json::from_slice(&stdout).map_err(|error| parse_error(error.to_string()))?;
        LiveTable::parse(&listing, &self.table).map_err(|message| parse_error(message.to_owned()))
    }

    fn describe(&self, args: &[&str]) -> String {
        std::iter::once(self.program.as_str())
            .chain(self.prefix_args.iter().map(String::as_str))
            .chain(args.iter().copied())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Run the prefix with `args`, feeding `stdin`; its stdout on success.
    async fn run(&self, args: &[&str], stdin: Option<&[u8]>) -> Result<Vec<u8>, NatError> {
        let command = self.describe(args);
        let mut child = Command::new(&self.program)
            .args(&self.prefix_args)
            .args(args)
            // nft's messages are matched above; keep them untranslated.
            .env("LC_ALL", "C")
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // A timed-out run is killed, not left behind.
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| NatError::Spawn {
                command: command.clone(),
                source,
            })?;
        let pipe = child.stdin.take();
        let feed = async move {
            if let (Some(mut pipe), Some(input)) = (pipe, stdin) {
                // Written while the output is read, so a large batch cannot
                // deadlock on full pipes; dropping the pipe ends the input.
                pipe.write_all(input).await?;
                pipe.shutdown().await?;
            }
            Ok::<(), std::io::Error>(())
        };
        let finished = tokio::time::timeout(TIMEOUT, async {
            tokio::join!(feed, child.wait_with_output())
        })
        .await;
        let (fed, output) = finished.map_err(|_| NatError::Timeout {
            command: command.clone(),
            seconds: TIMEOUT.as_secs(),
        })?;
        let output = output.map_err(|source| NatError::Spawn {
            command: command.clone(),
            source,
        })?;
        if !output.status.success() {
            let mut stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
            if stderr.len() > MAX_STDERR {
                let mut end = MAX_STDERR;
                while !stderr.is_char_boundary(end) {
                    end -= 1;
                }
                stderr.truncate(end);
                stderr.push_str(" …");
            }
            return Err(NatError::Command {
                command,
                status: output.status.to_string(),
                stderr,
            });
        }
        // nft exited 0 but did not read all of its input: it cannot have
        // applied what it did not read.
        fed.map_err(|source| NatError::Spawn { command, source })?;
        Ok(output.stdout)
    }
}
