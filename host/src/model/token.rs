//! Named API tokens with a role and a host scope (`system/tokens`).
//!
//! The admin token of the original API stays what it was (one token, every
//! route); named tokens let a billing panel hold a key that can manage VMs
//! on its hosts and nothing else.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::rules::{Invalid, check_name};

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Every route, as the admin token.
    Admin,
    /// VMs and their NAT, IP and proxy entries on the token's hosts; host
    /// read routes of those hosts; no host create, update, delete or power,
    /// no system route.
    Operator,
    /// The read (GET) routes an operator has, without the console.
    #[serde(alias = "readonly", alias = "read_only")]
    ReadOnly,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::ReadOnly => "read-only",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "admin" => Some(Role::Admin),
            "operator" => Some(Role::Operator),
            "read-only" | "readonly" | "read_only" => Some(Role::ReadOnly),
            _ => None,
        }
    }
}

/// `POST /api/system/tokens` body.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenCreate {
    /// `[A-Za-z0-9_.-]{1,64}`, unique.
    pub name: String,
    pub role: Role,
    /// The hosts an `operator` or `read-only` token reaches; empty = every
    /// host. Must be empty for `admin`.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Days until the token stops working; absent = never.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 3650)]
    pub expires_days: Option<u32>,
}

impl TokenCreate {
    pub fn check(&self) -> Result<(), Invalid> {
        check_name("name", &self.name)?;
        if self.name == "admin" {
            return Err(Invalid::new("name", "\"admin\" names the admin token"));
        }
        if self.role == Role::Admin && !self.hosts.is_empty() {
            return Err(Invalid::new(
                "hosts",
                "an admin token reaches every host; leave hosts empty",
            ));
        }
        for (index, host) in self.hosts.iter().enumerate() {
            check_name(&format!("hosts[{index}]"), host)?;
        }
        if let Some(days) = self.expires_days
            && !(1..=3650).contains(&days)
        {
            return Err(Invalid::new(
                "expires_days",
                format!("must be 1 to 3650, got {days}"),
            ));
        }
        Ok(())
    }
}

/// A named token as listed (never the token itself: only its hash is kept).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct TokenView {
    pub name: String,
    pub role: Role,
    /// Empty = every host.
    pub hosts: Vec<String>,
    /// Milliseconds since the epoch.
    pub created_at: i64,
    #[schema(required)]
    pub expires_at: Option<i64>,
    /// Updated at most once a minute.
    #[schema(required)]
    pub last_used_at: Option<i64>,
}

/// The answer of a token's creation: the only time the token is shown.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct TokenCreated {
    #[serde(flatten)]
    pub view: TokenView,
    /// Shown once; store it now.
    pub token: String,
}
