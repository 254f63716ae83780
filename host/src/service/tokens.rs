//! Named API tokens: create, list, revoke. The API (`system/tokens`) and the
//! CLI (`openidcs token create|list|revoke`) both call these, so a token made
//! either way is the same row.

use super::error::{ServiceError, ServiceResult};
use crate::model::{Invalid, TokenCreate, TokenCreated, TokenView};
use crate::store::{ApiTokenRecord, Store, now_ms};

const DAY_MS: i64 = 86_400_000;

/// Store a new named token and answer it, the only time it is shown. The
/// hosts it names must exist, so a typo does not make a token that reaches
/// nothing (or, later, a host of that name made by someone else).
pub fn create(store: &Store, input: TokenCreate) -> ServiceResult<TokenCreated> {
    input.check()?;
    let known = store.host_list()?;
    for (index, host) in input.hosts.iter().enumerate() {
        if !known.iter().any(|record| &record.name == host) {
            return Err(
                Invalid::new(format!("hosts[{index}]"), format!("no host named {host:?}")).into(),
            );
        }
    }
    let created_at = now_ms();
    let record = ApiTokenRecord {
        name: input.name,
        role: input.role,
        hosts: input.hosts,
        created_at,
        expires_at: input
            .expires_days
            .map(|days| created_at + i64::from(days) * DAY_MS),
        last_used_at: None,
    };
    let token = crate::auth::generate_token();
    store.api_token_insert(&record, &crate::auth::hash_token(&token))?;
    Ok(TokenCreated {
        view: record.view(),
        token,
    })
}

pub fn list(store: &Store) -> ServiceResult<Vec<TokenView>> {
    Ok(store
        .api_token_list()?
        .iter()
        .map(ApiTokenRecord::view)
        .collect())
}

/// Revoke a named token: it stops working with this commit.
pub fn revoke(store: &Store, name: &str) -> ServiceResult<TokenView> {
    let found = store
        .api_token_list()?
        .into_iter()
        .find(|record| record.name == name)
        .ok_or_else(|| ServiceError::NotFound(format!("no token named {name:?}")))?;
    store.api_token_delete(name)?;
    Ok(found.view())
}
