//! Tests of the domain model: building, reading libvirt's output back, and
//! editing a definition in place.

use super::xmltree::{self, Element};
use super::*;

fn nat_nic(mac: &str) -> InterfaceXml {
    InterfaceXml {
        source: NetSource::Network("default".to_owned()),
        mac: mac.to_owned(),
        bandwidth: Bandwidth::from_mbit(100, 10),
    }
}

fn metadata() -> VmMetadata {
    VmMetadata {
        os_name: "debian12".to_owned(),
        system: Some(VolumeMeta {
            name: "system".to_owned(),
            volume: "web1-system".to_owned(),
            size_mb: 8192,
        }),
        disks: vec![VolumeMeta {
            name: "data".to_owned(),
            volume: "web1-data".to_owned(),
            size_mb: 1024,
        }],
        nics: vec![NicMeta {
            name: "nic0".to_owned(),
            mac: "52:54:00:00:00:01".to_owned(),
            ip4: "10.0.0.5".to_owned(),
            ip6: String::new(),
            gate: "10.0.0.1".to_owned(),
            mask: "255.255.255.0".to_owned(),
            dns: vec!["1.1.1.1".to_owned(), "8.8.8.8".to_owned()],
        }],
    }
}

fn full_model(domain_type: DomainType) -> DomainXml {
    DomainXml::new("web1", domain_type)
        .uuid("6695eb01-f6a4-8304-79aa-97f2502e193f")
        .memory_mib(2048)
        .vcpus(2)
        .cpu_cap_percent(50)
        .disk(
            "/srv/vm/web1-system",
            if domain_type == DomainType::Lxc {
                "/"
            } else {
                "vda"
            },
        )
        .disk(
            "/srv/vm/web1-data",
            if domain_type == DomainType::Lxc {
                "/mnt/data"
            } else {
                "vdb"
            },
        )
        .interface(nat_nic("52:54:00:00:00:01"))
        .interface(InterfaceXml {
            source: NetSource::Bridge("br0".to_owned()),
            mac: "52:54:00:00:00:02".to_owned(),
            bandwidth: Bandwidth::default(),
        })
        .vnc(VncXml::fixed(5901, "127.0.0.1", "pa'ss"))
        .metadata(metadata())
}

#[test]
fn a_built_domain_reads_back_as_the_same_model() {
    for domain_type in [DomainType::Kvm, DomainType::Qemu, DomainType::Test] {
        let model = full_model(domain_type);
        let read = DomainXml::from_xml(&model.to_xml()).expect("parses");
        assert_eq!(read, model, "{domain_type:?}");
    }
}

#[test]
fn a_container_has_filesystems_an_exe_os_and_no_vnc() {
    let model = full_model(DomainType::Lxc);
    let xml = model.to_xml();
    let root = xmltree::parse(&xml).expect("parses");
    assert_eq!(
        root.path(&["os", "type"]).map(Element::text),
        Some("exe".to_owned())
    );
    assert_eq!(
        root.path(&["os", "init"]).map(Element::text),
        Some("/sbin/init".to_owned())
    );
    assert!(root.path(&["devices", "graphics"]).is_none(), "{xml}");
    assert!(root.path(&["devices", "disk"]).is_none(), "{xml}");
    let read = DomainXml::from_xml(&xml).expect("parses");
    assert_eq!(read.disks, model.disks);
    assert_eq!(read.vnc, None);
    assert_eq!(read.interfaces, model.interfaces);
}

#[test]
fn kvm_domains_get_acpi_a_serial_console_and_raw_virtio_disks() {
    let root = xmltree::parse(&full_model(DomainType::Kvm).to_xml()).expect("parses");
    assert_eq!(root.attr("type"), Some("kvm"));
    assert!(root.path(&["features", "acpi"]).is_some());
    assert_eq!(
        root.path(&["on_poweroff"]).map(Element::text),
        Some("destroy".to_owned())
    );
    let devices = root.child("devices").expect("devices");
    assert!(devices.child("serial").is_some());
    let disk = devices.child("disk").expect("disk");
    assert_eq!(
        disk.path(&["driver"]).and_then(|d| d.attr("type")),
        Some("raw")
    );
    assert_eq!(
        disk.path(&["target"]).and_then(|t| t.attr("bus")),
        Some("virtio")
    );
    let cputune = root.child("cputune").expect("cputune");
    assert_eq!(
        cputune.child("period").map(Element::text),
        Some("100000".to_owned())
    );
    assert_eq!(
        cputune.child("quota").map(Element::text),
        Some("50000".to_owned())
    );
    let interface = devices.child("interface").expect("interface");
    let inbound = interface.path(&["bandwidth", "inbound"]).expect("inbound");
    assert_eq!(inbound.attr("average"), Some("12500"));
}

#[test]
fn hostile_values_cannot_inject_markup() {
    let model = DomainXml::new("x'/><qemu:commandline>", DomainType::Kvm)
        .vnc(VncXml::autoport("127.0.0.1", "p\"w'<&>"));
    let xml = model.to_xml();
    assert!(!xml.contains("<qemu:commandline>"), "{xml}");
    let read = DomainXml::from_xml(&xml).expect("parses");
    assert_eq!(read.name, model.name);
    assert_eq!(read.vnc.map(|vnc| vnc.passwd), Some("p\"w'<&>".to_owned()));
}

#[test]
fn reads_libvirt_output_with_other_units_and_a_live_console() {
    let xml = r#"<domain type='kvm' id='7'>
  <name>web1</name>
  <uuid>0b6e3c9b-3a43-4f5e-9d1b-1f1c0e2d3a4b</uuid>
  <metadata>
    <other:app xmlns:other="urn:other"><other:vm/></other:app>
    <openidcs:vm xmlns:openidcs="https://openidcs.dev/xmlns/vm/0.1">
      <openidcs:os name="alma9"/>
    </openidcs:vm>
  </metadata>
  <memory unit='KiB'>1048576</memory>
  <currentMemory unit='KiB'>524288</currentMemory>
  <vcpu placement='static' current='1'>4</vcpu>
  <cputune><period>200000</period><quota>-1</quota></cputune>
  <devices>
    <disk type='file' device='cdrom'><source file='/iso/x.iso'/><target dev='sda' bus='sata'/></disk>
    <disk type='block' device='disk'><source dev='/dev/vg/web1'/><target dev='vda' bus='virtio'/></disk>
    <interface type='user'><mac address='52:54:00:aa:aa:aa'/></interface>
    <interface type='bridge'>
      <mac address='52:54:00:BB:bb:bb'/>
      <source bridge='br0'/>
      <bandwidth><outbound average='1250' peak='2500'/></bandwidth>
      <address type='pci' domain='0x0000' bus='0x01' slot='0x00' function='0x0'/>
    </interface>
    <graphics type='vnc' port='5903' autoport='yes' listen='0.0.0.0'>
      <listen type='address' address='0.0.0.0'/>
    </graphics>
  </devices>
</domain>"#;
    let read = DomainXml::from_xml(xml).expect("parses");
    assert_eq!(read.memory_mib, 1024);
    assert_eq!(read.vcpus, 4);
    assert_eq!(read.cpu_cap_percent, 0);
    assert_eq!(
        read.disks,
        vec![DiskXml {
            path: "/dev/vg/web1".to_owned(),
            target: "vda".to_owned(),
            format: DiskFormat::Raw,
        }]
    );
    assert_eq!(read.interfaces.len(), 1);
    assert_eq!(
        read.interfaces[0].source,
        NetSource::Bridge("br0".to_owned())
    );
    assert_eq!(read.interfaces[0].bandwidth.up_mbit(), 10);
    assert_eq!(read.interfaces[0].bandwidth.down_mbit(), 0);
    assert!(read.interface_by_mac("52:54:00:bb:BB:bb").is_some());
    assert_eq!(
        read.vnc,
        Some(VncXml {
            port: Some(5903),
            autoport: true,
            listen: "0.0.0.0".to_owned(),
            passwd: String::new(),
        })
    );
    assert_eq!(read.metadata.map(|m| m.os_name), Some("alma9".to_owned()));
}

#[test]
fn reads_cpu_caps_and_memory_units() {
    #[track_caller]
    fn cap(cputune: &str, expected: u32) {
        let xml = format!("<domain type='kvm'><name>a</name><cputune>{cputune}</cputune></domain>");
        assert_eq!(
            DomainXml::from_xml(&xml).expect("parses").cpu_cap_percent,
            expected
        );
    }
    cap("<quota>50000</quota>", 50);
    cap("<period>50000</period><quota>100000</quota>", 200);
    cap("<quota>-1</quota>", 0);
    cap("<shares>1024</shares>", 0);

    #[track_caller]
    fn memory(element: &str, expected_mib: u64) {
        let xml = format!("<domain type='kvm'><name>a</name>{element}</domain>");
        assert_eq!(
            DomainXml::from_xml(&xml).expect("parses").memory_mib,
            expected_mib
        );
    }
    memory("<memory>2097152</memory>", 2048);
    memory("<memory unit='GiB'>2</memory>", 2048);
    memory("<memory unit='b'>1048576</memory>", 1);
    memory("<memory unit='MiB'>300</memory>", 300);
    memory("<memory unit='parsecs'>3</memory>", 0);
}

#[test]
fn names_disks_like_the_kernel() {
    for (index, name) in [
        (0, "vda"),
        (1, "vdb"),
        (25, "vdz"),
        (26, "vdaa"),
        (27, "vdab"),
        (701, "vdzz"),
        (702, "vdaaa"),
    ] {
        assert_eq!(disk_target(index), name, "index {index}");
    }
}

#[test]
fn picks_the_domain_type_from_the_uri() {
    for (uri, expected) in [
        ("qemu:///system", Some(DomainType::Kvm)),
        ("qemu+ssh://root@10.0.0.2/system", Some(DomainType::Kvm)),
        ("test:///default", Some(DomainType::Test)),
        ("lxc:///", Some(DomainType::Lxc)),
        ("LXC:///", Some(DomainType::Lxc)),
        ("xen:///", None),
        ("", None),
    ] {
        assert_eq!(DomainType::for_uri(uri), expected, "{uri}");
    }
}

#[test]
fn converts_speeds_between_mbit_and_kbytes() {
    let bandwidth = Bandwidth::from_mbit(100, 8);
    assert_eq!(bandwidth.inbound_kbytes, 12_500);
    assert_eq!(bandwidth.outbound_kbytes, 1_000);
    assert_eq!(bandwidth.down_mbit(), 100);
    assert_eq!(bandwidth.up_mbit(), 8);
    assert_eq!(Bandwidth::from_mbit(u32::MAX, 0).down_mbit(), u32::MAX);
}

/// What libvirt answers for a domain we defined: our XML plus addresses,
/// controllers and a foreign metadata element.
fn as_libvirt_keeps_it(model: &DomainXml) -> String {
    let mut root = model.to_element();
    let devices = root.child_mut("devices").expect("devices");
    for device in devices.elements_mut() {
        if matches!(device.local_name(), "disk" | "interface") {
            device.push(
                Element::new("address")
                    .with_attr("type", "pci")
                    .with_attr("slot", "0x07"),
            );
        }
    }
    devices.push(Element::new("controller").with_attr("type", "usb"));
    root.child_mut("metadata")
        .expect("metadata")
        .push(Element::new("other:x").with_attr("xmlns:other", "urn:other"));
    root.edit_child("vcpu", |vcpu| vcpu.set_attr("current", "1"));
    root.push(Element::new("cpu").with_child(Element::new("topology").with_attr("sockets", "2")));
    root.to_xml()
}

#[test]
fn applying_the_model_read_back_changes_nothing_it_describes() {
    let xml = as_libvirt_keeps_it(&full_model(DomainType::Kvm));
    let mut document = DomainDocument::parse(&xml).expect("parses");
    let before = document.read();
    document.apply(&before);
    assert_eq!(document.read(), before);
    assert!(document.to_xml().contains("slot='0x07'"));
    assert!(document.to_xml().contains("<controller type='usb'/>"));
    assert!(
        document.to_xml().contains("current='1'"),
        "vcpus unchanged: current kept"
    );
}

#[test]
fn applying_a_new_model_edits_in_place_and_keeps_the_rest() {
    let xml = as_libvirt_keeps_it(&full_model(DomainType::Kvm));
    let mut document = DomainDocument::parse(&xml).expect("parses");
    let mut wanted = document.read();
    wanted.memory_mib = 4096;
    wanted.vcpus = 4;
    wanted.cpu_cap_percent = 0;
    wanted.disks.push(DiskXml {
        path: "/srv/vm/web1-logs".to_owned(),
        target: "vdc".to_owned(),
        format: DiskFormat::Raw,
    });
    wanted.interfaces[0].bandwidth = Bandwidth::from_mbit(200, 0);
    wanted.interfaces.remove(1);
    wanted.interfaces.push(nat_nic("52:54:00:00:00:03"));
    wanted.vnc = Some(VncXml::autoport("127.0.0.1", "new"));
    let mut metadata = metadata();
    metadata.os_name = "ubuntu24".to_owned();
    wanted.metadata = Some(metadata);
    document.apply(&wanted);

    let read = document.read();
    assert_eq!(
        read,
        DomainXml {
            uuid: read.uuid.clone(),
            ..wanted
        }
    );
    let root = &document.root;
    assert!(
        root.child("cputune").is_none(),
        "an empty cputune is dropped"
    );
    assert!(
        root.path(&["cpu", "topology"]).is_none(),
        "topology sized for 2 vCPUs is dropped"
    );
    assert_eq!(
        root.child("vcpu").and_then(|vcpu| vcpu.attr("current")),
        None
    );
    let devices = root.child("devices").expect("devices");
    let kept_nic = devices.child("interface").expect("first NIC");
    assert!(
        kept_nic.child("address").is_some(),
        "the kept NIC keeps its PCI address"
    );
    assert_eq!(devices.children_named("interface").count(), 2);
    assert!(devices.child("controller").is_some());
    let metadata = root.child("metadata").expect("metadata");
    assert!(
        metadata.child("x").is_some(),
        "other applications' metadata is kept"
    );
    assert_eq!(metadata.children_named("vm").count(), 1);
}

#[test]
fn applying_switches_a_nic_between_network_and_bridge() {
    let xml = full_model(DomainType::Kvm).to_xml();
    let mut document = DomainDocument::parse(&xml).expect("parses");
    let mut wanted = document.read();
    wanted.interfaces[0].source = NetSource::Bridge("br1".to_owned());
    document.apply(&wanted);
    let interface = document
        .root
        .path(&["devices", "interface"])
        .expect("interface");
    assert_eq!(interface.attr("type"), Some("bridge"));
    assert_eq!(interface.children_named("source").count(), 1);
    assert_eq!(
        document.read().interfaces[0].source,
        NetSource::Bridge("br1".to_owned())
    );
}

#[test]
fn a_document_must_be_a_domain() {
    assert!(DomainDocument::parse("<network/>").is_err());
    assert!(DomainDocument::parse("<domain").is_err());
}

#[test]
fn device_fragments_for_hotplug() {
    let nic = nat_nic("52:54:00:00:00:09");
    let read = xmltree::parse(&nic.to_xml(DomainType::Kvm)).expect("parses");
    assert_eq!(read.local_name(), "interface");
    assert_eq!(
        read.path(&["mac"]).and_then(|mac| mac.attr("address")),
        Some("52:54:00:00:00:09")
    );
    let disk = DiskXml {
        path: "/srv/vm/a b&c".to_owned(),
        target: "vdb".to_owned(),
        format: DiskFormat::Raw,
    };
    assert!(disk.to_xml(DomainType::Kvm).contains("a b&amp;c"));
}
