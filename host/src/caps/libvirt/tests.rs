//! Unit tests of the XML rules (table-driven) and end-to-end tests against
//! libvirt's in-process `test:///default` driver (no daemon needed).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use super::*;
use crate::caps::NoTrap;

const STORAGE: &str = "/var/lib/openidcs";
const PREFIX: &str = "oid-";

fn scope_with(uri: &str, storage_dir: &str, allow_hostdev: bool) -> HostScope {
    HostScope {
        name: "h1".to_owned(),
        uri: uri.to_owned(),
        storage_dir: storage_dir.to_owned(),
        ports: 20000..=20100,
        vm_networks: vec!["192.168.122.0/24".parse().expect("literal")],
        public_addr: None,
        name_prefix: PREFIX.to_owned(),
        allow_hostdev,
        images: "/srv/images".to_owned(),
        api_credential: Default::default(),
        tls_pin: None,
    }
}

// ---------------------------------------------------------------- XML rules

/// What a check should answer: accepted, or refused with a message part.
enum Expect {
    Ok,
    Denied(&'static str),
    Invalid(&'static str),
}

fn domain(devices: &str) -> String {
    format!(
        "<domain type='kvm'><name>oid-vm1</name><memory unit='MiB'>64</memory><devices>{devices}</devices></domain>"
    )
}

fn file_disk(path: &str) -> String {
    format!("<disk type='file' device='disk'><source file='{path}'/><target dev='vda'/></disk>")
}

#[track_caller]
fn check_with(xml: &str, allow_hostdev: bool, expected: Expect) {
    let scope = scope_with("test:///default", STORAGE, allow_hostdev);
    let answer = if xml.contains("<domain") {
        xml_check::check_domain_xml(xml, &scope).map(drop)
    } else {
        xml_check::check_device_xml(xml, &scope)
    };
    match (expected, answer) {
        (Expect::Ok, Ok(())) => {}
        (Expect::Denied(part), Err(PluginError::Denied(message)))
        | (Expect::Invalid(part), Err(PluginError::Invalid(message))) => {
            assert!(
                message.contains(part),
                "message {message:?} lacks {part:?} for {xml}"
            );
        }
        (_, answer) => panic!("unexpected answer {answer:?} for {xml}"),
    }
}

#[track_caller]
fn check(xml: &str, expected: Expect) {
    check_with(xml, false, expected);
}

#[test]
fn xml_rules() {
    use Expect::{Denied, Invalid, Ok};
    let qemu = "http://libvirt.org/schemas/domain/qemu/1.0";
    // A plain domain, and disks inside the storage directory.
    check(&domain(""), Ok);
    // An LXC container's init is a path inside the container, not on the host.
    check(
        "<domain type='lxc'><name>oid-ct1</name><memory>65536</memory>\
         <os><type>exe</type><init>/sbin/init</init><initarg>--log-target=console</initarg></os></domain>",
        Ok,
    );
    check(&domain(&file_disk("/var/lib/openidcs/oid-vm1.img")), Ok);
    check(
        &domain(&file_disk("/var/lib/openidcs/./sub//oid-vm1.img")),
        Ok,
    );
    check(
        &domain(
            "<disk type='block'><source dev='/var/lib/openidcs/lv0'/><target dev='vdb'/></disk>",
        ),
        Ok,
    );
    check(
        &domain("<disk type='file' device='cdrom'><source file=''/><target dev='sda'/></disk>"),
        Ok,
    );
    // Driver namespaces, whatever the prefix.
    check(
        &format!(
            "<domain type='kvm' xmlns:evil='{qemu}'><name>oid-vm1</name><evil:commandline><evil:arg value='-x'/></evil:commandline></domain>"
        ),
        Denied("QEMU namespace"),
    );
    check(
        &format!(
            "<domain type='kvm' xmlns:qemu='{qemu}'><name>oid-vm1</name><qemu:commandline/></domain>"
        ),
        Denied("QEMU namespace"),
    );
    check(
        &format!("<domain type='kvm'><name>oid-vm1</name><commandline xmlns='{qemu}'/></domain>"),
        Denied("QEMU namespace"),
    );
    check(
        "<domain type='lxc' xmlns:lxc='http://libvirt.org/schemas/domain/lxc/1.0'><name>oid-vm1</name><lxc:namespace/></domain>",
        Denied("driver namespace"),
    );
    // Declaring the namespace without using it is harmless.
    check(
        &format!("<domain type='kvm' xmlns:qemu='{qemu}'><name>oid-vm1</name></domain>"),
        Ok,
    );
    // Host devices.
    let hostdev = "<hostdev mode='subsystem' type='pci'><source><address domain='0' bus='1' slot='0' function='0'/></source></hostdev>";
    check(&domain(hostdev), Denied("<hostdev>"));
    check_with(&domain(hostdev), true, Ok);
    check(hostdev, Denied("<hostdev>"));
    check(
        &domain(
            "<interface type='hostdev'><source><address type='pci' bus='1'/></source></interface>",
        ),
        Denied("hostdev"),
    );
    // Disk sources.
    check(
        &domain(&file_disk("/etc/shadow")),
        Denied(
            "disk source \"/etc/shadow\" is outside the host's storage directory \"/var/lib/openidcs\"",
        ),
    );
    check(
        &domain(&file_disk("/var/lib/x/../../etc/shadow")),
        Denied("\"..\""),
    );
    check(
        &domain(&file_disk("/var/lib/openidcs/../openidcs/x.img")),
        Denied("\"..\""),
    );
    check(&domain(&file_disk("/var/lib/openidcs")), Denied("outside"));
    check(
        &domain(&file_disk("/var/lib/openidcs-other/x.img")),
        Denied("outside"),
    );
    check(
        &domain(&file_disk("etc/shadow")),
        Denied("not an absolute path"),
    );
    check(
        &domain(&file_disk("/&#101;tc/shadow")),
        Denied("\"/etc/shadow\""),
    );
    check(
        &domain("<disk type='block'><source dev='/dev/sda'/><target dev='vda'/></disk>"),
        Denied("/dev/sda"),
    );
    check(
        &domain(
            "<disk type='file'><source file='/var/lib/openidcs/top.qcow2'/><backingStore type='file'><source file='/etc/passwd'/></backingStore><target dev='vda'/></disk>",
        ),
        Denied("/etc/passwd"),
    );
    check(file_disk("/etc/shadow").as_str(), Denied("outside"));
    check(file_disk("/var/lib/openidcs/data.img").as_str(), Ok);
    // Network disks and unknown disk kinds.
    check(
        &domain(
            "<disk type='network'><source protocol='nbd' name='x'><host name='10.0.0.1' port='10809'/></source><target dev='vda'/></disk>",
        ),
        Denied("network disk"),
    );
    check(
        &domain(
            "<disk type='file'><source protocol='rbd' name='pool/img'/><target dev='vda'/></disk>",
        ),
        Denied("protocol \"rbd\""),
    );
    check(
        &domain("<disk type='network'><target dev='vda'/></disk>"),
        Denied("network disk"),
    );
    check(
        &domain("<disk type='volume'><source pool='other' volume='v'/><target dev='vda'/></disk>"),
        Denied("disk type \"volume\""),
    );
    // Names.
    check(
        "<domain type='kvm'><name>vm1</name></domain>",
        Denied("does not start with the host's prefix \"oid-\""),
    );
    check(
        "<domain type='kvm'><name>oid-a b</name></domain>",
        Denied("must be 1 to 64 characters"),
    );
    check(
        &format!(
            "<domain type='kvm'><name>oid-{}</name></domain>",
            "x".repeat(61)
        ),
        Denied("must be 1 to 64"),
    );
    check(
        "<domain type='kvm'><name>oi<!-- -->d-vm1</name></domain>",
        Ok,
    );
    check(
        "<domain type='kvm'><name>oid-a</name><name>other</name></domain>",
        Invalid("exactly one <name>"),
    );
    check(
        "<domain type='kvm'></domain>",
        Invalid("exactly one <name>"),
    );
    // Malformed XML, DTDs, and the wrong root.
    check(
        "<domain type='kvm'><name>oid-vm1</name>",
        Invalid("malformed XML"),
    );
    check(
        "<domain><name>oid-vm1</name><qemu:commandline/></domain>",
        Invalid("malformed XML"),
    );
    check(
        "<!DOCTYPE domain [<!ENTITY x 'oid-vm1'>]><domain><name>&x;</name></domain>",
        Invalid("malformed XML"),
    );
    check("not xml at all", Invalid("malformed XML"));
    // Other doors to host files and programs.
    check(
        &domain("<serial type='file'><source path='/etc/cron.d/x'/></serial>"),
        Denied("/etc/cron.d/x"),
    );
    check(
        &domain("<serial type='pty'><log file='/root/.bashrc'/></serial>"),
        Denied("/root/.bashrc"),
    );
    check(
        &domain("<filesystem type='mount'><source dir='/'/><target dir='host'/></filesystem>"),
        Denied("\"/\""),
    );
    check(
        &domain("<input type='evdev'><source dev='/dev/input/event0'/></input>"),
        Denied("/dev/input/event0"),
    );
    check(
        &domain("<interface type='ethernet'><script path='/tmp/x.sh'/></interface>"),
        Denied("host program"),
    );
    check(
        &domain("<interface type='direct'><source dev='eth0' mode='bridge'/></interface>"),
        Ok,
    );
    check(
        &domain("<emulator>/tmp/evil</emulator>"),
        Denied("not a known hypervisor binary"),
    );
    check(
        &domain("<emulator>/usr/bin/qemu-system-x86_64</emulator>"),
        Ok,
    );
    check(
        &domain("<rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>"),
        Ok,
    );
    check(
        &domain("<rng model='virtio'><backend model='random'>/dev/sda</backend></rng>"),
        Denied("/dev/sda"),
    );
    check(
        &domain(
            "<tpm model='tpm-tis'><backend type='passthrough'><device path='/dev/tpm0'/></backend></tpm>",
        ),
        Denied("/dev/tpm0"),
    );
    check(
        "<domain type='kvm'><name>oid-vm1</name><os><type>hvm</type><kernel>/boot/vmlinuz</kernel></os></domain>",
        Denied("<kernel>"),
    );
    check(
        "<domain type='kvm'><name>oid-vm1</name><os><loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE.fd</loader>\
         <nvram template='/usr/share/OVMF/OVMF_VARS.fd'>/var/lib/libvirt/qemu/nvram/oid-vm1_VARS.fd</nvram></os></domain>",
        Ok,
    );
    check(
        "<domain type='kvm'><name>oid-vm1</name><os><nvram>/var/lib/libvirt/qemu/nvram/other_VARS.fd</nvram></os></domain>",
        Denied("<nvram>"),
    );
    check(
        "<domain type='kvm'><name>oid-vm1</name><resource><partition>/machine</partition></resource></domain>",
        Ok,
    );
    check(
        "<domain type='kvm'><name>oid-vm1</name><description>see /etc/motd</description></domain>",
        Ok,
    );
    // The domain's <metadata> is opaque to libvirt: engines' own elements pass.
    check(
        "<domain type='kvm'><name>oid-vm1</name><metadata><app:vm xmlns:app='urn:x'><app:disk type='volume' file='/etc/x'/>\
         <app:hostdev/></app:vm></metadata></domain>",
        Ok,
    );
    // ...but only the domain's own <metadata>.
    check(
        &domain("<metadata><hostdev/></metadata>"),
        Denied("<hostdev>"),
    );
    check(
        "<domain type='kvm'><name>oid-vm1\0</name></domain>",
        Invalid("NUL"),
    );
    check(
        "<domain type='kvm'><name>oid-vm1</name><seclabel type='none'/></domain>",
        Denied("seclabel"),
    );
    check(
        "<domain type='kvm'><name>oid-vm1</name><seclabel type='static' model='dac' relabel='no'><label>+0:+0</label></seclabel></domain>",
        Denied("seclabel"),
    );
    check(
        "<domain type='kvm'><name>oid-vm1</name><seclabel type='dynamic' model='selinux'/></domain>",
        Ok,
    );
    check(&domain("<smartcard mode='host'/>"), Denied("smartcard"));
    // Device XML that is a whole domain.
    check_device(&domain(""), Invalid("not a whole <domain>"));
}

#[track_caller]
fn check_device(xml: &str, expected: Expect) {
    let scope = scope_with("test:///default", STORAGE, false);
    match (expected, xml_check::check_device_xml(xml, &scope)) {
        (Expect::Invalid(part), Err(PluginError::Invalid(message))) => {
            assert!(message.contains(part), "{message}")
        }
        (_, answer) => panic!("unexpected answer {answer:?}"),
    }
}

#[test]
fn no_storage_directory_allows_no_disk() {
    let scope = scope_with("test:///default", "", false);
    let answer =
        xml_check::check_domain_xml(&domain(&file_disk("/var/lib/openidcs/a.img")), &scope);
    assert!(
        matches!(answer, Err(PluginError::Denied(message)) if message.contains("no storage directory"))
    );
}

#[test]
fn uri_rules() {
    let strict = UriPolicy::default();
    let check = |uri: &str| check_uri(uri, &strict);
    assert!(check("test:///default").is_ok());
    assert!(check("qemu+ssh://root@10.0.0.2/system").is_ok());
    assert!(
        matches!(check(""), Err(PluginError::Denied(message)) if message == "host has no server_addr")
    );
    assert!(
        matches!(check("xen:///system"), Err(PluginError::Denied(message)) if message.contains("\"xen:///system\""))
    );
    assert!(matches!(
        check("qemu+ext:///system?command=/bin/sh"),
        Err(PluginError::Denied(_))
    ));
    assert!(matches!(
        check("/var/run/libvirt"),
        Err(PluginError::Denied(_))
    ));
    // The connection applies the API's whole rule, not only the scheme:
    // a stored URI with an escape is refused even though its scheme is fine.
    for hostile in [
        "qemu+ssh://localhost/system?command=/tmp/x",
        "qemu+ssh://localhost/system?netcat=/tmp/x",
        "qemu:///system?socket=/tmp/x",
        "test:///etc/passwd",
    ] {
        assert!(
            matches!(check(hostile), Err(PluginError::Denied(_))),
            "{hostile}"
        );
    }
    let loose = UriPolicy {
        uri_params: vec!["keyfile".to_owned()],
        test_files: false,
        ..UriPolicy::default()
    };
    assert!(
        check_uri(
            "qemu+ssh://root@10.0.0.2/system?keyfile=/root/.ssh/id",
            &loose
        )
        .is_ok()
    );
}

#[test]
fn helpers() {
    assert_eq!(
        convert::parse_mac("52:54:00:AA:bb:0c").ok(),
        Some("52:54:00:aa:bb:0c".to_owned())
    );
    for bad in [
        "52:54:00:aa:bb",
        "52-54-00-aa-bb-cc",
        "52:54:00:aa:bb:cg",
        "52:54:00:aa:bb:ccc",
    ] {
        assert!(
            matches!(convert::parse_mac(bad), Err(PluginError::Invalid(_))),
            "{bad}"
        );
    }
    assert!(matches!(
        convert::parse_ip("192.168.122.300"),
        Err(PluginError::Invalid(_))
    ));
    let networks = HostScope {
        vm_networks: vec!["10.1.0.0/16".parse().expect("literal")],
        ..scope_with("test:///default", STORAGE, false)
    };
    assert!(networks.in_vm_networks(IpAddr::V4(Ipv4Addr::new(10, 1, 255, 3))));
    assert!(!networks.in_vm_networks(IpAddr::V4(Ipv4Addr::new(10, 2, 0, 1))));
    assert!(!networks.in_vm_networks("fd00::1".parse().expect("literal")));
    // A /0 contains everything, so it is no VM network at all.
    let whole_world = HostScope {
        vm_networks: vec![
            "0.0.0.0/0".parse().expect("literal"),
            "::/0".parse().expect("literal"),
        ],
        ..networks
    };
    assert!(!whole_world.in_vm_networks(IpAddr::V4(Ipv4Addr::new(10, 1, 255, 3))));
    assert!(!whole_world.in_vm_networks("fd00::1".parse().expect("literal")));
    assert_eq!(
        convert::dhcp_host_xml(
            "52:54:00:aa:bb:cc",
            &IpAddr::V4(Ipv4Addr::new(10, 1, 0, 5)),
            "a'b"
        ),
        "<host mac='52:54:00:aa:bb:cc' name='a&apos;b' ip='10.1.0.5'/>"
    );
    assert_eq!(convert::version_string(9_000_001), "9.0.1");
    assert_eq!(
        convert::power_state(u64::from(sys::VIR_DOMAIN_BLOCKED)),
        PowerState::Running
    );
    assert_eq!(
        convert::power_state(u64::from(sys::VIR_DOMAIN_SHUTDOWN)),
        PowerState::Stopping
    );
    assert_eq!(
        convert::power_state(u64::from(sys::VIR_DOMAIN_PMSUSPENDED)),
        PowerState::Suspended
    );
    assert_eq!(convert::power_state(99), PowerState::Unknown);
    let stats = convert::domain_stats(ffi::StatsRecord {
        name: "oid-a".to_owned(),
        uuid: String::new(),
        fields: [
            ("state.state", 1),
            ("cpu.time", 5),
            ("balloon.maximum", 4096),
            ("balloon.current", 2048),
            ("vcpu.current", 2),
            ("net.count", 2),
            ("net.0.rx.bytes", 10),
            ("net.1.rx.bytes", 20),
            ("net.1.tx.bytes", 7),
            ("block.count", 1),
            ("block.0.capacity", 100),
            ("block.0.allocation", 40),
        ]
        .iter()
        .map(|(field, value)| ((*field).to_owned(), *value))
        .collect(),
    });
    assert_eq!(
        (
            stats.state,
            stats.cpu_time_ns,
            stats.mem_max_kib,
            stats.mem_used_kib,
            stats.vcpus
        ),
        (PowerState::Running, 5, 4096, 2048, 2)
    );
    assert_eq!(
        (
            stats.net_rx_bytes,
            stats.net_tx_bytes,
            stats.disk_capacity_bytes,
            stats.disk_allocation_bytes
        ),
        (30, 7, 100, 40)
    );
}

// ------------------------------------------------------- test:///default
//
// Every connection to `test:///default` in one process shares one driver
// state while any of them is open, and the tests run in parallel: each test
// uses its own domain, volume, MAC and address.

fn call(service: &Arc<LibvirtService>, scope: HostScope) -> LibvirtCall {
    LibvirtCall::new(service.clone(), Some(Arc::new(scope)))
}

/// A call for a test-driver host whose storage directory is the driver's
/// `default-pool`.
fn test_host() -> (Arc<LibvirtService>, LibvirtCall) {
    let service = Arc::new(LibvirtService::new());
    let call = call(
        &service,
        scope_with("test:///default", "/default-pool", false),
    );
    (service, call)
}

fn test_domain(name: &str) -> String {
    format!(
        "<domain type='test'><name>{name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>\
         <os><type>hvm</type></os><devices><disk type='file' device='disk'>\
         <source file='/default-pool/{name}.img'/><target dev='vda'/></disk></devices></domain>"
    )
}

/// What the engine sees of a call that must not trap.
#[track_caller]
fn inner<T>(answer: Result<T, CapError>) -> Result<T, PluginError> {
    answer.no_trap()
}

#[track_caller]
fn ok<T>(answer: Result<T, CapError>) -> T {
    match inner(answer) {
        Ok(value) => value,
        Err(error) => panic!("call failed: {error:?}"),
    }
}

async fn names(call: &mut LibvirtCall) -> Vec<String> {
    ok(call.list_domains().await)
        .into_iter()
        .map(|domain| domain.name)
        .collect()
}

#[tokio::test]
async fn domain_lifecycle_on_the_test_driver() {
    let (_service, mut call) = test_host();
    let name = || "oid-life".to_owned();
    let defined = ok(call.define_domain(test_domain(&name())).await);
    assert_eq!(
        (defined.name.as_str(), defined.state),
        ("oid-life", PowerState::Stopped)
    );
    assert_eq!(defined.uuid.len(), 36);

    // The driver's own "test" domain does not carry the prefix: not listed.
    let listed = names(&mut call).await;
    assert!(
        listed.contains(&name()) && listed.iter().all(|listed| listed.starts_with(PREFIX)),
        "{listed:?}"
    );
    assert_eq!(ok(call.get_domain(name()).await).uuid, defined.uuid);
    assert!(ok(call.domain_xml(name(), true).await).contains("/default-pool/oid-life.img"));

    assert_eq!(
        ok(call.lifecycle(name(), LifecycleOp::Start).await),
        PowerState::Running
    );
    assert_eq!(
        ok(call.lifecycle(name(), LifecycleOp::Suspend).await),
        PowerState::Paused
    );
    assert_eq!(
        ok(call.lifecycle(name(), LifecycleOp::Resume).await),
        PowerState::Running
    );
    assert_eq!(
        ok(call.lifecycle(name(), LifecycleOp::Reboot).await),
        PowerState::Running
    );
    assert_eq!(
        ok(call.lifecycle(name(), LifecycleOp::Reset).await),
        PowerState::Running
    );
    // An operation the state does not allow is a conflict, not a fault.
    let again = inner(call.lifecycle(name(), LifecycleOp::Start).await);
    assert!(matches!(again, Err(PluginError::Conflict(_))), "{again:?}");
    let resume = inner(call.lifecycle(name(), LifecycleOp::Resume).await);
    assert!(
        matches!(resume, Err(PluginError::Conflict(_))),
        "{resume:?}"
    );

    let stats = ok(call.all_domain_stats().await);
    assert!(stats.iter().all(|stats| stats.name.starts_with(PREFIX)));
    let ours = stats.iter().find(|stats| stats.name == name());
    assert_eq!(ours.map(|stats| stats.state), Some(PowerState::Running));
    // The listing (states from one stats call, UUIDs formatted here) agrees
    // with libvirt's per-domain answers.
    let listed_state = |listed: &[Domain]| {
        listed
            .iter()
            .find(|domain| domain.name == name())
            .map(|domain| (domain.uuid.clone(), domain.state))
    };
    let looked_up = ok(call.get_domain(name()).await);
    assert_eq!(
        listed_state(&ok(call.list_domains().await)),
        Some((looked_up.uuid.clone(), PowerState::Running))
    );

    assert_eq!(
        ok(call.lifecycle(name(), LifecycleOp::Destroy).await),
        PowerState::Stopped
    );
    assert_eq!(
        listed_state(&ok(call.list_domains().await)),
        Some((looked_up.uuid, PowerState::Stopped))
    );
    ok(call.undefine_domain(name()).await);
    assert!(matches!(
        inner(call.get_domain(name()).await),
        Err(PluginError::NotFound(_))
    ));
    assert!(!names(&mut call).await.contains(&name()));
}

#[tokio::test]
async fn out_of_scope_domains_are_refused() {
    let (_service, mut call) = test_host();
    // "test" exists on the driver but is not this panel's.
    for answer in [
        inner(call.get_domain("test".to_owned()).await).map(drop),
        inner(call.domain_xml("test".to_owned(), false).await).map(drop),
        inner(
            call.lifecycle("test".to_owned(), LifecycleOp::Destroy)
                .await,
        )
        .map(drop),
        inner(call.undefine_domain("test".to_owned()).await),
        inner(
            call.attach_device("test".to_owned(), file_disk("/default-pool/x.img"), false)
                .await,
        ),
    ] {
        assert!(matches!(answer, Err(PluginError::Denied(_))), "{answer:?}");
    }
    assert!(matches!(
        inner(call.get_domain("oid-missing".to_owned()).await),
        Err(PluginError::NotFound(_))
    ));
}

#[tokio::test]
async fn denied_define_leaves_nothing_defined() {
    let (_service, mut call) = test_host();
    let evil = test_domain("oid-evil").replace("/default-pool/oid-evil.img", "/etc/shadow");
    let answer = inner(call.define_domain(evil).await);
    assert!(
        matches!(&answer, Err(PluginError::Denied(message)) if message.contains("/etc/shadow")),
        "{answer:?}"
    );
    assert!(!names(&mut call).await.contains(&"oid-evil".to_owned()));
    assert!(matches!(
        inner(call.get_domain("oid-evil".to_owned()).await),
        Err(PluginError::NotFound(_))
    ));
}

#[tokio::test]
async fn devices_are_checked_before_libvirt() {
    let (_service, mut call) = test_host();
    let name = || "oid-devices".to_owned();
    ok(call.define_domain(test_domain(&name())).await);
    let hostdev = "<hostdev mode='subsystem' type='usb'><source><vendor id='0x1'/><product id='0x2'/></source></hostdev>";
    let answer = inner(call.attach_device(name(), hostdev.to_owned(), false).await);
    assert!(matches!(answer, Err(PluginError::Denied(_))), "{answer:?}");
    let answer = inner(
        call.detach_device(name(), file_disk("/etc/shadow"), false)
            .await,
    );
    assert!(matches!(answer, Err(PluginError::Denied(_))), "{answer:?}");
    // A good device reaches libvirt; the test driver cannot hot-plug, so the
    // persistent change (the domain is not running) becomes a redefinition.
    let data_disk = file_disk("/default-pool/data.img").replace("vda", "vdb");
    ok(call.attach_device(name(), data_disk, true).await);
    let definition = ok(call.domain_xml(name(), true).await);
    assert!(
        definition.contains("/default-pool/data.img"),
        "{definition}"
    );
    ok(call.undefine_domain(name()).await);
}

/// The connection the service holds for `host`, if any.
fn held(service: &LibvirtService, host: &str) -> Option<Arc<Connection>> {
    service.lock().get(host).cloned()
}

#[tokio::test]
async fn one_connection_per_host_reopened_when_the_uri_changes() {
    let service = Arc::new(LibvirtService::new());
    let scope = scope_with("test:///default", "/default-pool", false);
    assert!(held(&service, "h1").is_none(), "opened lazily");
    ok(call(&service, scope.clone())
        .define_domain(test_domain("oid-conn"))
        .await);
    let first = held(&service, "h1");
    // A later call of the same host reuses the connection, and sees the domain.
    ok(call(&service, scope.clone())
        .get_domain("oid-conn".to_owned())
        .await);
    let second = held(&service, "h1");
    assert!(matches!((&first, &second), (Some(first), Some(second)) if Arc::ptr_eq(first, second)));

    // A new URI for the host: a new connection, to a driver state of its own
    // (a test driver started from a node file knows no oid-conn).
    // Driver files are the config's to allow.
    service.set_policy(UriPolicy {
        uri_params: Vec::new(),
        test_files: true,
        ..UriPolicy::default()
    });
    let node =
        std::env::temp_dir().join(format!("openidcs-libvirt-node-{}.xml", std::process::id()));
    std::fs::write(&node, "<node/>")
        .unwrap_or_else(|error| panic!("writing {}: {error}", node.display()));
    let moved = HostScope {
        uri: format!("test://{}", node.display()),
        ..scope.clone()
    };
    let answer = inner(
        call(&service, moved)
            .get_domain("oid-conn".to_owned())
            .await,
    );
    assert!(
        matches!(answer, Err(PluginError::NotFound(_))),
        "{answer:?}"
    );
    let third = held(&service, "h1");
    assert!(matches!((&first, &third), (Some(first), Some(third)) if !Arc::ptr_eq(first, third)));
    let _ = std::fs::remove_file(&node);

    service.close_host("h1");
    assert!(held(&service, "h1").is_none());
    // Back on test:///default (still shared by this test's `first`).
    ok(call(&service, scope)
        .undefine_domain("oid-conn".to_owned())
        .await);
}

#[test]
fn a_broken_connection_is_reopened_once() {
    let service = LibvirtService::new();
    let scope = scope_with("test:///default", "/default-pool", false);
    let calls = std::sync::atomic::AtomicUsize::new(0);
    assert!(
        service
            .with_connection(&scope, |connect| Ok(connect.get_type()?))
            .is_ok()
    );
    let before = held(&service, "h1").unwrap_or_else(|| panic!("no connection held"));
    let answer = service.with_connection(&scope, |connect| {
        if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            // A real connection-class error from libvirt ("invalid connection
            // pointer"), as a dead socket would give.
            // SAFETY: libvirt checks the pointer and reports an error for null.
            let _ = unsafe { sys::virConnectGetType(std::ptr::null_mut()) };
            return Err(Fail::Libvirt(virt::error::Error::last_error()));
        }
        Ok(connect.get_type()?)
    });
    assert_eq!(answer.ok().as_deref(), Some("TEST"));
    assert_eq!(
        calls.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "retried once"
    );
    let after = held(&service, "h1").unwrap_or_else(|| panic!("no connection held"));
    assert!(
        !Arc::ptr_eq(&before, &after),
        "the broken connection was replaced"
    );
    // A second connection failure in a row is answered, not retried forever.
    let always = service.with_connection(&scope, |_| -> Result<(), Fail> {
        // SAFETY: as above.
        let _ = unsafe { sys::virConnectGetType(std::ptr::null_mut()) };
        Err(Fail::Libvirt(virt::error::Error::last_error()))
    });
    assert!(matches!(always, Err(PluginError::Failed(_))), "{always:?}");
}

#[tokio::test]
async fn refusals_without_host_or_with_a_bad_uri() {
    let service = Arc::new(LibvirtService::new());
    let mut no_host_call = LibvirtCall::new(service.clone(), None);
    assert!(matches!(
        inner(no_host_call.list_domains().await),
        Err(PluginError::Denied(_))
    ));
    assert!(matches!(
        inner(no_host_call.get_domain("oid-vm1".to_owned()).await),
        Err(PluginError::Denied(_))
    ));
    let mut bad_uri = call(
        &service,
        scope_with("xen:///system", "/default-pool", false),
    );
    assert!(
        matches!(inner(bad_uri.list_domains().await), Err(PluginError::Denied(message)) if message.contains("xen"))
    );
    let mut no_uri = call(&service, scope_with("", "/default-pool", false));
    assert!(
        matches!(inner(no_uri.node_info().await), Err(PluginError::Denied(message)) if message.contains("server_addr"))
    );
}

#[tokio::test]
async fn volumes_in_the_storage_pool() {
    let (_service, mut call) = test_host();
    let name = || "oid-disk1".to_owned();
    let path = ok(call.create_volume(name(), 10).await);
    assert_eq!(path, "/default-pool/oid-disk1");
    assert!(matches!(
        inner(call.create_volume(name(), 10).await),
        Err(PluginError::Conflict(_))
    ));
    assert!(matches!(
        inner(call.resize_volume(name(), 5).await),
        Err(PluginError::Invalid(_))
    ));
    ok(call.resize_volume(name(), 10).await);
    // Growing reaches libvirt; the test driver cannot resize.
    assert!(matches!(
        inner(call.resize_volume(name(), 20).await),
        Err(PluginError::Unsupported(_))
    ));
    ok(call.delete_volume(name()).await);
    assert!(matches!(
        inner(call.delete_volume(name()).await),
        Err(PluginError::NotFound(_))
    ));
    for bad in ["disk1", "oid-../x", "oid-a/b", "", ".."] {
        let answer = inner(call.create_volume(bad.to_owned(), 1).await);
        assert!(
            matches!(answer, Err(PluginError::Denied(_))),
            "{bad}: {answer:?}"
        );
    }
    assert!(matches!(
        inner(call.create_volume("oid-big".to_owned(), u64::MAX).await),
        Err(PluginError::Invalid(_))
    ));
    assert!(matches!(
        inner(call.create_volume("oid-none".to_owned(), 0).await),
        Err(PluginError::Invalid(_))
    ));
}

#[tokio::test]
async fn volumes_need_a_pool_at_the_storage_directory() {
    let service = Arc::new(LibvirtService::new());
    let mut elsewhere = call(
        &service,
        scope_with("test:///default", "/var/lib/openidcs", false),
    );
    let answer = inner(elsewhere.create_volume("oid-disk2".to_owned(), 1).await);
    assert!(
        matches!(&answer, Err(PluginError::Failed(message)) if message.contains("/var/lib/openidcs")),
        "{answer:?}"
    );
    let mut nowhere = call(&service, scope_with("test:///default", "", false));
    assert!(matches!(
        inner(nowhere.create_volume("oid-disk2".to_owned(), 1).await),
        Err(PluginError::Denied(_))
    ));
}

#[tokio::test]
async fn dhcp_bindings_on_the_default_network() {
    let (_service, mut call) = test_host();
    let mac = || "52:54:00:AA:BB:CC".to_owned();
    let net = || "default".to_owned();
    let ip = |last: u8| format!("192.168.122.{last}");
    let name = || "oid-dhcp".to_owned();

    ok(call.dhcp_host_add(net(), mac(), ip(50), name()).await);
    let xml = ok(call.network_xml(net()).await);
    assert!(
        xml.contains("<host mac='52:54:00:aa:bb:cc' name='oid-dhcp' ip='192.168.122.50'/>"),
        "{xml}"
    );
    // The same binding again is a no-op; the MAC on another address conflicts.
    ok(call.dhcp_host_add(net(), mac(), ip(50), name()).await);
    let conflict = inner(call.dhcp_host_add(net(), mac(), ip(51), name()).await);
    assert!(
        matches!(conflict, Err(PluginError::Conflict(_))),
        "{conflict:?}"
    );

    ok(call.dhcp_host_remove(net(), mac(), ip(50)).await);
    let xml = ok(call.network_xml(net()).await);
    assert!(!xml.contains("52:54:00:aa:bb:cc"), "{xml}");
    // Removing it again is not an error.
    ok(call.dhcp_host_remove(net(), mac(), ip(50)).await);

    // Scope and input checks.
    let outside = inner(
        call.dhcp_host_add(net(), mac(), "10.9.9.9".to_owned(), name())
            .await,
    );
    assert!(
        matches!(outside, Err(PluginError::Denied(_))),
        "{outside:?}"
    );
    let removal_outside = inner(
        call.dhcp_host_remove(net(), mac(), "10.9.9.9".to_owned())
            .await,
    );
    assert!(
        matches!(removal_outside, Err(PluginError::Denied(_))),
        "{removal_outside:?}"
    );
    let bad_mac = inner(
        call.dhcp_host_add(net(), "52:54".to_owned(), ip(9), name())
            .await,
    );
    assert!(
        matches!(bad_mac, Err(PluginError::Invalid(_))),
        "{bad_mac:?}"
    );
    let bad_ip = inner(
        call.dhcp_host_add(net(), mac(), "192.168.122.".to_owned(), name())
            .await,
    );
    assert!(matches!(bad_ip, Err(PluginError::Invalid(_))), "{bad_ip:?}");
    let bad_name = inner(
        call.dhcp_host_add(net(), mac(), ip(9), "a'b".to_owned())
            .await,
    );
    assert!(
        matches!(bad_name, Err(PluginError::Invalid(_))),
        "{bad_name:?}"
    );
    let missing = inner(call.network_xml("nonet".to_owned()).await);
    assert!(
        matches!(missing, Err(PluginError::NotFound(_))),
        "{missing:?}"
    );
}

#[tokio::test]
async fn node_info_of_the_test_driver() {
    let (_service, mut call) = test_host();
    let info = ok(call.node_info().await);
    assert_eq!((info.hypervisor.as_str(), info.cpus), ("TEST", 16));
    assert!(info.mem_total_kib > 0);
    assert_eq!(
        info.hypervisor_version.split('.').count(),
        3,
        "{}",
        info.hypervisor_version
    );
    assert_eq!(info.storage_capacity_bytes, 107_374_182_400);
}

#[test]
fn backing_stores_may_be_images_and_channels_the_agents_socket() {
    use Expect::{Denied, Ok};
    let overlay = |backing: &str| {
        format!(
            "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>\
             <source file='{STORAGE}/oidcs-vm-system'/>\
             <backingStore type='file'><format type='qcow2'/><source file='{backing}'/>\
             <backingStore/></backingStore><target dev='vda'/></disk>"
        )
    };
    check(&overlay("/srv/images/debian-12.qcow2"), Ok);
    check(&overlay(&format!("{STORAGE}/base.qcow2")), Ok);
    check(
        &overlay("/etc/shadow"),
        Denied("outside the host's storage directory"),
    );
    check(&overlay("/srv/images/../../etc/shadow"), Denied(".."));
    // The image itself is never a guest's writable disk.
    check(&file_disk("/srv/images/debian-12.qcow2"), Denied("outside"));

    let channel = |path: &str| {
        format!(
            "<channel type='unix'><source mode='bind' path='{path}'/>\
             <target type='virtio' name='org.qemu.guest_agent.0'/></channel>"
        )
    };
    check(&channel(""), Ok);
    check(
        &channel("/var/lib/libvirt/qemu/channel/target/domain-3-oidcs-vm/org.qemu.guest_agent.0"),
        Ok,
    );
    check(
        &channel("/run/libvirt/qemu/channel/3-oidcs-vm/org.qemu.guest_agent.0"),
        Ok,
    );
    check(
        &channel("/run/libvirt/qemu/channel/3-oidcs-vm/other"),
        Denied("outside"),
    );
    check(&channel("/etc/passwd"), Denied("outside"));
}

#[test]
fn only_sha512_crypt_hashes_pass_as_guest_passwords() {
    let hash = "$6$abcdefgh$fBjixaOJXbtpeqJdiQsYIHIa42/fa3wTDb6nG6p2c3UDtaXL78djglFNAqhWp9XrkyON4rXLAbtWriSzgLCB50";
    assert!(super::is_sha512_crypt(hash));
    assert!(super::is_sha512_crypt(
        &hash.replace("$6$", "$6$rounds=5000$")
    ));
    assert!(!super::is_sha512_crypt("hunter2"));
    assert!(!super::is_sha512_crypt("$6$salt$short"));
    assert!(!super::is_sha512_crypt(&hash.replace("$6$", "$5$")));
    assert!(!super::is_sha512_crypt(&format!("{hash} ")));
}
