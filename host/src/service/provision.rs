//! Provisioning: what makes a VM boot the OS it was sold with the
//! customer's password. The host's image catalogue (`system_maps`), the
//! install and reinstall of a system disk with a first boot, the OS
//! password, and the CPU model a host runs.
//!
//! Passwords are turned into SHA-512 crypt hashes as they arrive
//! ([`protect_password`]); the database, the engines and the guests only
//! ever see the hash.

use std::sync::Arc;

use super::error::{ServiceError, ServiceResult};
use super::hosts::Host;
use super::vms::VmRef;
use crate::caps::libvirt::is_sha512_crypt;
use crate::model::{
    CpuSetting, HostSettings, MASKED, OsImageView, PasswordAnswer, PasswordApplied, VmSettings,
    rules,
};
use crate::plugin::EngineError;
use crate::plugin::bindings::{
    CpuChoice, FirstBoot, ImageEntry, InstallPlan, PasswordRoute, PluginError, VmInfo, VmSpec,
};
use crate::state::AppState;
use crate::store::{LogLevel, NewLog, Store, now_ms};
use crate::tasks;

/// The user whose password `os_pass` is.
const ROOT: &str = "root";

/// The hash of a new password. Rounds: the crypt default (5000), which the
/// guest's PAM reads without a `rounds=` field.
pub fn hash_password(password: &str) -> ServiceResult<String> {
    let params = sha_crypt::Sha512Params::new(sha_crypt::ROUNDS_DEFAULT)
        .map_err(|error| ServiceError::Internal(format!("crypt parameters: {error:?}")))?;
    sha_crypt::sha512_simple(password, &params)
        .map_err(|error| ServiceError::Internal(format!("hashing a password: {error:?}")))
}

/// Bring `settings.os_pass` to what is stored: a new password becomes its
/// hash; empty, `******` or an unchanged hash keep `stored` (the previous
/// hash, empty for a new VM).
pub fn protect_password(settings: &mut VmSettings, stored: &str) -> ServiceResult<()> {
    if settings.os_pass.is_empty() || settings.os_pass == MASKED || settings.os_pass == stored {
        settings.os_pass = stored.to_owned();
    } else if !is_sha512_crypt(&settings.os_pass) {
        settings.os_pass = hash_password(&settings.os_pass)?;
    }
    Ok(())
}

/// Replace every `os_pass` an older version stored in plain text by its
/// hash; answers how many. Runs at start, before anything reads them.
pub fn hash_stored_passwords(store: &Store) -> ServiceResult<usize> {
    let mut hashed = 0;
    for host in store.host_list()? {
        for record in store.vm_list(&host.name)? {
            let plain = &record.config.os_pass;
            if plain.is_empty() || is_sha512_crypt(plain) {
                continue;
            }
            let mut settings = record.config.clone();
            settings.os_pass = hash_password(plain)?;
            store.vm_update_config(&host.name, &record.vm_uuid, &settings, &record.domain_uuid)?;
            hashed += 1;
        }
    }
    Ok(hashed)
}

/// The catalogue entry `os_name` names; `None` for an empty `os_name` (a
/// blank system disk). An unknown name is refused naming the choices.
pub fn image_for(host: &HostSettings, os_name: &str) -> ServiceResult<Option<ImageEntry>> {
    if os_name.is_empty() {
        return Ok(None);
    }
    match host.system_maps.get(os_name) {
        Some(image) => Ok(Some(ImageEntry {
            name: os_name.to_owned(),
            file: image.file.clone(),
            min_disk_mb: image.min_disk_mb,
        })),
        None => {
            let choices: Vec<&str> = host.system_maps.keys().map(String::as_str).collect();
            Err(rules::Invalid::new(
                "os_name",
                if choices.is_empty() {
                    format!("{os_name:?} is not an image of this host (it has none: system_maps is empty)")
                } else {
                    format!(
                        "{os_name:?} is not an image of this host; choices: {}",
                        choices.join(", ")
                    )
                },
            )
            .into())
        }
    }
}

/// `GET /api/client/os-images/<hs>`: the catalogue entries the host's image
/// storage holds.
pub async fn os_images(state: &AppState, host: &Host) -> ServiceResult<Vec<OsImageView>> {
    if host.config.system_maps.is_empty() {
        return Ok(Vec::new());
    }
    let catalogue: Vec<ImageEntry> = host
        .config
        .system_maps
        .iter()
        .map(|(name, image)| ImageEntry {
            name: name.clone(),
            file: image.file.clone(),
            min_disk_mb: image.min_disk_mb,
        })
        .collect();
    let images = state.plugins.os_images(&host.target(), &catalogue).await?;
    Ok(images.into_iter().map(OsImageView::from).collect())
}

/// A first boot for `settings` as a new instance.
fn first_boot(settings: &VmSettings) -> FirstBoot {
    FirstBoot {
        // New per install and per password sent for the next boot: the
        // guest runs its first-boot steps once per instance id.
        instance_id: format!("{}-{}", settings.vm_uuid, now_ms()),
        hostname: settings.vm_uuid.clone(),
        password_hash: settings.os_pass.clone(),
        ssh_keys: settings.ssh_keys.clone(),
    }
}

/// Install `image` on the stopped VM: a system disk from the image and a
/// first boot with the VM's hostname, password hash, keys and addresses.
pub async fn install(
    state: &AppState,
    host: &Host,
    settings: &VmSettings,
    image: ImageEntry,
) -> ServiceResult<VmInfo> {
    let plan = InstallPlan {
        image,
        linked_clone: host.config.system_copy != "full",
        first_boot: first_boot(settings),
    };
    Ok(state
        .plugins
        .vm_install(&host.target(), &VmSpec::from(settings), &plan)
        .await?)
}

/// Reinstall: stop the VM if it runs, apply the other changes, put the
/// image on a new system disk (data disks stay), start it again if it ran.
pub async fn reinstall(
    state: Arc<AppState>,
    vm: VmRef,
    settings: VmSettings,
    image: ImageEntry,
) -> ServiceResult<VmInfo> {
    let target = vm.host.target();
    let (power, _) = super::vms::power_of(&state, &vm).await?;
    let was_running = power.is_on();
    if was_running {
        tasks::progress(20, "stopping the VM");
        state
            .plugins
            .vm_power(
                &target,
                vm.key(),
                crate::plugin::bindings::PowerAction::HardStop,
            )
            .await?;
    }
    tasks::progress(35, "applying the new configuration");
    let spec = super::traffic::engine_spec(&state, &settings, &vm.record.flu_limited);
    if let Err(error) = state.plugins.vm_update(&target, &spec).await {
        // Refused before any disk changed: the VM runs on as it was.
        if was_running
            && let Err(start) = state
                .plugins
                .vm_power(
                    &target,
                    vm.key(),
                    crate::plugin::bindings::PowerAction::Start,
                )
                .await
        {
            tracing::warn!(vm = %vm.key(), "starting a VM again after a refused reinstall: {start}");
        }
        return Err(error.into());
    }
    tasks::progress(50, "writing the system disk from the image");
    let mut info = install(&state, &vm.host, &settings, image).await?;
    if was_running {
        tasks::progress(85, "starting the VM");
        info.power = state
            .plugins
            .vm_power(
                &target,
                vm.key(),
                crate::plugin::bindings::PowerAction::Start,
            )
            .await?;
    }
    Ok(info)
}

/// Set the VM's OS password: stored as its hash, then through the guest
/// agent of the running guest, or at its next boot. A VM without an
/// installed image gets it with its next install.
pub async fn set_password(
    state: &AppState,
    vm: &VmRef,
    password: &str,
) -> ServiceResult<PasswordAnswer> {
    if password.is_empty() || password.len() > 128 || password.chars().any(char::is_control) {
        return Err(rules::Invalid::new(
            "password",
            "must be 1 to 128 characters, without control characters",
        )
        .into());
    }
    let record = &vm.record;
    let mut settings = record.config.clone();
    settings.os_pass = hash_password(password)?;
    let applied = if settings.os_name.is_empty() {
        PasswordApplied::NextInstall
    } else {
        let route = state
            .plugins
            .vm_password(&vm.host.target(), vm.key(), ROOT, &first_boot(&settings))
            .await?;
        match route {
            PasswordRoute::GuestAgent => PasswordApplied::GuestAgent,
            PasswordRoute::NextBoot => PasswordApplied::NextBoot,
        }
    };
    state.store.vm_update_config(
        &record.host,
        &record.vm_uuid,
        &settings,
        &record.domain_uuid,
    )?;
    Ok(PasswordAnswer {
        vm_uuid: record.vm_uuid.clone(),
        applied,
    })
}

/// Find the CPU model the host runs, once: when it has no `cpu_mode` and
/// none was probed. A host whose engine has no CPU models (the test driver,
/// LXC, an older engine) is left alone; a probe that finds nothing is
/// logged, and VMs then find their model when they start.
pub async fn ensure_cpu(state: &AppState, host: &Host) -> ServiceResult<Option<CpuSetting>> {
    if let Some(choice) = host.cpu_choice() {
        return Ok(Some(choice));
    }
    match state
        .plugins
        .cpu_probe(&host.target(), None::<&CpuChoice>)
        .await
    {
        Ok(choice) => {
            let setting = CpuSetting {
                mode: choice.mode,
                model: choice.model,
                disabled_features: choice.disabled_features,
            };
            state.store.host_set_cpu(&host.name, Some(&setting))?;
            Ok(Some(setting))
        }
        Err(EngineError::Plugin {
            error: PluginError::Unsupported(_),
            ..
        }) => Ok(None),
        Err(error) => {
            let message = format!(
                "probing the CPU model of host {}: {}",
                host.name,
                ServiceError::from(error).message()
            );
            let record = NewLog::new(LogLevel::Warn, "cpu-probe", message).host(&host.name);
            state.store.log_insert(&record)?;
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ImageMap;

    #[test]
    fn passwords_become_sha512_crypt_hashes_that_verify() {
        let hash = hash_password("Customer-Pw-1").expect("hash");
        assert!(is_sha512_crypt(&hash), "{hash}");
        assert!(!hash.contains("Customer-Pw-1"));
        assert!(sha_crypt::sha512_check("Customer-Pw-1", &hash).is_ok());
        assert!(sha_crypt::sha512_check("customer-pw-1", &hash).is_err());
        assert_ne!(
            hash,
            hash_password("Customer-Pw-1").expect("hash"),
            "salted"
        );
    }

    #[test]
    fn stored_hashes_are_kept_and_new_passwords_hashed() {
        let stored = hash_password("old").expect("hash");
        for kept in ["", MASKED, stored.as_str()] {
            let mut settings = VmSettings {
                os_pass: kept.to_owned(),
                ..VmSettings::default()
            };
            protect_password(&mut settings, &stored).expect("kept");
            assert_eq!(settings.os_pass, stored, "{kept:?} keeps the stored hash");
        }
        let mut settings = VmSettings {
            os_pass: "new-one".to_owned(),
            ..VmSettings::default()
        };
        protect_password(&mut settings, &stored).expect("hashed");
        assert!(sha_crypt::sha512_check("new-one", &settings.os_pass).is_ok());
        settings.hide_password();
        assert_eq!(settings.os_pass, MASKED);
    }

    #[test]
    fn an_unknown_os_name_is_refused_naming_the_choices() {
        let mut host = HostSettings::default();
        assert!(image_for(&host, "").expect("blank").is_none());
        let error = image_for(&host, "debian12").expect_err("no catalogue");
        assert!(
            error.message().contains("system_maps is empty"),
            "{}",
            error.message()
        );
        for (name, file) in [("debian12", "debian-12.qcow2"), ("alpine", "alpine.qcow2")] {
            host.system_maps.insert(
                name.to_owned(),
                ImageMap {
                    file: file.to_owned(),
                    min_disk_mb: 2048,
                },
            );
        }
        let image = image_for(&host, "debian12").expect("known").expect("some");
        assert_eq!(
            (image.file.as_str(), image.min_disk_mb),
            ("debian-12.qcow2", 2048)
        );
        let error = image_for(&host, "win2022").expect_err("unknown");
        let message = error.message();
        assert!(
            message.starts_with("os_name") && message.contains("choices: alpine, debian12"),
            "{message}"
        );
    }

    #[test]
    fn system_maps_read_as_the_original_and_php_wrote_them() {
        let settings: HostSettings = serde_json::from_value(serde_json::json!({
            "images_path": "/var/lib/openidcs/images",
            "system_maps": {
                "debian12": ["debian-12.qcow2", 2048],
                "alpine": ["alpine.qcow2", "512"],
                "bare": ["bare.raw"]
            }
        }))
        .expect("reads");
        assert_eq!(settings.system_maps["alpine"].min_disk_mb, 512);
        assert_eq!(settings.system_maps["bare"].min_disk_mb, 0);
        assert_eq!(
            serde_json::to_value(&settings.system_maps["debian12"]).expect("json"),
            serde_json::json!(["debian-12.qcow2", 2048])
        );
        let empty: HostSettings =
            serde_json::from_value(serde_json::json!({ "system_maps": [] })).expect("PHP's []");
        assert!(empty.system_maps.is_empty());
        assert!(
            serde_json::from_value::<HostSettings>(
                serde_json::json!({ "system_maps": { "x": ["x.qcow2", "big"] } })
            )
            .is_err()
        );
    }
}
