//! A cloud-init NoCloud seed: the three files a guest reads at its first
//! boot as a new instance, in a FAT file system labelled `CIDATA` that an
//! engine attaches as a small read-only disk.
//!
//! The files are written as JSON, which is YAML as far as cloud-init's
//! parser goes, so no YAML emitter is involved and every string is escaped
//! by serde_json. The password reaches the seed only as the crypt hash the
//! core made (`first-boot.password-hash`); nothing here ever sees it in
//! plain text.

use std::io::{Cursor, Write};

use serde_json::{Map, Value, json};

use crate::{FirstBoot, Nic};

/// Size of the FAT image: far more than the three files need, and the
/// smallest size mkfs-style FAT12 layouts handle without fuss.
const SEED_BYTES: usize = 1024 * 1024;

/// The volume label cloud-init's NoCloud data source looks for.
const LABEL: &[u8; 11] = b"CIDATA     ";

/// The three files of a seed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seed {
    pub meta_data: String,
    pub user_data: String,
    pub network_config: String,
}

/// Why a seed could not be made.
#[derive(Debug)]
pub struct SeedError(pub String);

impl std::fmt::Display for SeedError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.0)
    }
}

impl Seed {
    /// The seed of `boot` for a guest with these NICs (their MACs set).
    pub fn new(boot: &FirstBoot, nics: &[Nic]) -> Seed {
        Seed {
            meta_data: meta_data(boot),
            user_data: user_data(boot),
            network_config: network_config(nics),
        }
    }

    /// The seed as a FAT disk image labelled `CIDATA`.
    pub fn to_fat_image(&self) -> Result<Vec<u8>, SeedError> {
        let fail = |what: &str, error: std::io::Error| SeedError(format!("{what}: {error}"));
        let mut disk = Cursor::new(vec![0u8; SEED_BYTES]);
        fatfs::format_volume(
            &mut disk,
            fatfs::FormatVolumeOptions::new()
                .volume_label(*LABEL)
                .fat_type(fatfs::FatType::Fat12),
        )
        .map_err(|error| fail("formatting the seed", error))?;
        {
            let file_system = fatfs::FileSystem::new(&mut disk, fatfs::FsOptions::new())
                .map_err(|error| fail("opening the seed", error))?;
            for (name, text) in [
                ("meta-data", &self.meta_data),
                ("user-data", &self.user_data),
                ("network-config", &self.network_config),
            ] {
                let mut file = file_system
                    .root_dir()
                    .create_file(name)
                    .map_err(|error| fail(&format!("creating {name}"), error))?;
                file.truncate()
                    .and_then(|()| file.write_all(text.as_bytes()))
                    .and_then(|()| file.flush())
                    .map_err(|error| fail(&format!("writing {name}"), error))?;
            }
            file_system
                .unmount()
                .map_err(|error| fail("closing the seed", error))?;
        }
        Ok(disk.into_inner())
    }
}

fn meta_data(boot: &FirstBoot) -> String {
    json!({
        "instance-id": boot.instance_id,
        "local-hostname": boot.hostname,
    })
    .to_string()
}

/// `#cloud-config` for root: the hashed password (password login on only
/// when there is one), the SSH keys, the hostname.
fn user_data(boot: &FirstBoot) -> String {
    let has_password = !boot.password_hash.is_empty();
    let mut root = Map::new();
    root.insert("name".into(), json!("root"));
    root.insert("lock_passwd".into(), json!(!has_password));
    if has_password {
        root.insert("hashed_passwd".into(), json!(boot.password_hash));
    }
    if !boot.ssh_keys.is_empty() {
        root.insert("ssh_authorized_keys".into(), json!(boot.ssh_keys));
    }
    let config = json!({
        "hostname": boot.hostname,
        "preserve_hostname": false,
        // `users` replaces cloud-init's default user: root is the account a
        // hosting customer bought.
        "users": [Value::Object(root)],
        "disable_root": false,
        "ssh_pwauth": has_password,
        // The system disk is bigger than the image: grow the partition and
        // its file system (the defaults, said so the intent is on record).
        "growpart": { "mode": "auto", "devices": ["/"] },
        "resize_rootfs": true,
    });
    format!("#cloud-config\n{config}\n")
}

/// network-config version 2: each NIC matched by its MAC, with its static
/// addresses, default routes and name servers.
fn network_config(nics: &[Nic]) -> String {
    let mut ethernets = Map::new();
    for nic in nics {
        let mut ethernet = Map::new();
        ethernet.insert(
            "match".into(),
            json!({ "macaddress": nic.mac_addr.to_ascii_lowercase() }),
        );
        let mut addresses = Vec::new();
        let mut routes = Vec::new();
        if !nic.ip4_addr.is_empty() {
            addresses.push(json!(format!(
                "{}/{}",
                nic.ip4_addr,
                ipv4_prefix(&nic.mask).unwrap_or(24)
            )));
            if !nic.gate.is_empty() {
                routes.push(json!({ "to": "0.0.0.0/0", "via": nic.gate }));
            }
        }
        if !nic.ip6_addr.is_empty() {
            let (address, prefix) = match nic.ip6_addr.split_once('/') {
                Some((address, prefix)) => (address, prefix.parse().unwrap_or(64)),
                None => (nic.ip6_addr.as_str(), 64u8),
            };
            addresses.push(json!(format!("{address}/{prefix}")));
        }
        if addresses.is_empty() {
            ethernet.insert("dhcp4".into(), json!(true));
        } else {
            ethernet.insert("addresses".into(), json!(addresses));
        }
        if !routes.is_empty() {
            ethernet.insert("routes".into(), json!(routes));
        }
        if !nic.dns.is_empty() {
            ethernet.insert("nameservers".into(), json!({ "addresses": nic.dns }));
        }
        ethernets.insert(nic.name.clone(), Value::Object(ethernet));
    }
    json!({ "version": 2, "ethernets": ethernets }).to_string()
}

/// The prefix length of a dotted IPv4 mask (`255.255.255.0` → 24), or a
/// mask already given as a length (`24`).
pub fn ipv4_prefix(mask: &str) -> Option<u8> {
    if let Ok(length) = mask.parse::<u8>() {
        return (length <= 32).then_some(length);
    }
    let mask: std::net::Ipv4Addr = mask.parse().ok()?;
    let bits = u32::from(mask);
    let length = bits.leading_ones();
    // A mask is ones then zeros.
    (bits.checked_shl(length).unwrap_or(0) == 0).then_some(length as u8)
}

#[cfg(test)]
mod tests;
