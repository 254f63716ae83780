//! Install from an image, first-boot seeds, passwords and the CPU probe,
//! against the fake host.

use openidcs_sdk::domain::{CpuModel, DiskFormat, DomainType, DomainXml, SEED_SERIAL};
use openidcs_sdk::{
    Error, FirstBoot, ImageEntry, InstallPlan, PasswordRoute, PowerAction, PowerState,
};

use super::{created, host, spec};
use crate::convert;
use crate::fake::{Fake, STORAGE_DIR};
use crate::ops;

const HASH: &str = "$6$abcdefgh$fBjixaOJXbtpeqJdiQsYIHIa42/fa3wTDb6nG6p2c3UDtaXL78djglFNAqhWp9XrkyON4rXLAbtWriSzgLCB50";

fn fake_with_image() -> Fake {
    let fake = Fake::new();
    fake.state
        .borrow_mut()
        .images
        .insert("debian-12.qcow2".to_owned(), ("qcow2".to_owned(), 2048));
    fake
}

fn boot(instance: &str) -> FirstBoot {
    FirstBoot {
        instance_id: instance.to_owned(),
        hostname: "web1".to_owned(),
        password_hash: HASH.to_owned(),
        ssh_keys: Vec::new(),
    }
}

fn plan(min_disk_mb: u64) -> InstallPlan {
    InstallPlan {
        image: ImageEntry {
            name: "Debian 12".to_owned(),
            file: "debian-12.qcow2".to_owned(),
            min_disk_mb,
        },
        linked_clone: true,
        first_boot: boot("web1-1"),
    }
}

fn definition(fake: &Fake) -> DomainXml {
    DomainXml::from_xml(&fake.domain("web1").expect("web1").xml).expect("xml")
}

#[test]
fn os_images_lists_the_catalogue_entries_the_storage_holds() {
    let fake = fake_with_image();
    let catalogue = vec![
        plan(4096).image,
        ImageEntry {
            name: "Gone".to_owned(),
            file: "missing.qcow2".to_owned(),
            min_disk_mb: 1,
        },
    ];
    let images = ops::os_images(&fake, &catalogue).expect("images");
    assert_eq!(images.len(), 1, "{images:?}");
    assert_eq!(images[0].name, "Debian 12");
    assert_eq!(images[0].format, "qcow2");
    assert_eq!(images[0].size_mb, 2048);
    assert_eq!(images[0].min_disk_mb, 4096);
    assert!(
        fake.state
            .borrow()
            .logs
            .iter()
            .any(|line| line.contains("missing.qcow2")),
        "the missing image is logged"
    );
}

#[test]
fn install_clones_the_image_grown_and_attaches_a_seed_and_the_agent() {
    let fake = fake_with_image();
    created(&fake);
    let info = ops::vm_install(&fake, &host(), &spec(), &plan(1024)).expect("install");
    assert_eq!(info.spec.os_name, "Debian 12");
    let state = fake.state.borrow();
    assert_eq!(
        state.clones.get("web1-system"),
        Some(&("debian-12.qcow2".to_owned(), true)),
        "the system disk is a linked clone"
    );
    assert_eq!(
        state.volumes.get("web1-system"),
        Some(&8192),
        "grown to hdd_mb"
    );
    assert_eq!(
        state.volumes.get("web1-data"),
        Some(&1024),
        "the data disk stays"
    );
    assert!(state.uploads.contains_key("web1-seed.img"));
    drop(state);
    let domain = definition(&fake);
    let system = domain
        .disk_by_path(&format!("{STORAGE_DIR}/web1-system"))
        .expect("system disk");
    assert_eq!(system.format, DiskFormat::Qcow2);
    assert_eq!(
        domain.seed.as_deref(),
        Some(format!("{STORAGE_DIR}/web1-seed.img").as_str())
    );
    assert_eq!(domain.disks.len(), 2, "the seed is not a data disk");
    let xml = fake.domain("web1").expect("web1").xml;
    assert!(
        xml.contains(SEED_SERIAL) && xml.contains("org.qemu.guest_agent.0"),
        "{xml}"
    );
}

#[test]
fn the_seed_carries_the_hash_and_each_nics_mac_and_address() {
    let fake = fake_with_image();
    created(&fake);
    ops::vm_install(&fake, &host(), &spec(), &plan(0)).expect("install");
    let image = fake.state.borrow().uploads["web1-seed.img"].clone();
    let text = String::from_utf8_lossy(&image).into_owned();
    assert!(text.contains(HASH), "the crypt hash is in the seed");
    assert!(text.contains("192.168.122.10/24"), "nic0's address");
    assert!(
        text.contains("52:54:00:aa:bb:cc"),
        "nic1 matched by its MAC"
    );
    assert!(
        !text.contains("root-secret"),
        "the spec's os-pass never reaches the seed"
    );
}

#[test]
fn the_system_disk_is_at_least_the_image_and_its_minimum() {
    let fake = fake_with_image();
    created(&fake);
    let mut small = spec();
    small.hdd_mb = 100;
    ops::vm_install(&fake, &host(), &small, &plan(3000)).expect("install");
    assert_eq!(fake.volumes().get("web1-system"), Some(&3000));
    ops::vm_install(&fake, &host(), &small, &plan(0)).expect("reinstall");
    assert_eq!(
        fake.volumes().get("web1-system"),
        Some(&2048),
        "the image's size"
    );
}

#[test]
fn reinstall_replaces_the_system_disk_and_the_seed_and_keeps_data() {
    let fake = fake_with_image();
    created(&fake);
    ops::vm_install(&fake, &host(), &spec(), &plan(0)).expect("install");
    let mut again = plan(0);
    again.first_boot = boot("web1-2");
    ops::vm_install(&fake, &host(), &spec(), &again).expect("reinstall");
    assert_eq!(
        fake.count("delete_volume"),
        2 + 2,
        "old system disk and seed, twice"
    );
    let image = fake.state.borrow().uploads["web1-seed.img"].clone();
    assert!(
        String::from_utf8_lossy(&image).contains("web1-2"),
        "new instance id"
    );
    assert_eq!(fake.volumes().get("web1-data"), Some(&1024));
    ops::vm_delete(&fake, &host(), "web1").expect("delete");
    assert!(
        fake.volumes().is_empty(),
        "the seed goes with the VM: {:?}",
        fake.volumes()
    );
}

#[test]
fn install_refuses_a_running_vm_and_a_missing_image() {
    let fake = fake_with_image();
    created(&fake);
    ops::vm_power(&fake, "web1", PowerAction::Start).expect("start");
    assert!(matches!(
        ops::vm_install(&fake, &host(), &spec(), &plan(0)),
        Err(Error::Conflict(_))
    ));
    ops::vm_power(&fake, "web1", PowerAction::HardStop).expect("stop");
    let mut missing = plan(0);
    missing.image.file = "nope.qcow2".to_owned();
    assert!(matches!(
        ops::vm_install(&fake, &host(), &spec(), &missing),
        Err(Error::NotFound(_))
    ));
    assert_eq!(fake.count("create_volume_from_image"), 0);
}

#[test]
fn password_goes_through_the_agent_or_waits_for_the_next_boot() {
    let fake = fake_with_image();
    created(&fake);
    ops::vm_install(&fake, &host(), &spec(), &plan(0)).expect("install");
    // Stopped: a new seed.
    let route = ops::vm_password(&fake, "web1", "root", &boot("web1-3")).expect("password");
    assert_eq!(route, PasswordRoute::NextBoot);
    let image = fake.state.borrow().uploads["web1-seed.img"].clone();
    assert!(String::from_utf8_lossy(&image).contains("web1-3"));
    // Running with an agent: at once.
    ops::vm_power(&fake, "web1", PowerAction::Start).expect("start");
    fake.state.borrow_mut().agents_answer = true;
    let route = ops::vm_password(&fake, "web1", "root", &boot("web1-4")).expect("password");
    assert_eq!(route, PasswordRoute::GuestAgent);
    assert_eq!(
        fake.state.borrow().guest_passwords,
        vec![("web1".to_owned(), "root".to_owned(), HASH.to_owned())]
    );
    // Running, agent silent: next boot.
    fake.state.borrow_mut().agents_answer = false;
    let route = ops::vm_password(&fake, "web1", "root", &boot("web1-5")).expect("password");
    assert_eq!(route, PasswordRoute::NextBoot);
    assert_eq!(
        fake.domain("web1").map(|domain| domain.state),
        Some(PowerState::Running)
    );
}

#[test]
fn the_cpu_probe_walks_the_fallback_chain() {
    let fake = Fake::new();
    fake.state.borrow_mut().unrunnable_cpus = vec![CpuModel::Passthrough, CpuModel::HostModel];
    let choice = ops::cpu_probe(&fake, &host(), None).expect("probe");
    assert_eq!(
        convert::describe_cpu(&choice),
        "host-passthrough -arch-capabilities"
    );
    assert_eq!(fake.state.borrow().tried_cpus.len(), 2);
    // A wanted choice that runs wins.
    let wanted = convert::cpu_choice_of(CpuModel::Baseline);
    let probed = ops::cpu_probe(&fake, &host(), Some(&wanted)).expect("probe");
    assert_eq!(convert::describe_cpu(&probed), "custom qemu64");
    // Nothing runs: failed, naming every model tried.
    fake.state.borrow_mut().unrunnable_cpus = CpuModel::FALLBACK.to_vec();
    let Err(Error::Failed(message)) = ops::cpu_probe(&fake, &host(), None) else {
        panic!("no model runs");
    };
    assert!(
        message.contains("host-model") && message.contains("qemu64"),
        "{message}"
    );
}

const AMD_NESTED: &str = include_str!("domcaps/amd-epyc-nested.xml");
const INTEL: &str = include_str!("domcaps/intel-skylake.xml");

#[test]
fn cpu_candidates_follow_the_domain_capabilities_of_each_vendor() {
    use CpuModel::{Baseline, HostModel, Passthrough, PassthroughWithoutArchCapabilities};
    // AMD with nested KVM: the host model requires arch-capabilities, which
    // QEMU cannot set; qemu64 is not usable (svm missing).
    assert_eq!(
        convert::cpu_candidates(Some(AMD_NESTED)),
        vec![PassthroughWithoutArchCapabilities, Passthrough, HostModel]
    );
    // Intel: arch-capabilities is the CPU's own; the plain order.
    assert_eq!(
        convert::cpu_candidates(Some(INTEL)),
        vec![
            Passthrough,
            PassthroughWithoutArchCapabilities,
            HostModel,
            Baseline
        ]
    );
    // Nothing to read: the plain order.
    assert_eq!(convert::cpu_candidates(None), CpuModel::FALLBACK.to_vec());
    assert_eq!(
        convert::cpu_candidates(Some("not xml")),
        CpuModel::FALLBACK.to_vec()
    );
    // A host without passthrough (TCG-only capabilities).
    let tcg = INTEL.replace(
        "<mode name='host-passthrough' supported='yes'>",
        "<mode name='host-passthrough' supported='no'>",
    );
    assert_eq!(
        convert::cpu_candidates(Some(&tcg)),
        vec![HostModel, Baseline]
    );
}

#[test]
fn the_probe_on_nested_amd_picks_passthrough_without_arch_capabilities_first_time() {
    let fake = Fake::new();
    {
        let mut state = fake.state.borrow_mut();
        state.domain_capabilities = Some(AMD_NESTED.to_owned());
        state.unrunnable_cpus = vec![CpuModel::Passthrough, CpuModel::HostModel];
    }
    let choice = ops::cpu_probe(&fake, &host(), None).expect("probe");
    assert_eq!(
        convert::describe_cpu(&choice),
        "host-passthrough -arch-capabilities"
    );
    assert_eq!(
        fake.state.borrow().tried_cpus.len(),
        1,
        "one throwaway domain"
    );
    // On Intel, passthrough runs and is kept.
    let fake = Fake::new();
    fake.state.borrow_mut().domain_capabilities = Some(INTEL.to_owned());
    let choice = ops::cpu_probe(&fake, &host(), None).expect("probe");
    assert_eq!(convert::describe_cpu(&choice), "host-passthrough");
}

#[test]
fn a_host_cpu_choice_goes_into_new_domains() {
    let fake = Fake::new();
    let mut host = host();
    host.extend_data =
        r#"{"cpu_mode":"host-passthrough","cpu_features":["-arch-capabilities"]}"#.to_owned();
    ops::vm_create(&fake, &host, &spec(), &mut super::macs()).expect("create");
    let domain = definition(&fake);
    let cpu = domain.cpu.expect("a cpu element");
    assert_eq!(
        CpuModel::of(&cpu),
        Some(CpuModel::PassthroughWithoutArchCapabilities)
    );
    assert_eq!(
        convert::host_cpu(&host).map(|choice| convert::describe_cpu(&choice)),
        Some("host-passthrough -arch-capabilities".to_owned())
    );
}

#[test]
fn virt_type_qemu_asks_for_software_emulation() {
    let mut host = host();
    assert_eq!(convert::domain_type(&host).ok(), Some(DomainType::Kvm));
    host.extend_data = r#"{"virt_type":"qemu"}"#.to_owned();
    assert_eq!(convert::domain_type(&host).ok(), Some(DomainType::Qemu));
    host.server_addr = "test:///default".to_owned();
    assert_eq!(convert::domain_type(&host).ok(), Some(DomainType::Test));
}

#[test]
fn speeds_change_a_running_vms_nics_live() {
    let fake = Fake::new();
    created(&fake);
    // Stopped: the definition alone carries the new speeds.
    let mut faster = spec();
    faster.speed_down = 200;
    ops::vm_update(&fake, &host(), &faster, &mut super::macs()).expect("update");
    assert!(fake.state.borrow().updated_devices.is_empty());
    ops::vm_power(&fake, "web1", PowerAction::Start).expect("start");
    faster.speed_down = 300;
    faster.speed_up = 30;
    ops::vm_update(&fake, &host(), &faster, &mut super::macs()).expect("update");
    let updated = fake.state.borrow().updated_devices.clone();
    assert_eq!(updated.len(), 2, "both NICs: {updated:?}");
    for (domain, xml, live) in &updated {
        assert_eq!(domain, "web1");
        assert!(*live);
        // 300 Mbit/s in = 37500 KB/s average, 30 out = 3750.
        assert!(
            xml.contains("<inbound average=\"37500\"") || xml.contains("<inbound average='37500'"),
            "{xml}"
        );
    }
    // The same speeds again: nothing to change.
    ops::vm_update(&fake, &host(), &faster, &mut super::macs()).expect("update");
    assert_eq!(fake.state.borrow().updated_devices.len(), 2);
}
