//! The engine's operations driven natively against the in-memory fake host:
//! what each `engine` function calls, what it answers, and what it leaves
//! behind when a step fails.

use openidcs_sdk::domain::{CpuModel, DomainDocument, DomainXml};
use openidcs_sdk::{
    Disk, Error, HostConfig, Nic, NicKind, PortForward, PowerAction, PowerState, Protocol,
    ProxySite, VmSpec,
};

use crate::caps::Capabilities;
use crate::convert;
use crate::fake::{Fake, FakeBinding, LIVE_VNC_PORT, STORAGE_DIR};
use crate::ops;

fn host() -> HostConfig {
    HostConfig {
        name: "h1".to_owned(),
        engine: "libvirt".to_owned(),
        server_addr: "qemu:///system".to_owned(),
        server_user: String::new(),
        filter_name: "web".to_owned(),
        images_path: "/srv/images".to_owned(),
        system_path: STORAGE_DIR.to_owned(),
        network_nat: "default".to_owned(),
        network_pub: "br0".to_owned(),
        ports_start: 20000,
        ports_close: 30000,
        public_addr: vec!["203.0.113.5".to_owned()],
        ip_pools: Vec::new(),
        extend_data: "{}".to_owned(),
    }
}

fn nic(name: &str, kind: NicKind, mac: &str, ip4: &str) -> Nic {
    Nic {
        name: name.to_owned(),
        kind,
        mac_addr: mac.to_owned(),
        ip4_addr: ip4.to_owned(),
        ip6_addr: String::new(),
        gate: if ip4.is_empty() {
            String::new()
        } else {
            "192.168.122.1".to_owned()
        },
        mask: if ip4.is_empty() {
            String::new()
        } else {
            "255.255.255.0".to_owned()
        },
        dns: vec!["1.1.1.1".to_owned()],
    }
}

fn spec() -> VmSpec {
    VmSpec {
        vm_uuid: "web1".to_owned(),
        os_name: "debian12".to_owned(),
        os_pass: "root-secret".to_owned(),
        vc_port: 0,
        vc_pass: "vnc'<pass>".to_owned(),
        cpu_num: 2,
        cpu_per: 50,
        mem_mb: 2048,
        hdd_mb: 8192,
        speed_up: 10,
        speed_down: 100,
        nics: vec![
            nic("nic0", NicKind::Nat, "", "192.168.122.10"),
            nic("nic1", NicKind::Pub, "52:54:00:AA:BB:CC", "203.0.113.20"),
        ],
        disks: vec![Disk {
            name: "data".to_owned(),
            size_mb: 1024,
        }],
    }
}

/// Deterministic MACs for the tests.
fn macs() -> impl FnMut() -> String {
    let mut next = 0u8;
    move || {
        next += 1;
        format!("52:54:00:00:00:{next:02x}")
    }
}

fn created(fake: &Fake) -> openidcs_sdk::VmInfo {
    ops::vm_create(fake, &host(), &spec(), &mut macs()).expect("creates")
}

fn volumes(fake: &Fake) -> Vec<(String, u64)> {
    fake.volumes().into_iter().collect()
}

#[test]
fn create_defines_the_vm_and_reads_it_back_whole() {
    let fake = Fake::new();
    let info = created(&fake);

    assert_eq!(info.vm_uuid, "web1");
    assert_eq!(info.power, PowerState::Stopped);
    assert!(!info.domain_uuid.is_empty());
    assert_eq!(
        volumes(&fake),
        vec![
            ("web1-data".to_owned(), 1024),
            ("web1-system".to_owned(), 8192)
        ]
    );
    let read = info.spec;
    assert_eq!(read.vm_uuid, "web1");
    assert_eq!(read.os_name, "debian12");
    assert_eq!(read.os_pass, "", "the OS password is never stored");
    assert_eq!((read.vc_port, read.vc_pass.as_str()), (0, "vnc'<pass>"));
    assert_eq!(
        (read.cpu_num, read.cpu_per, read.mem_mb, read.hdd_mb),
        (2, 50, 2048, 8192)
    );
    assert_eq!((read.speed_up, read.speed_down), (10, 100));
    assert_eq!(read.disks.len(), 1);
    assert_eq!(
        (read.disks[0].name.as_str(), read.disks[0].size_mb),
        ("data", 1024)
    );
    let nics: Vec<(String, NicKind, String, String)> = read
        .nics
        .iter()
        .map(|nic| {
            (
                nic.name.clone(),
                nic.kind,
                nic.mac_addr.clone(),
                nic.ip4_addr.clone(),
            )
        })
        .collect();
    assert_eq!(
        nics,
        vec![
            (
                "nic0".to_owned(),
                NicKind::Nat,
                "52:54:00:00:00:01".to_owned(),
                "192.168.122.10".to_owned()
            ),
            (
                "nic1".to_owned(),
                NicKind::Pub,
                "52:54:00:aa:bb:cc".to_owned(),
                "203.0.113.20".to_owned()
            ),
        ]
    );
    assert_eq!(read.nics[0].dns, vec!["1.1.1.1".to_owned()]);
    assert_eq!(
        fake.dhcp(),
        vec![FakeBinding {
            network: "default".to_owned(),
            mac: "52:54:00:00:00:01".to_owned(),
            ip: "192.168.122.10".to_owned(),
            name: "web1".to_owned(),
        }],
        "only the NAT NIC is bound in the NAT network's DHCP"
    );

    let xml = fake.domain("web1").expect("defined").xml;
    let model = DomainXml::from_xml(&xml).expect("parses");
    assert_eq!(
        model.domain_type.as_str(),
        "kvm",
        "a qemu URI gets KVM domains"
    );
    let targets: Vec<&str> = model
        .disks
        .iter()
        .map(|disk| disk.target.as_str())
        .collect();
    assert_eq!(targets, ["vda", "vdb"]);
    assert_eq!(model.disks[0].path, "/srv/vm/web1-system");
    assert!(xml.contains("listen='127.0.0.1'"));
    assert!(
        !xml.contains("root-secret"),
        "the OS password stays out of the XML"
    );
}

#[test]
fn create_on_the_test_and_lxc_drivers_picks_their_domain_types() {
    for (uri, expected) in [("test:///default", "test"), ("lxc:///", "lxc")] {
        let fake = Fake::new();
        let host = HostConfig {
            server_addr: uri.to_owned(),
            ..host()
        };
        ops::vm_create(&fake, &host, &spec(), &mut macs()).expect("creates");
        let model =
            DomainXml::from_xml(&fake.domain("web1").expect("defined").xml).expect("parses");
        assert_eq!(model.domain_type.as_str(), expected);
    }
    let lxc = HostConfig {
        server_addr: "lxc:///".to_owned(),
        ..host()
    };
    let fake = Fake::new();
    ops::vm_create(&fake, &lxc, &spec(), &mut macs()).expect("creates");
    let model = DomainXml::from_xml(&fake.domain("web1").expect("defined").xml).expect("parses");
    assert_eq!(model.disks[0].target, "/");
    assert_eq!(model.disks[1].target, "/mnt/data");
    assert_eq!(model.vnc, None);
}

#[test]
fn create_refuses_an_existing_vm_and_creates_nothing() {
    let fake = Fake::new();
    created(&fake);
    let before = volumes(&fake);
    let error = ops::vm_create(&fake, &host(), &spec(), &mut macs()).expect_err("conflict");
    assert!(matches!(error, Error::Conflict(_)), "{error:?}");
    assert_eq!(volumes(&fake), before);
    assert_eq!(fake.count("create_volume"), 2);
}

#[test]
fn create_deletes_its_volumes_when_defining_fails() {
    let fake = Fake::new();
    fake.fail_next(
        "define_domain",
        Error::Denied("disk outside storage".to_owned()),
    );
    let error = ops::vm_create(&fake, &host(), &spec(), &mut macs()).expect_err("fails");
    match error {
        Error::Denied(message) => assert_eq!(message, "defining vm web1: disk outside storage"),
        other => panic!("expected denied, got {other:?}"),
    }
    assert!(volumes(&fake).is_empty(), "no leaked volumes");
    assert!(fake.dhcp().is_empty());
}

#[test]
fn create_deletes_the_first_volume_when_the_second_fails() {
    let fake = Fake::new();
    fake.insert_volume("web1-data", 5);
    let error = ops::vm_create(&fake, &host(), &spec(), &mut macs()).expect_err("fails");
    match error {
        Error::Conflict(message) => assert!(
            message.starts_with("creating volume web1-data: "),
            "{message}"
        ),
        other => panic!("expected conflict, got {other:?}"),
    }
    assert_eq!(
        volumes(&fake),
        vec![("web1-data".to_owned(), 5)],
        "only the pre-existing volume is left"
    );
    assert!(fake.domain("web1").is_none());
}

#[test]
fn create_undoes_everything_when_a_dhcp_binding_fails() {
    let fake = Fake::new();
    fake.fail_next("dhcp_host_add", Error::Conflict("address taken".to_owned()));
    let error = ops::vm_create(&fake, &host(), &spec(), &mut macs()).expect_err("fails");
    assert!(matches!(error, Error::Conflict(_)), "{error:?}");
    assert!(fake.domain("web1").is_none(), "undefined again");
    assert!(volumes(&fake).is_empty());
}

#[test]
fn create_validates_before_touching_anything() {
    #[track_caller]
    fn refused(edit: impl FnOnce(&mut VmSpec, &mut HostConfig), expected: &str) {
        let fake = Fake::new();
        let mut spec = spec();
        let mut host = host();
        edit(&mut spec, &mut host);
        let error = ops::vm_create(&fake, &host, &spec, &mut macs()).expect_err(expected);
        assert!(
            convert::message_of(&error).contains(expected),
            "{error:?} lacks {expected:?}"
        );
        assert!(
            matches!(error, Error::Invalid(_) | Error::Unsupported(_)),
            "{error:?}"
        );
        assert_eq!(fake.count("create_volume") + fake.count("define_domain"), 0);
    }
    refused(|spec, _| spec.vm_uuid = "web 1".to_owned(), "vm_uuid");
    refused(|spec, _| spec.vm_uuid = "w".repeat(65), "vm_uuid");
    refused(|spec, _| spec.cpu_num = 0, "cpu_num");
    refused(|spec, _| spec.mem_mb = 0, "mem_num");
    refused(|spec, _| spec.vc_port = 80, "vc_port");
    refused(|spec, _| spec.disks[0].name = "system".to_owned(), "system");
    refused(|spec, _| spec.disks[0].name = "da-ta".to_owned(), "letters");
    refused(|spec, _| spec.disks[0].size_mb = 0, "size");
    refused(|spec, _| spec.disks.push(spec.disks[0].clone()), "twice");
    refused(
        |spec, _| spec.nics[0].mac_addr = "01:00:5e:00:00:01".to_owned(),
        "unicast",
    );
    refused(
        |spec, _| spec.nics[0].mac_addr = "52:54:00:aa:bb:cc".to_owned(),
        "two NICs",
    );
    refused(|_, host| host.network_pub = String::new(), "network_pub");
    refused(|_, host| host.network_nat = String::new(), "network_nat");
    refused(
        |_, host| host.server_addr = "xen:///".to_owned(),
        "qemu, lxc and test",
    );
    refused(
        |spec, host| {
            host.server_addr = "lxc:///".to_owned();
            spec.hdd_mb = 0;
        },
        "LXC",
    );
}

#[test]
fn list_is_one_call_and_only_managed_vms_with_bare_specs() {
    let fake = Fake::new();
    created(&fake);
    fake.insert_domain(
        "<domain type='kvm'><name>other</name></domain>",
        PowerState::Running,
    );
    let listed = ops::vm_list(&fake, &host()).expect("lists");
    assert_eq!(
        fake.state.borrow().calls,
        [
            "get_domain",
            "create_volume",
            "create_volume",
            "define_domain",
            "dhcp_host_add",
            "get_domain",
            "domain_xml",
            "define_domain",
            "list_domains"
        ]
    );
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].vm_uuid, "web1");
    assert_eq!(listed[0].spec.vm_uuid, "web1");
    assert_eq!(
        listed[0].spec.mem_mb, 0,
        "specs are read back by vm-get, not vm-list"
    );
}

#[test]
fn get_answers_not_found_for_an_unknown_vm() {
    let error = ops::vm_get(&Fake::new(), &host(), "web9").expect_err("absent");
    match error {
        Error::NotFound(message) => {
            assert!(message.starts_with("looking up vm web9: "), "{message}")
        }
        other => panic!("expected not-found, got {other:?}"),
    }
}

#[test]
fn get_reads_an_imported_vm_and_finds_its_address_in_dhcp() {
    let fake = Fake::new();
    fake.insert_volume("web7.qcow2", 1);
    fake.insert_domain(
        "<domain type='kvm'><name>web7</name><memory unit='GiB'>1</memory><vcpu>1</vcpu>\
         <devices><disk type='file' device='disk'><source file='/srv/vm/web7.qcow2'/>\
         <target dev='vda' bus='virtio'/></disk>\
         <interface type='network'><mac address='52:54:00:12:34:56'/><source network='default'/></interface>\
         </devices></domain>",
        PowerState::Running,
    );
    fake.dhcp_host_add("default", "52:54:00:12:34:56", "192.168.122.77", "web7")
        .expect("binds");
    let info = ops::vm_get(&fake, &host(), "web7").expect("reads");
    assert_eq!(info.power, PowerState::Running);
    assert_eq!(info.spec.mem_mb, 1024);
    assert_eq!(info.spec.hdd_mb, 0, "size unknown without metadata");
    assert!(info.spec.disks.is_empty(), "vda is the system disk");
    assert_eq!(info.spec.nics[0].ip4_addr, "192.168.122.77");
}

#[test]
fn update_grows_disks_adds_new_ones_and_rebinds_changed_addresses() {
    let fake = Fake::new();
    created(&fake);
    let before = DomainXml::from_xml(&fake.domain("web1").expect("defined").xml).expect("parses");
    let mut wanted = spec();
    wanted.mem_mb = 4096;
    wanted.cpu_num = 4;
    wanted.cpu_per = 0;
    wanted.hdd_mb = 10240;
    wanted.vc_port = 5990;
    wanted.speed_down = 200;
    wanted.disks.push(Disk {
        name: "logs".to_owned(),
        size_mb: 512,
    });
    wanted.nics[0].ip4_addr = "192.168.122.11".to_owned();
    let info = ops::vm_update(&fake, &host(), &wanted, &mut macs()).expect("updates");

    assert_eq!(
        volumes(&fake),
        vec![
            ("web1-data".to_owned(), 1024),
            ("web1-logs".to_owned(), 512),
            ("web1-system".to_owned(), 10240),
        ]
    );
    let read = info.spec;
    assert_eq!(
        (read.cpu_num, read.cpu_per, read.mem_mb, read.hdd_mb),
        (4, 0, 4096, 10240)
    );
    assert_eq!((read.vc_port, read.speed_down), (5990, 200));
    assert_eq!(
        read.nics[0].mac_addr, "52:54:00:00:00:01",
        "the NIC keeps its MAC by name"
    );
    assert_eq!(read.nics[0].ip4_addr, "192.168.122.11");
    assert_eq!(
        read.disks
            .iter()
            .map(|disk| disk.name.as_str())
            .collect::<Vec<_>>(),
        ["data", "logs"]
    );
    let bindings: Vec<String> = fake.dhcp().into_iter().map(|binding| binding.ip).collect();
    assert_eq!(bindings, ["192.168.122.11"]);

    let after = DomainXml::from_xml(&fake.domain("web1").expect("defined").xml).expect("parses");
    assert_eq!(after.uuid, before.uuid, "redefined, not recreated");
    assert_eq!(after.disks[2].target, "vdc");
    assert!(
        fake.domain("web1")
            .expect("defined")
            .xml
            .contains("slot='0x03'"),
        "addresses kept"
    );
}

#[test]
fn update_never_shrinks_or_removes_disks_and_changes_nothing_then() {
    let fake = Fake::new();
    created(&fake);
    let xml_before = fake.domain("web1").expect("defined").xml;
    for (edit, expected) in [
        (
            Box::new(|spec: &mut VmSpec| spec.hdd_mb = 4096) as Box<dyn Fn(&mut VmSpec)>,
            "only grow",
        ),
        (
            Box::new(|spec: &mut VmSpec| spec.disks[0].size_mb = 10),
            "only grow",
        ),
        (
            Box::new(|spec: &mut VmSpec| spec.disks.clear()),
            "never removes",
        ),
        (Box::new(|spec: &mut VmSpec| spec.hdd_mb = 0), "only grow"),
    ] {
        let mut wanted = spec();
        edit(&mut wanted);
        let error = ops::vm_update(&fake, &host(), &wanted, &mut macs()).expect_err(expected);
        assert!(matches!(error, Error::Invalid(_)), "{error:?}");
        assert!(convert::message_of(&error).contains(expected), "{error:?}");
    }
    assert_eq!(fake.domain("web1").expect("defined").xml, xml_before);
    assert_eq!(fake.count("resize_volume"), 0);
}

#[test]
fn update_deletes_new_volumes_when_redefining_fails() {
    let fake = Fake::new();
    created(&fake);
    let mut wanted = spec();
    wanted.disks.push(Disk {
        name: "logs".to_owned(),
        size_mb: 512,
    });
    fake.fail_next("define_domain", Error::Failed("libvirt said no".to_owned()));
    let error = ops::vm_update(&fake, &host(), &wanted, &mut macs()).expect_err("fails");
    assert!(matches!(error, Error::Failed(_)), "{error:?}");
    assert!(!fake.volumes().contains_key("web1-logs"));
}

#[test]
fn delete_stops_undefines_and_removes_volumes_and_bindings() {
    let fake = Fake::new();
    created(&fake);
    fake.set_state("web1", PowerState::Running);
    fake.state.borrow_mut().volumes.remove("web1-data");
    ops::vm_delete(&fake, &host(), "web1").expect("deletes");
    assert_eq!(fake.count("lifecycle Destroy"), 1);
    assert!(fake.domain("web1").is_none());
    assert!(
        volumes(&fake).is_empty(),
        "an already missing volume is not an error"
    );
    assert!(fake.dhcp().is_empty());
}

#[test]
fn delete_tolerates_a_domain_that_stopped_meanwhile() {
    let fake = Fake::new();
    created(&fake);
    fake.set_state("web1", PowerState::Crashed);
    ops::vm_delete(&fake, &host(), "web1").expect("deletes");
    assert!(fake.domain("web1").is_none());
}

#[test]
fn delete_never_touches_volumes_not_named_for_the_vm() {
    let fake = Fake::new();
    fake.insert_volume("shared-image", 100);
    fake.insert_domain(
        "<domain type='kvm'><name>web7</name><devices><disk type='file' device='disk'>\
         <source file='/srv/vm/shared-image'/><target dev='vda'/></disk></devices></domain>",
        PowerState::Stopped,
    );
    ops::vm_delete(&fake, &host(), "web7").expect("deletes");
    assert_eq!(volumes(&fake), vec![("shared-image".to_owned(), 100)]);
}

#[test]
fn delete_reports_volumes_it_could_not_delete() {
    let fake = Fake::new();
    created(&fake);
    fake.fail_next("delete_volume", Error::Failed("busy".to_owned()));
    let error = ops::vm_delete(&fake, &host(), "web1").expect_err("partial");
    match error {
        Error::Failed(message) => {
            assert!(
                message.starts_with("vm web1 was removed, but cleaning up failed: deleting volume"),
                "{message}"
            )
        }
        other => panic!("expected failed, got {other:?}"),
    }
    assert!(fake.domain("web1").is_none());
    assert_eq!(volumes(&fake).len(), 1, "the other volume is still deleted");
}

#[test]
fn power_actions_map_to_libvirt_operations() {
    let fake = Fake::new();
    created(&fake);
    for (action, operation, state) in [
        (PowerAction::Start, "lifecycle Start", PowerState::Running),
        (PowerAction::Reset, "lifecycle Reboot", PowerState::Running),
        (
            PowerAction::HardReset,
            "lifecycle Reset",
            PowerState::Running,
        ),
        (PowerAction::Pause, "lifecycle Suspend", PowerState::Paused),
        (PowerAction::Resume, "lifecycle Resume", PowerState::Running),
        (PowerAction::Stop, "lifecycle Shutdown", PowerState::Stopped),
        (PowerAction::Start, "lifecycle Start", PowerState::Running),
        (
            PowerAction::HardStop,
            "lifecycle Destroy",
            PowerState::Stopped,
        ),
    ] {
        let answered = ops::vm_power(&fake, "web1", action).expect("acts");
        assert_eq!(answered, state, "{action:?}");
        assert_eq!(
            fake.state.borrow().calls.last().map(String::as_str),
            Some(operation)
        );
    }
    let error = ops::vm_power(&fake, "web1", PowerAction::Resume).expect_err("not paused");
    assert_eq!(
        convert::message_of(&error),
        "resuming vm web1: domain is not running"
    );
}

fn cpu_of(fake: &Fake, vm: &str) -> Option<CpuModel> {
    let xml = fake.state.borrow().domains[vm].xml.clone();
    DomainDocument::parse(&xml).expect("parses").cpu()
}

#[test]
fn start_falls_back_to_a_cpu_model_the_host_runs_and_keeps_it() {
    let fake = Fake::new();
    created(&fake);
    assert_eq!(cpu_of(&fake, "web1"), Some(CpuModel::Passthrough));
    // As on AMD EPYC with nested KVM: only passthrough without
    // arch-capabilities, and the baseline model, start.
    fake.state.borrow_mut().unrunnable_cpus = vec![CpuModel::Passthrough, CpuModel::HostModel];
    let state = ops::vm_power(&fake, "web1", PowerAction::Start).expect("starts");
    assert_eq!(state, PowerState::Running);
    assert_eq!(
        cpu_of(&fake, "web1"),
        Some(CpuModel::PassthroughWithoutArchCapabilities)
    );
    assert!(
        fake.state
            .borrow()
            .logs
            .iter()
            .any(|line| line.contains("runs with host-passthrough without arch-capabilities")),
        "{:?}",
        fake.state.borrow().logs
    );
    // The next start uses the model that ran: no search, no redefinition.
    ops::vm_power(&fake, "web1", PowerAction::HardStop).expect("stops");
    let defines = fake.count("define_domain");
    ops::vm_power(&fake, "web1", PowerAction::Start).expect("starts again");
    assert_eq!(fake.count("define_domain"), defines);
}

/// The rate limit the fake server holds for `vm`: addresses and kbit/s.
fn rate_limit(fake: &Fake, vm: &str) -> Option<(Vec<String>, u64, u64)> {
    fake.state.borrow().rate_limits.get(vm).map(|limit| {
        (
            limit.addresses.clone(),
            limit.upload_kbps,
            limit.download_kbps,
        )
    })
}

#[test]
fn start_on_a_host_that_cannot_shape_runs_unshaped_and_is_policed_by_the_server() {
    let fake = Fake::new();
    created(&fake);
    let before = fake.state.borrow().domains["web1"].xml.clone();
    fake.state.borrow_mut().no_traffic_shaping = true;
    let state = ops::vm_power(&fake, "web1", PowerAction::Start).expect("starts unshaped");
    assert_eq!(state, PowerState::Running);
    // The definition keeps the speeds for a host that can shape them.
    assert_eq!(fake.state.borrow().domains["web1"].xml, before);
    // The server polices them meanwhile: 10 Mbit/s up, 100 down, both NICs.
    let addresses = vec!["192.168.122.10".to_owned(), "203.0.113.20".to_owned()];
    assert_eq!(
        rate_limit(&fake, "web1"),
        Some((addresses.clone(), 10_000, 100_000))
    );
    let logs = fake.state.borrow().logs.clone();
    assert!(
        logs.iter()
            .any(|line| line.contains("the server polices its speeds")
                && line.contains("up 10 Mbit/s, down 100 Mbit/s")
                && line.contains("qdisc kind is unknown")),
        "{logs:?}"
    );
    // No CPU model search for a bandwidth failure.
    assert_eq!(fake.count("lifecycle Start"), 2);

    // An over-quota throttle (new speeds, live) cannot shape either: the
    // server polices the throttle; speeds of 0 lift the limit.
    let mut throttled = spec();
    throttled.speed_up = 1;
    throttled.speed_down = 1;
    ops::vm_update(&fake, &host(), &throttled, &mut macs()).expect("the definition changes");
    assert_eq!(
        rate_limit(&fake, "web1"),
        Some((addresses.clone(), 1_000, 1_000))
    );
    let mut unlimited = spec();
    unlimited.speed_up = 0;
    unlimited.speed_down = 0;
    ops::vm_update(&fake, &host(), &unlimited, &mut macs()).expect("the definition changes");
    assert_eq!(rate_limit(&fake, "web1"), None);

    // A server without [nat] cannot police: the warning says what works.
    ops::vm_update(&fake, &host(), &spec(), &mut macs()).expect("the definition changes");
    ops::vm_power(&fake, "web1", PowerAction::HardStop).expect("stops");
    fake.fail_next(
        "nat_set_rate_limit",
        Error::Unsupported("port forwarding is not configured".to_owned()),
    );
    ops::vm_power(&fake, "web1", PowerAction::Start).expect("starts unshaped");
    let logs = fake.state.borrow().logs.clone();
    assert!(
        logs.iter()
            .any(|line| line.contains("runs without its bandwidth limits")
                && line
                    .contains("the server cannot police them: port forwarding is not configured")
                && line.contains("flu_over to pause")),
        "{logs:?}"
    );
    // Deleting the VM removes its limit.
    ops::vm_power(&fake, "web1", PowerAction::HardStop).expect("stops");
    ops::vm_power(&fake, "web1", PowerAction::Start).expect("starts unshaped");
    assert!(rate_limit(&fake, "web1").is_some());
    ops::vm_delete(&fake, &host(), "web1").expect("deletes");
    assert_eq!(rate_limit(&fake, "web1"), None);
}

#[test]
fn start_restores_the_definition_when_no_cpu_model_runs() {
    let fake = Fake::new();
    created(&fake);
    let before = fake.state.borrow().domains["web1"].xml.clone();
    fake.state.borrow_mut().unrunnable_cpus = CpuModel::FALLBACK.to_vec();
    let error = ops::vm_power(&fake, "web1", PowerAction::Start).expect_err("nothing runs");
    assert!(
        convert::message_of(&error)
            .starts_with("starting vm web1: qemu-system-x86_64: error: failed to set MSR"),
        "{error:?}"
    );
    assert_eq!(fake.state.borrow().domains["web1"].xml, before);
    assert_eq!(fake.count("lifecycle Start"), CpuModel::FALLBACK.len());
}

#[test]
fn start_leaves_a_cpu_the_operator_chose_alone() {
    let fake = Fake::new();
    fake.insert_domain(
        "<domain type='kvm'><name>web7</name><cpu mode='custom'><model>EPYC</model></cpu></domain>",
        PowerState::Stopped,
    );
    fake.fail_next("lifecycle Start", Error::Failed("no such CPU".to_owned()));
    let defines = fake.count("define_domain");
    ops::vm_power(&fake, "web7", PowerAction::Start).expect_err("fails");
    assert_eq!(fake.count("define_domain"), defines);
    assert_eq!(fake.count("lifecycle Start"), 1);
}

#[test]
fn usage_is_one_call_for_all_managed_vms() {
    let fake = Fake::new();
    created(&fake);
    fake.insert_domain(
        "<domain type='kvm'><name>other</name></domain>",
        PowerState::Running,
    );
    let calls_before = fake.state.borrow().calls.len();
    let usage = ops::vm_usage(&fake, &host()).expect("reads");
    assert_eq!(
        fake.state.borrow().calls[calls_before..],
        ["all_domain_stats"]
    );
    assert_eq!(usage.len(), 1);
    let web1 = &usage[0];
    assert_eq!((web1.vm_uuid.as_str(), web1.cpu_num), ("web1", 2));
    assert_eq!((web1.mem_total_mb, web1.mem_used_mb), (2048, 1024));
    assert_eq!((web1.hdd_total_mb, web1.hdd_used_mb), (10240, 3072));
    assert_eq!(
        (web1.cpu_time_ns, web1.net_rx_bytes, web1.net_tx_bytes),
        (123_000_000, 1000, 2000)
    );
}

#[test]
fn host_status_converts_units_and_counts_managed_vms() {
    let fake = Fake::new();
    created(&fake);
    fake.insert_domain(
        "<domain type='kvm'><name>web2</name></domain>",
        PowerState::Running,
    );
    fake.insert_domain(
        "<domain type='kvm'><name>other</name></domain>",
        PowerState::Running,
    );
    let status = ops::host_status(&fake, &host()).expect("reads");
    assert_eq!((status.vm_count, status.vm_running), (2, 1));
    assert_eq!((status.mem_total_mb, status.mem_used_mb), (65536, 49152));
    assert_eq!(
        (status.hdd_total_mb, status.hdd_used_mb),
        (1 << 20, 1 << 18)
    );
    assert_eq!((status.cpu_total, status.hostname.as_str()), (16, "node1"));
}

#[test]
fn console_needs_a_running_vm_and_reads_port_and_password() {
    let fake = Fake::new();
    created(&fake);
    let error = ops::vm_console(&fake, &host(), "web1").expect_err("stopped");
    assert!(matches!(error, Error::Invalid(_)), "{error:?}");
    ops::vm_power(&fake, "web1", PowerAction::Start).expect("starts");
    let console = ops::vm_console(&fake, &host(), "web1").expect("reads");
    assert_eq!(console.protocol, "vnc");
    assert_eq!(console.host, "127.0.0.1");
    assert_eq!(console.port, LIVE_VNC_PORT);
    assert_eq!(console.password, "vnc'<pass>");
}

#[test]
fn console_of_a_container_is_not_found() {
    let fake = Fake::new();
    let lxc = HostConfig {
        server_addr: "lxc:///".to_owned(),
        ..host()
    };
    ops::vm_create(&fake, &lxc, &spec(), &mut macs()).expect("creates");
    fake.set_state("web1", PowerState::Running);
    let error = ops::vm_console(&fake, &lxc, "web1").expect_err("no vnc");
    assert!(matches!(error, Error::NotFound(_)), "{error:?}");
}

#[test]
fn scan_reads_back_every_domain_with_the_prefix() {
    let fake = Fake::new();
    created(&fake);
    fake.insert_domain(
        "<domain type='kvm'><name>web2</name><vcpu>3</vcpu></domain>",
        PowerState::Stopped,
    );
    fake.insert_domain(
        "<domain type='kvm'><name>webx9</name></domain>",
        PowerState::Stopped,
    );
    let found = ops::vm_scan(&fake, &host(), "web").expect("scans");
    let names: Vec<&str> = found.iter().map(|info| info.vm_uuid.as_str()).collect();
    assert_eq!(names, ["web1", "web2", "webx9"]);
    assert_eq!(found[1].spec.cpu_num, 3);
    let found = ops::vm_scan(&fake, &host(), "webx").expect("scans");
    assert_eq!(found.len(), 1);
}

fn forward(target: &str) -> PortForward {
    PortForward {
        id: 7,
        protocol: Protocol::Tcp,
        public_port: 20022,
        target_addr: target.to_owned(),
        target_port: 22,
    }
}

#[test]
fn nat_resolves_the_vm_address_and_removes_by_id() {
    let fake = Fake::new();
    created(&fake);
    let applied = ops::nat_apply(&fake, &host(), "web1", forward("")).expect("applies");
    assert_eq!(applied.target_addr, "192.168.122.10");
    assert_eq!(fake.state.borrow().nat[0].target_addr, "192.168.122.10");

    let given = PortForward {
        id: 8,
        public_port: 20080,
        ..forward("192.168.122.99")
    };
    let applied = ops::nat_apply(&fake, &host(), "web1", given).expect("applies");
    assert_eq!(applied.target_addr, "192.168.122.99");

    let error =
        ops::nat_apply(&fake, &host(), "web1", forward("192.168.122.10")).expect_err("taken");
    assert!(matches!(error, Error::Conflict(_)), "{error:?}");

    ops::nat_remove(&fake, "web1", &forward("")).expect("removes");
    assert_eq!(fake.state.borrow().nat.len(), 1);
}

#[test]
fn nat_without_an_address_asks_for_lan_addr() {
    let fake = Fake::new();
    let mut no_address = spec();
    no_address.nics[0].ip4_addr = String::new();
    ops::vm_create(&fake, &host(), &no_address, &mut macs()).expect("creates");
    let error = ops::nat_apply(&fake, &host(), "web1", forward("")).expect_err("no address");
    match error {
        Error::Invalid(message) => {
            assert_eq!(message, "the VM web1 has no NAT address; give lan_addr")
        }
        other => panic!("expected invalid, got {other:?}"),
    }
    assert_eq!(fake.count("nat_add_rule"), 0);
}

#[test]
fn proxy_resolves_the_backend_and_removes_by_id() {
    let fake = Fake::new();
    created(&fake);
    let site = ProxySite {
        id: 3,
        domain: "www.example.com".to_owned(),
        backend_addr: String::new(),
        backend_port: 80,
        tls: None,
    };
    let applied = ops::proxy_apply(&fake, &host(), "web1", site.clone()).expect("applies");
    assert_eq!(applied.backend_addr, "192.168.122.10");
    assert_eq!(fake.state.borrow().proxy.len(), 1);
    ops::proxy_remove(&fake, "web1", &site).expect("removes");
    assert!(fake.state.borrow().proxy.is_empty());
}

#[test]
fn ip_apply_attaches_binds_and_records_the_nic() {
    let fake = Fake::new();
    created(&fake);
    let added = ops::ip_apply(
        &fake,
        &host(),
        "web1",
        nic("", NicKind::Nat, "", "192.168.122.12"),
        &mut || "52:54:00:00:00:99".to_owned(),
    )
    .expect("applies");
    assert_eq!(added.mac_addr, "52:54:00:00:00:99");
    assert_eq!(added.name, "nic2");
    assert!(
        fake.dhcp()
            .iter()
            .any(|binding| binding.ip == "192.168.122.12" && binding.name == "web1-nic2")
    );

    let info = ops::vm_get(&fake, &host(), "web1").expect("reads");
    let third = &info.spec.nics[2];
    assert_eq!(
        (third.name.as_str(), third.ip4_addr.as_str()),
        ("nic2", "192.168.122.12")
    );
    assert_eq!(third.kind, NicKind::Nat);
    assert_eq!(
        info.spec.hdd_mb, 8192,
        "recording a NIC keeps the rest of the metadata"
    );

    let error = ops::ip_apply(
        &fake,
        &host(),
        "web1",
        nic("x", NicKind::Pub, "52:54:00:00:00:99", ""),
        &mut macs(),
    )
    .expect_err("duplicate");
    assert!(matches!(error, Error::Conflict(_)), "{error:?}");
}

/// libvirt's test driver cannot attach or detach devices at all: the NIC
/// goes into the definition instead, and a running VM is told (a warning).
#[test]
fn nics_change_the_definition_where_the_driver_cannot_hot_plug() {
    let fake = Fake::new();
    created(&fake);
    ops::vm_power(&fake, "web1", PowerAction::Start).expect("starts");
    fake.fail_next(
        "attach_device",
        Error::Unsupported("this function is not supported by the connection driver".into()),
    );
    let added = ops::ip_apply(
        &fake,
        &host(),
        "web1",
        nic("", NicKind::Nat, "", "192.168.122.12"),
        &mut || "52:54:00:00:00:99".to_owned(),
    )
    .expect("applies to the definition");
    let info = ops::vm_get(&fake, &host(), "web1").expect("reads");
    assert!(
        info.spec
            .nics
            .iter()
            .any(|nic| nic.mac_addr == added.mac_addr),
        "{:?}",
        info.spec.nics
    );
    let logs = fake.state.borrow().logs.clone();
    assert!(
        logs.iter()
            .any(|line| line.contains("next start") && line.contains("52:54:00:00:00:99")),
        "{logs:?}"
    );

    fake.fail_next(
        "detach_device",
        Error::Unsupported("this function is not supported by the connection driver".into()),
    );
    ops::ip_remove(&fake, &host(), "web1", &added).expect("removes from the definition");
    let info = ops::vm_get(&fake, &host(), "web1").expect("reads");
    assert!(
        !info
            .spec
            .nics
            .iter()
            .any(|nic| nic.mac_addr == added.mac_addr)
    );
}

#[test]
fn ip_apply_detaches_again_when_binding_fails() {
    let fake = Fake::new();
    created(&fake);
    fake.fail_next(
        "dhcp_host_add",
        Error::Denied("outside the subnet".to_owned()),
    );
    let error = ops::ip_apply(
        &fake,
        &host(),
        "web1",
        nic("nic2", NicKind::Nat, "52:54:00:00:00:77", "10.9.9.9"),
        &mut macs(),
    )
    .expect_err("denied");
    assert!(matches!(error, Error::Denied(_)), "{error:?}");
    let model = DomainXml::from_xml(&fake.domain("web1").expect("defined").xml).expect("parses");
    assert!(model.interface_by_mac("52:54:00:00:00:77").is_none());
}

#[test]
fn ip_remove_detaches_and_unbinds_by_mac_or_by_name() {
    let fake = Fake::new();
    created(&fake);
    ops::vm_power(&fake, "web1", PowerAction::Start).expect("starts");
    ops::ip_remove(&fake, &host(), "web1", &nic("nic0", NicKind::Nat, "", "")).expect("removes");
    let info = ops::vm_get(&fake, &host(), "web1").expect("reads");
    assert_eq!(info.spec.nics.len(), 1);
    assert!(fake.dhcp().is_empty());

    ops::ip_remove(
        &fake,
        &host(),
        "web1",
        &nic("nic1", NicKind::Pub, "52:54:00:aa:bb:cc", ""),
    )
    .expect("removes");
    assert!(
        ops::vm_get(&fake, &host(), "web1")
            .expect("reads")
            .spec
            .nics
            .is_empty()
    );

    // Gone already: removing again is fine when the MAC is given.
    ops::ip_remove(
        &fake,
        &host(),
        "web1",
        &nic("nic1", NicKind::Pub, "52:54:00:aa:bb:cc", ""),
    )
    .expect("idempotent");
    let error = ops::ip_remove(&fake, &host(), "web1", &nic("nic5", NicKind::Pub, "", ""))
        .expect_err("unknown");
    assert!(matches!(error, Error::NotFound(_)), "{error:?}");
}

#[test]
fn ip_remove_reports_a_refused_detach_of_a_present_nic() {
    let fake = Fake::new();
    created(&fake);
    fake.fail_next(
        "detach_device",
        Error::NotFound("no such device".to_owned()),
    );
    let error = ops::ip_remove(&fake, &host(), "web1", &nic("nic0", NicKind::Nat, "", ""))
        .expect_err("refused");
    assert!(matches!(error, Error::NotFound(_)), "{error:?}");
    assert_eq!(fake.dhcp().len(), 1, "the binding stays with the NIC");
}

#[test]
fn describe_names_the_engine() {
    use openidcs_sdk::Engine;
    let info = <crate::LibvirtEngine as Engine>::describe();
    assert_eq!(info.name, "libvirt");
    assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
}
mod provisioning;
