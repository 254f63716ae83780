//! Traffic: each VM's monthly count from its interface counters, and the
//! quota (`flu_num`) enforced.
//!
//! The poller turns two consecutive counter readings into bytes
//! ([`counter_delta`]: a counter that went back — the VM restarted, the
//! counter wrapped — counts from zero) and adds them to the count of the
//! current period, which starts on the VM's reset day `flu_rst`
//! ([`period_start`]). Over the quota, the VM is throttled to `[traffic]
//! over_quota_mbps` or paused (the host's `flu_over`), by a task with a log
//! record; a new period or a reset lifts it.

use std::sync::Arc;

use time::{Date, Month, OffsetDateTime};

use super::error::ServiceResult;
use super::hosts::Host;
use super::vms::{self, VmRef};
use crate::model::{PowerCommand, VmSettings};
use crate::plugin::bindings::VmSpec;
use crate::state::AppState;
use crate::store::{LogLevel, NewLog, VmRecord};

/// The over-quota measures, as the store keeps them.
pub const THROTTLE: &str = "throttle";
pub const PAUSE: &str = "pause";

/// Bytes moved between two readings of a cumulative counter. A reading
/// below the previous one means the counter started over (the VM was
/// restarted, or a 32-bit counter wrapped): what it holds now is new.
pub fn counter_delta(previous: u64, current: u64) -> u64 {
    current.checked_sub(previous).unwrap_or(current)
}

/// The first day of the traffic period that `today` is in, for a period
/// that starts on day `reset_day` of each month (on a month's last day when
/// it is shorter).
pub fn period_start(today: Date, reset_day: u32) -> Date {
    let start_in = |year: i32, month: Month| {
        let day = reset_day.clamp(1, u32::from(month.length(year))) as u8;
        Date::from_calendar_date(year, month, day).unwrap_or(today)
    };
    let this_month = start_in(today.year(), today.month());
    if today >= this_month {
        return this_month;
    }
    let (year, month) = match today.month() {
        Month::January => (today.year() - 1, Month::December),
        month => (today.year(), month.previous()),
    };
    start_in(year, month)
}

/// The period key of `now` for a VM (its first day, `YYYY-MM-DD`).
pub fn period_key(now: OffsetDateTime, settings: &VmSettings) -> String {
    let start = period_start(now.date(), settings.flu_rst);
    format!(
        "{:04}-{:02}-{:02}",
        start.year(),
        u8::from(start.month()),
        start.day()
    )
}

/// What the engine is told of a VM: its settings, with the throttled
/// speeds while it is over its quota.
pub fn engine_spec(state: &AppState, settings: &VmSettings, limited: &str) -> VmSpec {
    let mut spec = VmSpec::from(settings);
    if limited == THROTTLE {
        let cap = state.config().traffic.over_quota_mbps;
        spec.speed_up = cap;
        spec.speed_down = cap;
    }
    spec
}

/// Count `megabytes` for the VM and act on its quota: a new period lifts a
/// measure, going over the quota starts one (each in a task of its own).
pub fn account(
    state: &Arc<AppState>,
    host: &Host,
    record: &VmRecord,
    megabytes: f64,
) -> ServiceResult<()> {
    let period = period_key(OffsetDateTime::now_utc(), &record.config);
    let traffic = state
        .store
        .vm_add_traffic(&host.name, &record.vm_uuid, &period, megabytes)?;
    let quota = record.config.flu_num;
    let over = quota > 0 && traffic.usage_mb > quota as f64;
    let vm = VmRef {
        host: host.clone(),
        record: VmRecord {
            flu_usage: traffic.usage_mb,
            flu_limited: traffic.limited.clone(),
            ..record.clone()
        },
    };
    if !traffic.limited.is_empty() && (traffic.new_period || !over) {
        spawn(state, &vm, "traffic-lift", lift);
    } else if traffic.limited.is_empty() && over {
        let message = format!(
            "vm {} used {:.0} MB of its {} MB traffic quota this period (from {period})",
            record.vm_uuid, traffic.usage_mb, quota
        );
        state.store.log_insert(
            &NewLog::new(LogLevel::Warn, "traffic", message)
                .host(&host.name)
                .vm(&record.vm_uuid),
        )?;
        spawn(state, &vm, "traffic-limit", limit);
    }
    Ok(())
}

/// Run a quota measure as a task; the poller does not wait for it.
fn spawn<F, Fut>(state: &Arc<AppState>, vm: &VmRef, actions: &str, work: F)
where
    F: FnOnce(Arc<AppState>, VmRef) -> Fut,
    Fut: std::future::Future<Output = ServiceResult<()>> + Send + 'static,
{
    let task = vm.task(actions);
    let future = work(state.clone(), vm.clone());
    let tasks_state = state.clone();
    tokio::spawn(async move {
        // A failure is the task's record and log; nothing to add here.
        let _ = tasks_state.tasks.run(task, true, future).await;
    });
}

/// Over the quota: throttle the VM's NICs, or pause it (the host's `flu_over`).
pub async fn limit(state: Arc<AppState>, vm: VmRef) -> ServiceResult<()> {
    let target = vm.host.target();
    let measure = if vm.host.config.flu_over == PAUSE {
        state
            .plugins
            .vm_power(&target, vm.key(), PowerCommand::Pause.into())
            .await?;
        PAUSE
    } else {
        let spec = engine_spec(&state, &vm.record.config, THROTTLE);
        state.plugins.vm_update(&target, &spec).await?;
        THROTTLE
    };
    state
        .store
        .vm_set_limited(&vm.host.name, vm.key(), measure)?;
    Ok(())
}

/// Lift the measure in force: the VM's own speeds again, or resumed.
pub async fn lift(state: Arc<AppState>, vm: VmRef) -> ServiceResult<()> {
    let target = vm.host.target();
    match vm.record.flu_limited.as_str() {
        PAUSE => {
            let (power, _) = vms::power_of(&state, &vm).await?;
            if power == crate::model::PowerStatus::Paused {
                state
                    .plugins
                    .vm_power(&target, vm.key(), PowerCommand::Resume.into())
                    .await?;
            }
        }
        THROTTLE => {
            state
                .plugins
                .vm_update(&target, &VmSpec::from(&vm.record.config))
                .await?;
        }
        _ => {}
    }
    state.store.vm_set_limited(&vm.host.name, vm.key(), "")?;
    Ok(())
}

/// The panel's reset: the period's count to 0, and any measure lifted.
pub async fn reset(state: Arc<AppState>, vm: VmRef) -> ServiceResult<()> {
    state.store.vm_set_traffic(&vm.host.name, vm.key(), 0.0)?;
    if !vm.record.flu_limited.is_empty() {
        lift(state, vm).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(year: i32, month: u8, day: u8) -> Date {
        Date::from_calendar_date(year, Month::try_from(month).expect("month"), day).expect("date")
    }

    #[test]
    fn counters_that_go_back_count_from_zero() {
        assert_eq!(counter_delta(1_000, 1_500), 500);
        assert_eq!(counter_delta(1_000, 1_000), 0);
        // The VM restarted: its counters start over at 0.
        assert_eq!(counter_delta(5_000_000, 300), 300);
        // A 32-bit counter wrapped.
        assert_eq!(counter_delta(u64::from(u32::MAX) - 10, 20), 20);
    }

    #[test]
    fn periods_start_on_the_reset_day() {
        // Reset on the 1st: calendar months.
        assert_eq!(period_start(date(2026, 12, 6), 1), date(2026, 12, 1));
        assert_eq!(period_start(date(2026, 12, 1), 1), date(2026, 12, 1));
        // Reset on the 15th: before it, the period began last month.
        assert_eq!(period_start(date(2026, 12, 6), 15), date(2026, 11, 15));
        assert_eq!(period_start(date(2026, 12, 15), 15), date(2026, 12, 15));
        // Across the year.
        assert_eq!(period_start(date(2027, 1, 3), 10), date(2026, 12, 10));
        // Day 31 in a 30-day month, and February in a leap year and not.
        assert_eq!(period_start(date(2026, 11, 30), 31), date(2026, 11, 30));
        assert_eq!(period_start(date(2026, 11, 29), 31), date(2026, 10, 31));
        assert_eq!(period_start(date(2028, 2, 29), 30), date(2028, 2, 29));
        assert_eq!(period_start(date(2027, 3, 1), 30), date(2027, 2, 28));
    }

    #[test]
    fn the_period_key_is_its_first_day() {
        let settings = VmSettings {
            flu_rst: 15,
            ..VmSettings::default()
        };
        let now = OffsetDateTime::from_unix_timestamp(1_796_515_200).expect("time"); // 2026-12-06
        assert_eq!(period_key(now, &settings), "2026-11-15");
    }
}
