//! Table-driven tests of the pure helpers: one line per case.

use openidcs_sdk::domain::{DiskFormat, DiskXml, DomainType, DomainXml};
use openidcs_sdk::libvirt::LifecycleOp;
use openidcs_sdk::{Disk, Error, NicKind, PowerAction, PowerState, VmSpec};

use super::*;

fn host(uri: &str) -> HostConfig {
    HostConfig {
        name: "h1".to_owned(),
        engine: "libvirt".to_owned(),
        server_addr: uri.to_owned(),
        server_user: String::new(),
        filter_name: "web".to_owned(),
        images_path: String::new(),
        system_path: "/srv/vm".to_owned(),
        network_nat: "default".to_owned(),
        network_pub: "br0".to_owned(),
        ports_start: 20000,
        ports_close: 30000,
        public_addr: Vec::new(),
        ip_pools: Vec::new(),
        extend_data: String::new(),
    }
}

#[test]
fn power_actions_map_one_to_one() {
    for (action, op) in [
        (PowerAction::Start, LifecycleOp::Start),
        (PowerAction::Stop, LifecycleOp::Shutdown),
        (PowerAction::HardStop, LifecycleOp::Destroy),
        (PowerAction::Reset, LifecycleOp::Reboot),
        (PowerAction::HardReset, LifecycleOp::Reset),
        (PowerAction::Pause, LifecycleOp::Suspend),
        (PowerAction::Resume, LifecycleOp::Resume),
    ] {
        assert_eq!(lifecycle_for(action), op, "{action:?}");
    }
    assert!(is_active(PowerState::Paused));
    assert!(!is_active(PowerState::Stopped));
    assert!(!is_active(PowerState::Crashed));
}

#[test]
fn macs_must_be_unicast_hex_pairs() {
    for (mac, ok) in [
        ("52:54:00:12:34:56", true),
        ("52:54:00:AB:cd:EF", true),
        ("53:54:00:12:34:56", false),
        ("52:54:00:12:34", false),
        ("52-54-00-12-34-56", false),
        ("52:54:00:12:34:5g", false),
        ("", false),
    ] {
        assert_eq!(check_mac(mac).is_ok(), ok, "{mac}");
    }
}

#[test]
fn names_follow_the_capability_rule() {
    for (name, ok) in [
        ("web1", true),
        ("web-1_a.b", true),
        ("..", false),
        ("a b", false),
        ("", false),
    ] {
        assert_eq!(valid_name(name), ok, "{name:?}");
    }
    assert!(valid_name(&"a".repeat(64)));
    assert!(!valid_name(&"a".repeat(65)));
}

#[test]
fn finds_the_host_of_a_connection_uri() {
    for (uri, expected) in [
        ("qemu:///system", None),
        ("test:///default", None),
        ("qemu+ssh://root@10.0.0.2/system", Some("10.0.0.2")),
        ("qemu+tcp://node1:16509/system", Some("node1")),
        (
            "qemu+ssh://root@[2001:db8::2]:22/system?keyfile=/k",
            Some("2001:db8::2"),
        ),
        ("nonsense", None),
    ] {
        assert_eq!(uri_host(uri), expected, "{uri}");
    }
    assert_eq!(
        console_host(&host("qemu+ssh://root@10.0.0.2/system"), "0.0.0.0"),
        "10.0.0.2"
    );
    assert_eq!(console_host(&host("qemu:///system"), ""), "127.0.0.1");
    assert_eq!(
        console_host(&host("qemu:///system"), "127.0.0.1"),
        "127.0.0.1"
    );
}

#[test]
fn names_dhcp_hosts_uniquely_per_nic() {
    assert_eq!(dhcp_host_name("web1", "nic0"), "web1");
    assert_eq!(dhcp_host_name("web1", ""), "web1");
    assert_eq!(dhcp_host_name("web1", "nic1"), "web1-nic1");
    assert_eq!(dhcp_host_name("web1", "bad name"), "web1");
}

fn binding(mac: &str, ip: &str) -> Binding {
    Binding {
        mac: mac.to_owned(),
        ip: ip.to_owned(),
        name: String::new(),
    }
}

#[test]
fn binding_changes_touch_only_what_differs() {
    let old = [binding("m1", "10.0.0.1"), binding("m2", "10.0.0.2")];
    let new = [
        binding("m1", "10.0.0.1"),
        binding("m2", "10.0.0.3"),
        binding("m3", "10.0.0.4"),
    ];
    let (remove, add) = binding_changes(&old, &new);
    assert_eq!(remove, [binding("m2", "10.0.0.2")]);
    assert_eq!(add, [binding("m2", "10.0.0.3"), binding("m3", "10.0.0.4")]);
}

#[test]
fn reads_dhcp_hosts_of_a_network() {
    let xml = "<network><name>default</name><ip address='192.168.122.1'><dhcp>\
               <range start='192.168.122.2' end='192.168.122.254'/>\
               <host mac='52:54:00:AA:00:01' name='web1' ip='192.168.122.10'/></dhcp></ip>\
               <ip family='ipv6' address='fd00::1' prefix='64'/></network>";
    let hosts = dhcp_hosts(xml);
    assert_eq!(hosts.len(), 1);
    assert_eq!(
        (hosts[0].mac.as_str(), hosts[0].ip.as_str()),
        ("52:54:00:aa:00:01", "192.168.122.10")
    );
    assert!(dhcp_hosts("<not xml").is_empty());
}

fn imported() -> DomainXml {
    DomainXml::new("web7", DomainType::Kvm)
        .disk("/srv/vm/web7-system", "vda")
        .disk("/srv/vm/web7-data", "vdb")
        .disk("/srv/vm/scratch.img", "vdc")
}

#[test]
fn names_the_disks_of_a_vm_without_metadata() {
    let disks = disks_of("web7", &imported());
    let names: Vec<(&str, &str)> = disks
        .iter()
        .map(|disk| (disk.name.as_str(), disk.volume.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("system", "web7-system"),
            ("data", "web7-data"),
            ("scratch.img", "scratch.img")
        ]
    );
    assert!(
        disks.iter().all(|disk| disk.size_mb == 0),
        "sizes are unknown without metadata"
    );
    assert_eq!(
        owned_volumes("web7", &imported()),
        ["web7-system", "web7-data"]
    );
}

#[test]
fn seeded_metadata_keeps_the_system_disk_of_an_imported_vm() {
    let mut domain = imported();
    domain.metadata = Some(metadata_of("web7", &domain));
    let names: Vec<String> = disks_of("web7", &domain)
        .into_iter()
        .map(|disk| disk.name)
        .collect();
    assert_eq!(names, ["system", "data", "scratch.img"]);
}

#[test]
fn a_vm_created_without_a_system_disk_has_only_data_disks() {
    let spec = VmSpec {
        hdd_mb: 0,
        disks: vec![Disk {
            name: "data".to_owned(),
            size_mb: 10,
        }],
        ..empty_spec("web1")
    };
    let mut disks = planned_disks(&spec);
    disks[0].path = "/srv/vm/web1-data".to_owned();
    let model = DomainXml::new("web1", DomainType::Kvm)
        .disk("/srv/vm/web1-data", "vda")
        .metadata(metadata_for(&spec, &disks, &[]));
    let read = spec_from_domain("web1", &model);
    assert_eq!(read.hdd_mb, 0);
    assert_eq!(read.disks.len(), 1);
}

#[test]
fn plans_disk_updates_that_only_grow() {
    let spec = VmSpec {
        hdd_mb: 100,
        disks: vec![
            Disk {
                name: "data".to_owned(),
                size_mb: 50,
            },
            Disk {
                name: "logs".to_owned(),
                size_mb: 5,
            },
        ],
        ..empty_spec("web1")
    };
    let mut current = DomainXml::new("web1", DomainType::Kvm)
        .disk("/srv/vm/web1-system", "vda")
        .disk("/srv/vm/web1-data", "vdb");
    let mut disks = planned_disks(&VmSpec {
        hdd_mb: 80,
        disks: vec![Disk {
            name: "data".to_owned(),
            size_mb: 50,
        }],
        ..empty_spec("web1")
    });
    disks[0].path = "/srv/vm/web1-system".to_owned();
    disks[1].path = "/srv/vm/web1-data".to_owned();
    current.metadata = Some(metadata_for(&empty_spec("web1"), &disks, &[]));

    let plan = plan_disk_update("web1", &spec, &current).expect("plans");
    assert_eq!(plan.grow, [("web1-system".to_owned(), 100)]);
    let new: Vec<&str> = plan
        .disks
        .iter()
        .filter(|disk| disk.path.is_empty())
        .map(|disk| disk.volume.as_str())
        .collect();
    assert_eq!(new, ["web1-logs"]);

    let model = update_domain(
        &host("qemu:///system"),
        &spec,
        &current,
        &[PlannedDisk {
            path: "/srv/vm/web1-logs".to_owned(),
            ..plan.disks[2].clone()
        }],
        &[],
    )
    .expect("builds");
    assert_eq!(
        model.disks.last(),
        Some(&DiskXml {
            path: "/srv/vm/web1-logs".to_owned(),
            target: "vdc".to_owned(),
            format: DiskFormat::Raw,
        })
    );

    let shrink = VmSpec {
        hdd_mb: 10,
        ..spec.clone()
    };
    assert!(matches!(
        plan_disk_update("web1", &shrink, &current),
        Err(Error::Invalid(_))
    ));
}

#[test]
fn update_keeps_macs_by_nic_name_and_generates_the_rest() {
    let mut current = DomainXml::new("web1", DomainType::Kvm);
    let created = VmSpec {
        nics: vec![Nic {
            name: "nic0".to_owned(),
            kind: NicKind::Nat,
            mac_addr: String::new(),
            ip4_addr: String::new(),
            ip6_addr: String::new(),
            gate: String::new(),
            mask: String::new(),
            dns: Vec::new(),
        }],
        ..empty_spec("web1")
    };
    current.interfaces = interfaces_for(
        &host("qemu:///system"),
        &created,
        &["52:54:00:00:00:0a".to_owned()],
    )
    .expect("builds");
    current.metadata = Some(metadata_for(
        &created,
        &[],
        &["52:54:00:00:00:0a".to_owned()],
    ));
    let mut wanted = created.clone();
    wanted.nics.push(Nic {
        name: "nic1".to_owned(),
        ..created.nics[0].clone()
    });
    let macs = update_macs(&wanted, &current, &mut || "52:54:00:00:00:0b".to_owned());
    assert_eq!(macs, ["52:54:00:00:00:0a", "52:54:00:00:00:0b"]);
}

#[test]
fn errors_keep_their_kind_with_context() {
    let error = with_context(
        Error::Denied("outside storage".to_owned()),
        "creating volume web1-system",
    );
    match error {
        Error::Denied(message) => {
            assert_eq!(message, "creating volume web1-system: outside storage")
        }
        other => panic!("expected denied, got {other:?}"),
    }
}
