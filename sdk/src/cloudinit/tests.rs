use std::io::Read;

use super::*;
use crate::NicKind;

/// `openssl passwd -6 -salt abcdefgh 'Customer-Pw-1'`.
const HASH: &str = "$6$abcdefgh$fBjixaOJXbtpeqJdiQsYIHIa42/fa3wTDb6nG6p2c3UDtaXL78djglFNAqhWp9XrkyON4rXLAbtWriSzgLCB50";

fn boot() -> FirstBoot {
    FirstBoot {
        instance_id: "vm7-1733480000".to_owned(),
        hostname: "vm7".to_owned(),
        password_hash: HASH.to_owned(),
        ssh_keys: vec!["ssh-ed25519 AAAAC3Nza test@example".to_owned()],
    }
}

fn nic(name: &str, mac: &str, ip4: &str, ip6: &str) -> Nic {
    Nic {
        name: name.to_owned(),
        kind: NicKind::Nat,
        mac_addr: mac.to_owned(),
        ip4_addr: ip4.to_owned(),
        ip6_addr: ip6.to_owned(),
        gate: "192.168.122.1".to_owned(),
        mask: "255.255.255.0".to_owned(),
        dns: vec!["192.168.122.1".to_owned()],
    }
}

fn parsed(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|error| panic!("{error}: {text}"))
}

#[test]
fn user_data_sets_roots_hashed_password_and_keys() {
    let seed = Seed::new(&boot(), &[]);
    let body = seed
        .user_data
        .strip_prefix("#cloud-config\n")
        .expect("starts with #cloud-config");
    let config = parsed(body);
    let root = &config["users"][0];
    assert_eq!(root["name"], "root");
    assert_eq!(root["hashed_passwd"], HASH);
    assert_eq!(root["lock_passwd"], false);
    assert_eq!(
        root["ssh_authorized_keys"][0],
        "ssh-ed25519 AAAAC3Nza test@example"
    );
    assert_eq!(config["ssh_pwauth"], true);
    assert_eq!(config["hostname"], "vm7");
    assert!(!seed.user_data.contains("Customer-Pw-1"));
    assert!(!seed.user_data.contains("plain_text_passwd"));
    let meta = parsed(&seed.meta_data);
    assert_eq!(meta["instance-id"], "vm7-1733480000");
    assert_eq!(meta["local-hostname"], "vm7");
}

#[test]
fn no_password_keeps_password_login_off() {
    let mut boot = boot();
    boot.password_hash.clear();
    let config = parsed(
        Seed::new(&boot, &[])
            .user_data
            .trim_start_matches("#cloud-config\n"),
    );
    assert_eq!(config["users"][0]["lock_passwd"], true);
    assert!(config["users"][0].get("hashed_passwd").is_none());
    assert_eq!(config["ssh_pwauth"], false);
}

#[test]
fn network_config_matches_each_nic_by_mac() {
    let seed = Seed::new(
        &boot(),
        &[
            nic("nic0", "52:54:00:AB:CD:EF", "192.168.122.10", "fd00::10"),
            nic("nic1", "52:54:00:00:00:02", "", ""),
        ],
    );
    let config = parsed(&seed.network_config);
    assert_eq!(config["version"], 2);
    let first = &config["ethernets"]["nic0"];
    assert_eq!(first["match"]["macaddress"], "52:54:00:ab:cd:ef");
    assert_eq!(
        first["addresses"],
        json!(["192.168.122.10/24", "fd00::10/64"])
    );
    assert_eq!(
        first["routes"],
        json!([{ "to": "0.0.0.0/0", "via": "192.168.122.1" }])
    );
    assert_eq!(first["nameservers"]["addresses"], json!(["192.168.122.1"]));
    let second = &config["ethernets"]["nic1"];
    assert_eq!(second["dhcp4"], true, "a NIC without an address asks DHCP");
}

#[test]
fn masks_become_prefix_lengths() {
    assert_eq!(ipv4_prefix("255.255.255.0"), Some(24));
    assert_eq!(ipv4_prefix("255.255.240.0"), Some(20));
    assert_eq!(ipv4_prefix("0.0.0.0"), Some(0));
    assert_eq!(ipv4_prefix("16"), Some(16));
    assert_eq!(ipv4_prefix("255.0.255.0"), None);
    assert_eq!(ipv4_prefix("33"), None);
    assert_eq!(ipv4_prefix("x"), None);
}

#[test]
fn the_fat_image_is_labelled_cidata_and_holds_the_files() {
    let seed = Seed::new(&boot(), &[nic("nic0", "52:54:00:00:00:01", "10.1.0.2", "")]);
    let image = seed.to_fat_image().expect("image");
    let mut disk = Cursor::new(image);
    let file_system = fatfs::FileSystem::new(&mut disk, fatfs::FsOptions::new()).expect("fat");
    assert_eq!(file_system.volume_label().trim_end(), "CIDATA");
    let root = file_system.root_dir();
    for (name, expected) in [
        ("meta-data", &seed.meta_data),
        ("user-data", &seed.user_data),
        ("network-config", &seed.network_config),
    ] {
        let mut text = String::new();
        root.open_file(name)
            .expect(name)
            .read_to_string(&mut text)
            .expect(name);
        assert_eq!(&text, expected, "{name}");
    }
}
