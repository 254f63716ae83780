//! The status poller: every interval, one bulk `vm-usage` call per enabled
//! host, turned into one sample per VM (rates from the previous counters)
//! and the VMs' power states; then retention.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::error::ServiceResult;
use super::hosts::{self, Host, percent_of, round2};
use super::{traffic, vms};
use crate::model::Sample;
use crate::plugin::bindings::VmCounters;
use crate::state::AppState;
use crate::store::{LogLevel, NewLog, format_ms, now_ms};

/// Counters of one VM at the previous poll.
struct Previous {
    at: Instant,
    cpu_time_ns: u64,
    rx_bytes: u64,
    tx_bytes: u64,
}

/// Run forever (until the process ends), one round per interval.
pub async fn run(state: Arc<AppState>) {
    let mut previous: HashMap<(String, String), Previous> = HashMap::new();
    loop {
        let config = state.config().poller.clone();
        tokio::time::sleep(Duration::from_secs(config.interval_s)).await;
        poll_once(&state, &mut previous).await;
        let pruned = state.store.sample_prune(
            config.retention_hours as i64 * 3_600_000,
            config.retention_count,
        );
        if let Err(error) = pruned {
            tracing::error!("sample retention failed: {error}");
        }
        let logs = state.config().logs.clone();
        let pruned = state.store.log_prune(
            logs.max_age_days
                .saturating_mul(86_400_000)
                .min(i64::MAX as u64) as i64,
            logs.max_rows,
        );
        if let Err(error) = pruned {
            tracing::error!("log retention failed: {error}");
        }
    }
}

async fn poll_once(state: &Arc<AppState>, previous: &mut HashMap<(String, String), Previous>) {
    let hosts = match state.store.host_list() {
        Ok(hosts) => hosts,
        Err(error) => {
            tracing::error!("poller cannot list hosts: {error}");
            return;
        }
    };
    for host in hosts.into_iter().filter(|host| host.enabled) {
        let name = host.name.clone();
        if let Err(error) = poll_host(state, &host, previous).await {
            // One record per failure; the poller keeps going with other hosts.
            let record = NewLog::new(
                LogLevel::Warn,
                "poller",
                format!("polling host {name:?} failed: {error}"),
            )
            .host(name);
            if let Err(error) = state.store.log_insert(&record) {
                tracing::error!("cannot store a log record: {error}");
            }
        }
    }
}

async fn poll_host(
    state: &Arc<AppState>,
    host: &Host,
    previous: &mut HashMap<(String, String), Previous>,
) -> ServiceResult<()> {
    let known: HashMap<String, crate::store::VmRecord> = state
        .store
        .vm_list(&host.name)?
        .into_iter()
        .map(|record| (record.vm_uuid.clone(), record))
        .collect();
    if known.is_empty() {
        return Ok(());
    }
    let counters = state.plugins.vm_usage(&host.target()).await?;
    let now = Instant::now();
    for usage in counters {
        let Some(record) = known.get(&usage.vm_uuid) else {
            continue;
        };
        let key = (host.name.clone(), usage.vm_uuid.clone());
        let sample = sample_from(&usage, previous.get(&key), now);
        vms::record_sample(state, &host.name, &usage.vm_uuid, "poller", &sample)?;
        vms::record_power(state, &host.name, &usage.vm_uuid, usage.power.into())?;
        traffic::account(state, host, record, sample.flu_usage)?;
        previous.insert(
            key,
            Previous {
                at: now,
                cpu_time_ns: usage.cpu_time_ns,
                rx_bytes: usage.net_rx_bytes,
                tx_bytes: usage.net_tx_bytes,
            },
        );
    }
    hosts::touch(state, &host.name);
    Ok(())
}

/// The sample shape of the API from raw counters and the previous ones.
fn sample_from(usage: &VmCounters, previous: Option<&Previous>, now: Instant) -> Sample {
    let (cpu_usage, network_u, network_d, traffic_mb) = match previous {
        Some(previous) => {
            let seconds = now.duration_since(previous.at).as_secs_f64().max(0.001);
            let cpu_ns = usage.cpu_time_ns.saturating_sub(previous.cpu_time_ns) as f64;
            let tx = traffic::counter_delta(previous.tx_bytes, usage.net_tx_bytes) as f64;
            let rx = traffic::counter_delta(previous.rx_bytes, usage.net_rx_bytes) as f64;
            let cpus = f64::from(usage.cpu_num.max(1));
            (
                (cpu_ns / (seconds * 1e9 * cpus) * 100.0).min(100.0),
                tx * 8.0 / seconds / 1e6,
                rx * 8.0 / seconds / 1e6,
                (tx + rx) / 1_048_576.0,
            )
        }
        None => (0.0, 0.0, 0.0, 0.0),
    };
    Sample {
        ac_status: usage.power.as_str().to_owned(),
        cpu_total: f64::from(usage.cpu_num),
        cpu_usage: round2(cpu_usage),
        mem_total: usage.mem_total_mb as f64,
        mem_usage: round2(percent_of(
            usage.mem_used_mb as f64,
            usage.mem_total_mb as f64,
        )),
        hdd_total: usage.hdd_total_mb as f64,
        hdd_usage: round2(percent_of(
            usage.hdd_used_mb as f64,
            usage.hdd_total_mb as f64,
        )),
        flu_usage: round2(traffic_mb),
        network_u: round2(network_u),
        network_d: round2(network_d),
        on_update: Some(format_ms(now_ms()).into()),
    }
}
