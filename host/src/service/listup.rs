//! `client/listup/<host>`: every VM of a host with its power state, encoded
//! once and served as the same bytes until something changes.
//!
//! Panels poll this endpoint; with 10,000 VMs a fresh answer is one engine
//! call, 10,000 stored configs and ~3 MB of JSON. An answer is reused while
//! 1. the store's generation is the one it was built at: any write by this
//!    server (a VM created or changed, a power action's task, a poller
//!    sample) makes the next request build anew, so what is done through the
//!    API shows at once; and
//! 2. it is younger than `poller.listup_max_age_ms`, so what is done outside
//!    the API (`virsh destroy`) shows within that age. Past the age the last
//!    answer is still served while one background build replaces it.
//!
//! A failed build drops the host's answer, so the next request builds again
//! and answers the error as an uncached listup would.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use serde::ser::SerializeMap;

use super::error::{ServiceError, ServiceResult};
use super::hosts;
use super::vms::sample_view;
use crate::model::{EncodedAnswer, PowerStatus, VmListItem};
use crate::state::AppState;
use crate::store::{SampleRecord, VmRecord};

/// The last answer of each host that answered one.
#[derive(Default)]
pub struct ListupCache {
    hosts: Mutex<HashMap<String, Arc<Slot>>>,
}

#[derive(Default)]
struct Slot {
    answer: RwLock<Option<Built>>,
    /// One build per host at a time; requests that need a new answer wait
    /// for it instead of building the same thing side by side.
    build: tokio::sync::Mutex<()>,
    refreshing: AtomicBool,
}

#[derive(Clone)]
struct Built {
    /// The store's generation when the build began.
    generation: u64,
    began: Instant,
    answer: EncodedAnswer,
}

impl Slot {
    fn current(&self) -> Option<Built> {
        self.answer.read().clone()
    }

    fn set(&self, built: Option<Built>) {
        *self.answer.write() = built;
    }
}

impl ListupCache {
    fn slot(&self, host: &str) -> Arc<Slot> {
        self.hosts
            .lock()
            .entry(host.to_owned())
            .or_default()
            .clone()
    }

    /// Forget a host whose build failed (unknown, disabled, engine down), so
    /// names that never answered do not accumulate.
    fn forget(&self, host: &str) {
        self.hosts.lock().remove(host);
    }
}

/// The listup answer of `host_name`, as the API sends it.
pub async fn listup(state: &Arc<AppState>, host_name: &str) -> ServiceResult<EncodedAnswer> {
    // Writes that finished before this request are seen by any answer whose
    // build began at this generation or later.
    let seen = state.store.generation();
    let max_age = Duration::from_millis(state.config().poller.listup_max_age_ms);
    let slot = state.listups.slot(host_name);
    if let Some(built) = slot.current()
        && built.generation == seen
    {
        if built.began.elapsed() >= max_age && !slot.refreshing.swap(true, Ordering::AcqRel) {
            refresh_in_background(state.clone(), host_name.to_owned(), slot.clone());
        }
        return Ok(built.answer);
    }
    let _building = slot.build.lock().await;
    if let Some(built) = slot.current()
        && built.generation >= seen
    {
        return Ok(built.answer);
    }
    match build(state, host_name).await {
        Ok(built) => {
            slot.set(Some(built.clone()));
            Ok(built.answer)
        }
        Err(error) => {
            slot.set(None);
            state.listups.forget(host_name);
            Err(error)
        }
    }
}

fn refresh_in_background(state: Arc<AppState>, host_name: String, slot: Arc<Slot>) {
    tokio::spawn(async move {
        let _building = slot.build.lock().await;
        match build(&state, &host_name).await {
            Ok(built) => slot.set(Some(built)),
            Err(error) => {
                tracing::warn!("refreshing the listup of host {host_name}: {error}");
                slot.set(None);
            }
        }
        slot.refreshing.store(false, Ordering::Release);
    });
}

async fn build(state: &AppState, host_name: &str) -> ServiceResult<Built> {
    let generation = state.store.generation();
    let began = Instant::now();
    let host = hosts::get_enabled(state, host_name)?;
    // The stored side (10,000 rows) is read on a blocking thread while the
    // engine lists the domains.
    let store = state.store.clone();
    let name = host_name.to_owned();
    let stored = tokio::task::spawn_blocking(move || {
        let mut records = store.vm_list(&name)?;
        for record in &mut records {
            record.config.hide_password();
        }
        Ok::<_, ServiceError>((records, store.sample_latest_by_vm(&name)?))
    });
    let live: HashMap<String, PowerStatus> = state
        .plugins
        .vm_list(&host.target())
        .await?
        .into_iter()
        .map(|info| (info.vm_uuid, info.power.into()))
        .collect();
    let (records, latest) = stored.await.map_err(blocking_failed)??;
    let answer = ListupAnswer {
        records,
        live,
        latest,
    };
    let answer = tokio::task::spawn_blocking(move || {
        let encoded = EncodedAnswer::encode(&answer)
            .map_err(|error| ServiceError::Internal(format!("encoding the answer: {error}")));
        // Freeing 10,000 records takes as long as encoding them; the
        // caller need not wait for it.
        tokio::task::spawn_blocking(move || drop(answer));
        encoded
    })
    .await
    .map_err(blocking_failed)??;
    Ok(Built {
        generation,
        began,
        answer,
    })
}

fn blocking_failed(error: tokio::task::JoinError) -> ServiceError {
    ServiceError::Internal(format!("listup task failed: {error}"))
}

/// `{vm_uuid: {uuid, config, power_status, status}}`, encoded straight from
/// the records (no intermediate JSON tree).
struct ListupAnswer {
    records: Vec<VmRecord>,
    live: HashMap<String, PowerStatus>,
    latest: HashMap<String, SampleRecord>,
}

impl Serialize for ListupAnswer {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.records.len()))?;
        for record in &self.records {
            let vm = VmListItem {
                uuid: &record.vm_uuid,
                config: &record.config,
                power_status: self
                    .live
                    .get(&record.vm_uuid)
                    .copied()
                    .unwrap_or(PowerStatus::Missing),
                status: self.latest.get(&record.vm_uuid).cloned().map(sample_view),
            };
            map.serialize_entry(&record.vm_uuid, &vm)?;
        }
        map.end()
    }
}
