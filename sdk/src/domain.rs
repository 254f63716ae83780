//! libvirt domain XML for engines: build it, read it back, edit it in place.
//!
//! This module owns the shape of the domains an openidcs engine defines: a
//! [`DomainXml`] model (name, memory, vCPUs, CPU cap, raw file disks,
//! network/bridge NICs with bandwidth, a VNC console, and the openidcs
//! [`VmMetadata`] kept in `<metadata>`), its rendering to XML
//! ([`DomainXml::to_xml`]), its reading from libvirt's output
//! ([`DomainXml::from_xml`]) and [`DomainDocument`], which brings an existing
//! definition to a new model while keeping everything the model does not
//! describe (PCI addresses, controllers, the machine type, other devices).
//! It never talks to libvirt and knows nothing of the WIT types, so any Rust
//! engine that drives libvirt can reuse it.
//!
//! Every value ends up in the XML through [`xmltree::Element`], whose writer
//! escapes every attribute value and text with [`crate::xml::escape`]: a VM
//! name or a VNC password cannot inject markup.
//!
//! ```
//! use openidcs_sdk::domain::{Bandwidth, DomainType, DomainXml, InterfaceXml, NetSource, VncXml};
//!
//! let xml = DomainXml::new("web1", DomainType::Kvm)
//!     .memory_mib(2048)
//!     .vcpus(2)
//!     .disk("/var/lib/openidcs/web1-system", "vda")
//!     .interface(InterfaceXml {
//!         source: NetSource::Network("default".into()),
//!         mac: "52:54:00:12:34:56".into(),
//!         bandwidth: Bandwidth::from_mbit(100, 10),
//!     })
//!     .vnc(VncXml::autoport("127.0.0.1", "secret"))
//!     .to_xml();
//! let read_back = DomainXml::from_xml(&xml).unwrap();
//! assert_eq!(read_back.memory_mib, 2048);
//! assert_eq!(read_back.interfaces[0].bandwidth.down_mbit(), 100);
//! ```

pub mod xmltree;

use xmltree::{Element, XmlError};

/// Namespace of the openidcs element inside a domain's `<metadata>`.
pub const METADATA_NAMESPACE: &str = "https://openidcs.dev/xmlns/vm/0.1";
/// Prefix written for [`METADATA_NAMESPACE`] (libvirt keeps it as given).
pub const METADATA_PREFIX: &str = "openidcs";
/// CFS period written with a CPU cap, in microseconds (libvirt's default).
pub const CPU_PERIOD_US: u64 = 100_000;
/// Kilobytes per second in one Mbit/s (libvirt's `<bandwidth>` unit).
pub const KBYTES_PER_MBIT: u64 = 125;

/// The CPU a KVM guest is given, as a `<cpu>` element.
///
/// Hosts differ in what QEMU can run: on AMD EPYC with nested KVM both
/// `host-passthrough` and `host-model` abort with "failed to set MSR 0x10a"
/// (IA32_ARCH_CAPABILITIES), while passthrough with that one feature
/// disabled, or a named model, start. No vendor is assumed: an engine writes
/// the first of [`CpuModel::FALLBACK`] and, when a start fails, tries the
/// next ones until the host runs one ([`DomainDocument::set_cpu`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuModel {
    /// The host's CPU as it is (fastest; what most hosts run).
    Passthrough,
    /// The host's CPU without `arch-capabilities` (AMD with nested KVM).
    PassthroughWithoutArchCapabilities,
    /// libvirt's nearest named model to the host's CPU.
    HostModel,
    /// QEMU's baseline `qemu64` model, without checking host features.
    Baseline,
}

impl CpuModel {
    /// The order in which an engine tries CPU models, best first.
    pub const FALLBACK: [CpuModel; 4] = [
        CpuModel::Passthrough,
        CpuModel::PassthroughWithoutArchCapabilities,
        CpuModel::HostModel,
        CpuModel::Baseline,
    ];

    /// The name shown in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            CpuModel::Passthrough => "host-passthrough",
            CpuModel::PassthroughWithoutArchCapabilities => {
                "host-passthrough without arch-capabilities"
            }
            CpuModel::HostModel => "host-model",
            CpuModel::Baseline => "qemu64",
        }
    }

    /// The `<cpu>` element of this model.
    pub fn to_element(self) -> Element {
        let cpu = Element::new("cpu");
        match self {
            CpuModel::Passthrough => cpu
                .with_attr("mode", "host-passthrough")
                .with_attr("check", "none"),
            CpuModel::PassthroughWithoutArchCapabilities => cpu
                .with_attr("mode", "host-passthrough")
                .with_attr("check", "none")
                .with_child(
                    Element::new("feature")
                        .with_attr("policy", "disable")
                        .with_attr("name", "arch-capabilities"),
                ),
            CpuModel::HostModel => cpu.with_attr("mode", "host-model"),
            CpuModel::Baseline => cpu
                .with_attr("mode", "custom")
                .with_attr("match", "exact")
                .with_attr("check", "none")
                .with_child(
                    Element::new("model")
                        .with_attr("fallback", "allow")
                        .with_text("qemu64"),
                ),
        }
    }

    /// Which of these models a `<cpu>` element is; `None` for any other
    /// (an operator's own choice, which an engine leaves alone).
    pub fn of(cpu: &Element) -> Option<CpuModel> {
        let disabled_arch_capabilities = cpu.children_named("feature").any(|feature| {
            feature.attr("policy") == Some("disable")
                && feature.attr("name") == Some("arch-capabilities")
        });
        let n_features = cpu.children_named("feature").count();
        let model = cpu.child("model").map(Element::text);
        match (cpu.attr("mode"), n_features, model.as_deref()) {
            (Some("host-passthrough"), 0, None) => Some(CpuModel::Passthrough),
            (Some("host-passthrough"), 1, None) if disabled_arch_capabilities => {
                Some(CpuModel::PassthroughWithoutArchCapabilities)
            }
            (Some("host-model"), 0, _) => Some(CpuModel::HostModel),
            (Some("custom"), 0, Some("qemu64")) => Some(CpuModel::Baseline),
            _ => None,
        }
    }

    /// The models to try after this one, in order.
    pub fn next_ones(self) -> impl Iterator<Item = CpuModel> {
        CpuModel::FALLBACK
            .into_iter()
            .skip_while(move |model| *model != self)
            .skip(1)
    }
}

/// Which libvirt domain type to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DomainType {
    /// QEMU with KVM acceleration (the qemu driver's default here).
    Kvm,
    /// QEMU without acceleration (TCG).
    Qemu,
    /// libvirt's in-process test driver (`test:///default`).
    Test,
    /// An LXC container (`lxc:///`): an `exe` OS running `/sbin/init`.
    Lxc,
}

impl DomainType {
    /// The domain type for a connection URI, by its driver (`qemu+ssh://…`
    /// → `qemu` → [`DomainType::Kvm`]); `None` for drivers this module does
    /// not build for (xen, vbox, …).
    pub fn for_uri(uri: &str) -> Option<DomainType> {
        let scheme = uri.split(':').next().unwrap_or_default();
        let driver = scheme.split('+').next().unwrap_or_default();
        match driver.to_ascii_lowercase().as_str() {
            "qemu" => Some(DomainType::Kvm),
            "test" => Some(DomainType::Test),
            "lxc" => Some(DomainType::Lxc),
            _ => None,
        }
    }

    /// The `type` attribute of `<domain>`.
    pub fn as_str(self) -> &'static str {
        match self {
            DomainType::Kvm => "kvm",
            DomainType::Qemu => "qemu",
            DomainType::Test => "test",
            DomainType::Lxc => "lxc",
        }
    }

    /// The type for a `<domain type='…'>` value.
    pub fn from_attr(value: &str) -> Option<DomainType> {
        match value {
            "kvm" => Some(DomainType::Kvm),
            "qemu" => Some(DomainType::Qemu),
            "test" => Some(DomainType::Test),
            "lxc" => Some(DomainType::Lxc),
            _ => None,
        }
    }

    fn is_qemu(self) -> bool {
        matches!(self, DomainType::Kvm | DomainType::Qemu)
    }
}

/// A raw file disk. For containers ([`DomainType::Lxc`]) it is written as a
/// loop-mounted `<filesystem>` and `target` is the mount point (`/` for the
/// system disk); for VMs it is a virtio `<disk>` and `target` is its device
/// name (`vda`, see [`disk_target`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskXml {
    pub path: String,
    pub target: String,
    pub format: DiskFormat,
}

/// How a disk's file is laid out (the `<driver type=…>` QEMU reads it with).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DiskFormat {
    /// Plain bytes: the blank disks an engine creates.
    #[default]
    Raw,
    /// A qcow2 file: the copy-on-write overlay of an installed image.
    Qcow2,
}

impl DiskFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
        }
    }

    /// The format libvirt names (`qcow2`); anything else reads as raw.
    pub fn from_attr(value: &str) -> DiskFormat {
        if value == "qcow2" {
            DiskFormat::Qcow2
        } else {
            DiskFormat::Raw
        }
    }
}

/// What a NIC is plugged into.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetSource {
    /// `<interface type='network'>`: a libvirt network (NAT).
    Network(String),
    /// `<interface type='bridge'>`: a host bridge (public).
    Bridge(String),
}

/// Traffic shaping of a NIC in kilobytes per second; 0 = unlimited.
/// `inbound` is traffic to the VM (its download), `outbound` from it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bandwidth {
    pub inbound_kbytes: u64,
    pub outbound_kbytes: u64,
}

impl Bandwidth {
    /// From the panel's speeds in Mbit/s (0 = unlimited).
    pub fn from_mbit(down_mbit: u32, up_mbit: u32) -> Bandwidth {
        Bandwidth {
            inbound_kbytes: u64::from(down_mbit) * KBYTES_PER_MBIT,
            outbound_kbytes: u64::from(up_mbit) * KBYTES_PER_MBIT,
        }
    }

    /// The VM's download speed in Mbit/s, rounded.
    pub fn down_mbit(&self) -> u32 {
        kbytes_to_mbit(self.inbound_kbytes)
    }

    /// The VM's upload speed in Mbit/s, rounded.
    pub fn up_mbit(&self) -> u32 {
        kbytes_to_mbit(self.outbound_kbytes)
    }

    /// No limit either way (no `<bandwidth>` element).
    pub fn is_unlimited(&self) -> bool {
        self.inbound_kbytes == 0 && self.outbound_kbytes == 0
    }
}

fn kbytes_to_mbit(kbytes: u64) -> u32 {
    let mbit = kbytes.saturating_add(KBYTES_PER_MBIT / 2) / KBYTES_PER_MBIT;
    u32::try_from(mbit).unwrap_or(u32::MAX)
}

/// A NIC on a libvirt network or a bridge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceXml {
    pub source: NetSource,
    /// `52:54:00:…`; see [`crate::generate_mac`].
    pub mac: String,
    pub bandwidth: Bandwidth,
}

/// A VNC console.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VncXml {
    /// The port libvirt reports (the live one for a running domain with
    /// autoport); `None` when it reports none (`-1`).
    pub port: Option<u16>,
    /// libvirt picks the port at each start.
    pub autoport: bool,
    /// Listen address; empty = libvirt's default.
    pub listen: String,
    /// Empty = no password. libvirt hides it in live XML (read the inactive
    /// definition to get it).
    pub passwd: String,
}

impl VncXml {
    /// A console on a port libvirt picks at each start.
    pub fn autoport(listen: &str, passwd: &str) -> VncXml {
        VncXml {
            port: None,
            autoport: true,
            listen: listen.to_owned(),
            passwd: passwd.to_owned(),
        }
    }

    /// A console on a fixed port.
    pub fn fixed(port: u16, listen: &str, passwd: &str) -> VncXml {
        VncXml {
            port: Some(port),
            autoport: false,
            listen: listen.to_owned(),
            passwd: passwd.to_owned(),
        }
    }
}

/// A volume the engine created for a disk, as recorded in the metadata.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VolumeMeta {
    /// The panel's name of the disk (`system` for the system disk).
    pub name: String,
    /// The storage volume's name (what `delete-volume` takes).
    pub volume: String,
    pub size_mb: u64,
}

/// A NIC's addressing as the panel gave it; libvirt's own XML has no place
/// for it, so it lives in the metadata, keyed by MAC.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NicMeta {
    pub name: String,
    pub mac: String,
    pub ip4: String,
    pub ip6: String,
    pub gate: String,
    pub mask: String,
    pub dns: Vec<String>,
}

/// What the panel knows about a VM that libvirt's XML cannot say: the OS
/// image, the volumes and their sizes, the NICs' addresses. Kept in the
/// domain's `<metadata>` under [`METADATA_NAMESPACE`] so that an engine
/// stays stateless and still reads its VMs back whole.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VmMetadata {
    pub os_name: String,
    pub system: Option<VolumeMeta>,
    pub disks: Vec<VolumeMeta>,
    pub nics: Vec<NicMeta>,
}

impl VmMetadata {
    /// The recorded NIC with this MAC (compared case-insensitively).
    pub fn nic_by_mac(&self, mac: &str) -> Option<&NicMeta> {
        self.nics
            .iter()
            .find(|nic| nic.mac.eq_ignore_ascii_case(mac))
    }

    fn to_element(&self) -> Element {
        let tag = |local: &str| format!("{METADATA_PREFIX}:{local}");
        let volume = |local: &str, volume: &VolumeMeta| {
            Element::new(&tag(local))
                .with_attr("name", volume.name.as_str())
                .with_attr("volume", volume.volume.as_str())
                .with_attr("size-mb", volume.size_mb.to_string())
        };
        let mut root = Element::new(&tag("vm"))
            .with_attr(&format!("xmlns:{METADATA_PREFIX}"), METADATA_NAMESPACE)
            .with_child(Element::new(&tag("os")).with_attr("name", self.os_name.as_str()));
        if let Some(system) = &self.system {
            root.push(volume("system", system));
        }
        for disk in &self.disks {
            root.push(volume("disk", disk));
        }
        for nic in &self.nics {
            let mut element = Element::new(&tag("nic"))
                .with_attr("name", nic.name.as_str())
                .with_attr("mac", nic.mac.as_str())
                .with_attr("ip4", nic.ip4.as_str())
                .with_attr("ip6", nic.ip6.as_str())
                .with_attr("gate", nic.gate.as_str())
                .with_attr("mask", nic.mask.as_str());
            for server in &nic.dns {
                element.push(Element::new(&tag("dns")).with_text(server.as_str()));
            }
            root.push(element);
        }
        root
    }

    fn from_element(element: &Element) -> VmMetadata {
        let text =
            |element: &Element, name: &str| element.attr(name).unwrap_or_default().to_owned();
        let volume = |element: &Element| VolumeMeta {
            name: text(element, "name"),
            volume: text(element, "volume"),
            size_mb: element
                .attr("size-mb")
                .and_then(|size| size.trim().parse().ok())
                .unwrap_or(0),
        };
        VmMetadata {
            os_name: element
                .child("os")
                .map(|os| text(os, "name"))
                .unwrap_or_default(),
            system: element.child("system").map(volume),
            disks: element.children_named("disk").map(volume).collect(),
            nics: element
                .children_named("nic")
                .map(|nic| NicMeta {
                    name: text(nic, "name"),
                    mac: text(nic, "mac"),
                    ip4: text(nic, "ip4"),
                    ip6: text(nic, "ip6"),
                    gate: text(nic, "gate"),
                    mask: text(nic, "mask"),
                    dns: nic
                        .children_named("dns")
                        .map(Element::text)
                        .filter(|server| !server.is_empty())
                        .collect(),
                })
                .collect(),
        }
    }
}

/// Whether `element` is the openidcs element of a `<metadata>`: named `vm`
/// and bound to [`METADATA_NAMESPACE`] (other applications' `vm` elements
/// are left alone).
fn is_openidcs_metadata(element: &Element) -> bool {
    element.local_name() == "vm"
        && element.attributes.iter().any(|(name, value)| {
            (name == "xmlns" || name.starts_with("xmlns:")) && value == METADATA_NAMESPACE
        })
}

/// The device name of the `index`th virtio disk: `vda`…`vdz`, `vdaa`….
pub fn disk_target(index: usize) -> String {
    // Bijective base 26, as the kernel names disks.
    let mut letters = Vec::new();
    let mut rest = index + 1;
    while rest > 0 {
        rest -= 1;
        letters.push(b'a' + (rest % 26) as u8);
        rest /= 26;
    }
    letters.reverse();
    format!("vd{}", String::from_utf8_lossy(&letters))
}

/// A domain as openidcs engines define it. Fields are public so an engine
/// can adjust a model read back from libvirt; the chained setters make
/// building one read well.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainXml {
    pub name: String,
    /// Empty: libvirt assigns one at definition. Keep it when redefining,
    /// or libvirt refuses a second domain of the same name.
    pub uuid: String,
    pub domain_type: DomainType,
    pub memory_mib: u64,
    pub vcpus: u32,
    /// Cap of each vCPU in percent of one host CPU (`<cputune>` quota over
    /// [`CPU_PERIOD_US`]); 0 = none.
    pub cpu_cap_percent: u32,
    pub disks: Vec<DiskXml>,
    pub interfaces: Vec<InterfaceXml>,
    pub vnc: Option<VncXml>,
    pub metadata: Option<VmMetadata>,
    /// The `<cpu>` of a KVM domain; `None`: the first of [`CpuModel::FALLBACK`].
    pub cpu: Option<Element>,
    /// The first-boot seed disk ([`SEED_SERIAL`]), when the VM has one.
    pub seed: Option<String>,
}

/// The serial number that marks a VM's first-boot seed disk, so that it is
/// never read as one of the VM's data disks.
pub const SEED_SERIAL: &str = "cidata";

/// The virtio-serial port name QEMU's guest agent listens on.
pub const GUEST_AGENT_CHANNEL: &str = "org.qemu.guest_agent.0";

/// The `<cpu>` element of a host's CPU choice (`cpu_mode`, `cpu_features`).
pub fn cpu_element(choice: &crate::CpuChoice) -> Element {
    let mut cpu = Element::new("cpu").with_attr("mode", choice.mode.as_str());
    if choice.mode != "host-model" {
        cpu.set_attr("check", "none");
    }
    if choice.mode == "custom" {
        cpu.set_attr("match", "exact");
        cpu.push(
            Element::new("model")
                .with_attr("fallback", "allow")
                .with_text(choice.model.as_str()),
        );
    }
    for feature in &choice.disabled_features {
        cpu.push(
            Element::new("feature")
                .with_attr("policy", "disable")
                .with_attr("name", feature.as_str()),
        );
    }
    cpu
}

/// The read-only raw disk a seed image is attached as.
fn seed_element(path: &str, target: &str) -> Element {
    Element::new("disk")
        .with_attr("type", "file")
        .with_attr("device", "disk")
        .with_child(
            Element::new("driver")
                .with_attr("name", "qemu")
                .with_attr("type", "raw"),
        )
        .with_child(Element::new("source").with_attr("file", path))
        .with_child(
            Element::new("target")
                .with_attr("dev", target)
                .with_attr("bus", "virtio"),
        )
        .with_child(Element::new("readonly"))
        .with_child(Element::new("serial").with_text(SEED_SERIAL))
}

fn is_seed(device: &Element) -> bool {
    device.local_name() == "disk"
        && device
            .child("serial")
            .is_some_and(|serial| serial.text() == SEED_SERIAL)
}

/// The guest agent's virtio-serial channel; libvirt picks the host socket.
fn guest_agent_element() -> Element {
    Element::new("channel")
        .with_attr("type", "unix")
        .with_child(
            Element::new("target")
                .with_attr("type", "virtio")
                .with_attr("name", GUEST_AGENT_CHANNEL),
        )
}

fn is_guest_agent(device: &Element) -> bool {
    device.local_name() == "channel"
        && device
            .child("target")
            .is_some_and(|target| target.attr("name") == Some(GUEST_AGENT_CHANNEL))
}

impl DomainXml {
    /// A domain with 512 MiB and one vCPU, no devices yet.
    pub fn new(name: &str, domain_type: DomainType) -> DomainXml {
        DomainXml {
            name: name.to_owned(),
            uuid: String::new(),
            domain_type,
            memory_mib: 512,
            vcpus: 1,
            cpu_cap_percent: 0,
            disks: Vec::new(),
            interfaces: Vec::new(),
            vnc: None,
            metadata: None,
            cpu: None,
            seed: None,
        }
    }

    pub fn uuid(mut self, uuid: &str) -> DomainXml {
        self.uuid = uuid.to_owned();
        self
    }

    pub fn memory_mib(mut self, memory_mib: u64) -> DomainXml {
        self.memory_mib = memory_mib;
        self
    }

    pub fn vcpus(mut self, vcpus: u32) -> DomainXml {
        self.vcpus = vcpus;
        self
    }

    pub fn cpu_cap_percent(mut self, percent: u32) -> DomainXml {
        self.cpu_cap_percent = percent;
        self
    }

    pub fn disk(mut self, path: &str, target: &str) -> DomainXml {
        self.disks.push(DiskXml {
            path: path.to_owned(),
            target: target.to_owned(),
            format: DiskFormat::Raw,
        });
        self
    }

    pub fn interface(mut self, interface: InterfaceXml) -> DomainXml {
        self.interfaces.push(interface);
        self
    }

    pub fn vnc(mut self, vnc: VncXml) -> DomainXml {
        self.vnc = Some(vnc);
        self
    }

    pub fn metadata(mut self, metadata: VmMetadata) -> DomainXml {
        self.metadata = Some(metadata);
        self
    }

    /// The domain XML to give `define-domain`.
    pub fn to_xml(&self) -> String {
        self.to_element().to_xml()
    }

    /// The domain as an element tree.
    pub fn to_element(&self) -> Element {
        let kind = self.domain_type;
        let mut domain = Element::new("domain")
            .with_attr("type", kind.as_str())
            .with_child(Element::new("name").with_text(self.name.as_str()));
        if !self.uuid.is_empty() {
            domain.push(Element::new("uuid").with_text(self.uuid.as_str()));
        }
        if let Some(metadata) = &self.metadata {
            domain.push(Element::new("metadata").with_child(metadata.to_element()));
        }
        domain.push(memory_element("memory", self.memory_mib));
        domain.push(memory_element("currentMemory", self.memory_mib));
        domain.push(
            Element::new("vcpu")
                .with_attr("placement", "static")
                .with_text(self.vcpus.to_string()),
        );
        if self.cpu_cap_percent > 0 {
            domain.push(cputune_element(self.cpu_cap_percent));
        }
        let os = match kind {
            DomainType::Lxc => Element::new("os")
                .with_child(Element::new("type").with_text("exe"))
                .with_child(Element::new("init").with_text("/sbin/init")),
            _ => Element::new("os")
                .with_child(Element::new("type").with_text("hvm"))
                .with_child(Element::new("boot").with_attr("dev", "hd")),
        };
        domain.push(os);
        if kind.is_qemu() {
            // ACPI is what a graceful shutdown (`stop`) and reboot go through.
            domain.push(
                Element::new("features")
                    .with_child(Element::new("acpi"))
                    .with_child(Element::new("apic")),
            );
        }
        if kind == DomainType::Kvm {
            domain.push(
                self.cpu
                    .clone()
                    .unwrap_or_else(|| CpuModel::FALLBACK[0].to_element()),
            );
        }
        if kind != DomainType::Lxc {
            domain.push(Element::new("clock").with_attr("offset", "utc"));
        }
        domain.push(Element::new("on_poweroff").with_text("destroy"));
        domain.push(Element::new("on_reboot").with_text("restart"));
        domain.push(Element::new("on_crash").with_text("destroy"));

        let mut devices = Element::new("devices");
        for disk in &self.disks {
            devices.push(disk.to_element(kind));
        }
        if let Some(seed) = self.seed.as_deref().filter(|_| kind.is_qemu()) {
            devices.push(seed_element(seed, &self.free_disk_target()));
        }
        for interface in &self.interfaces {
            devices.push(interface.to_element(kind));
        }
        if kind == DomainType::Lxc {
            devices.push(Element::new("console").with_attr("type", "pty"));
        } else {
            devices.push(
                Element::new("serial")
                    .with_attr("type", "pty")
                    .with_child(Element::new("target").with_attr("port", "0")),
            );
            devices.push(
                Element::new("console").with_attr("type", "pty").with_child(
                    Element::new("target")
                        .with_attr("type", "serial")
                        .with_attr("port", "0"),
                ),
            );
        }
        if kind.is_qemu() {
            // How passwords reach a running guest (libvirt generates the
            // socket; the libvirt capability knows where it puts it).
            devices.push(guest_agent_element());
            // The tablet keeps the VNC pointer in sync.
            devices.push(
                Element::new("input")
                    .with_attr("type", "tablet")
                    .with_attr("bus", "usb"),
            );
        }
        // libvirt's LXC driver has no VNC: a container's console is its pty.
        if let Some(vnc) = self.vnc.as_ref().filter(|_| kind != DomainType::Lxc) {
            devices.push(vnc.to_element());
        }
        if kind.is_qemu() {
            devices.push(Element::new("memballoon").with_attr("model", "virtio"));
        }
        domain.push(devices);
        domain
    }

    /// Read a domain from libvirt's XML (live or inactive). Tolerant: what
    /// is missing reads as 0 or empty, devices this model does not describe
    /// are skipped, an unknown domain type reads as [`DomainType::Kvm`].
    pub fn from_xml(xml: &str) -> Result<DomainXml, XmlError> {
        Ok(DomainXml::from_element(&xmltree::parse(xml)?))
    }

    /// Read a domain from its element tree (see [`DomainXml::from_xml`]).
    pub fn from_element(domain: &Element) -> DomainXml {
        let domain_type = domain
            .attr("type")
            .and_then(DomainType::from_attr)
            .unwrap_or(DomainType::Kvm);
        let child_text = |name: &str| domain.child(name).map(Element::text).unwrap_or_default();
        let memory_mib = domain.child("memory").and_then(memory_mib_of).unwrap_or(0);
        let vcpus = child_text("vcpu").parse().unwrap_or(0);
        let cpu_cap_percent = domain.child("cputune").map(cap_percent_of).unwrap_or(0);
        let metadata = domain
            .child("metadata")
            .and_then(|metadata| metadata.elements().find(|e| is_openidcs_metadata(e)))
            .map(VmMetadata::from_element);
        let mut model = DomainXml {
            name: child_text("name"),
            uuid: child_text("uuid"),
            domain_type,
            memory_mib,
            vcpus,
            cpu_cap_percent,
            disks: Vec::new(),
            interfaces: Vec::new(),
            vnc: None,
            metadata,
            // The default model reads back as `None`, as it was built.
            cpu: domain
                .child("cpu")
                .filter(|cpu| **cpu != CpuModel::FALLBACK[0].to_element())
                .cloned(),
            seed: None,
        };
        if let Some(devices) = domain.child("devices") {
            model.disks = devices.elements().filter_map(disk_of).collect();
            model.seed = devices
                .elements()
                .find(|device| is_seed(device))
                .and_then(|seed| seed.child("source"))
                .and_then(|source| source.attr("file"))
                .map(str::to_owned);
            model.interfaces = devices.elements().filter_map(interface_of).collect();
            model.vnc = devices
                .children_named("graphics")
                .find(|graphics| graphics.attr("type") == Some("vnc"))
                .map(vnc_of);
        }
        model
    }

    /// The first virtio device name none of the disks has (a seed, a
    /// system disk added to a VM created without one).
    pub fn free_disk_target(&self) -> String {
        (0..)
            .map(disk_target)
            .find(|target| self.disks.iter().all(|disk| &disk.target != target))
            .unwrap_or_default()
    }

    /// The disk whose source is `path`.
    pub fn disk_by_path(&self, path: &str) -> Option<&DiskXml> {
        self.disks.iter().find(|disk| disk.path == path)
    }

    /// The NIC with this MAC (compared case-insensitively).
    pub fn interface_by_mac(&self, mac: &str) -> Option<&InterfaceXml> {
        self.interfaces
            .iter()
            .find(|interface| interface.mac.eq_ignore_ascii_case(mac))
    }
}

fn memory_element(name: &str, mib: u64) -> Element {
    Element::new(name)
        .with_attr("unit", "MiB")
        .with_text(mib.to_string())
}

fn cputune_element(percent: u32) -> Element {
    let mut cputune = Element::new("cputune");
    set_cputune(&mut cputune, percent);
    cputune
}

/// Write period and quota into `<cputune>`, keeping its other settings.
fn set_cputune(cputune: &mut Element, percent: u32) {
    // libvirt refuses quotas under 1 ms; a tiny cap becomes 1 %.
    let quota = (CPU_PERIOD_US * u64::from(percent) / 100).max(1_000);
    cputune.edit_child("period", |period| {
        period.set_text(CPU_PERIOD_US.to_string())
    });
    cputune.edit_child("quota", |element| element.set_text(quota.to_string()));
}

/// A size in MiB from a libvirt scaled integer (`unit` defaults to KiB).
fn memory_mib_of(element: &Element) -> Option<u64> {
    let value: u64 = element.text().parse().ok()?;
    let bytes_per_unit: u64 = match element.attr("unit").unwrap_or("KiB") {
        "b" | "bytes" => 1,
        "KB" => 1_000,
        "k" | "KiB" => 1 << 10,
        "MB" => 1_000_000,
        "M" | "MiB" => 1 << 20,
        "GB" => 1_000_000_000,
        "G" | "GiB" => 1 << 30,
        "TB" => 1_000_000_000_000,
        "T" | "TiB" => 1 << 40,
        _ => return None,
    };
    Some(value.saturating_mul(bytes_per_unit) / (1 << 20))
}

fn cap_percent_of(cputune: &Element) -> u32 {
    let number = |name: &str| -> Option<i64> { cputune.child(name)?.text().parse().ok() };
    let period = number("period")
        .filter(|period| *period > 0)
        .unwrap_or(CPU_PERIOD_US as i64);
    match number("quota") {
        // A negative quota means "no cap" to libvirt.
        Some(quota) if quota > 0 => {
            u32::try_from((quota * 100 + period / 2) / period).unwrap_or(u32::MAX)
        }
        _ => 0,
    }
}

fn disk_of(device: &Element) -> Option<DiskXml> {
    if is_seed(device) {
        return None;
    }
    let source = device.child("source");
    let target = device.child("target");
    match device.local_name() {
        "disk" if device.attr("device").unwrap_or("disk") == "disk" => {
            let source = source?;
            let path = source.attr("file").or_else(|| source.attr("dev"))?;
            Some(DiskXml {
                path: path.to_owned(),
                target: target?.attr("dev")?.to_owned(),
                format: DiskFormat::from_attr(
                    device
                        .child("driver")
                        .and_then(|driver| driver.attr("type"))
                        .unwrap_or("raw"),
                ),
            })
        }
        "filesystem" if device.attr("type") == Some("file") => Some(DiskXml {
            path: source?.attr("file")?.to_owned(),
            target: target?.attr("dir")?.to_owned(),
            format: DiskFormat::Raw,
        }),
        _ => None,
    }
}

fn interface_of(device: &Element) -> Option<InterfaceXml> {
    if device.local_name() != "interface" {
        return None;
    }
    let source = device.child("source");
    let source = match device.attr("type")? {
        "network" => NetSource::Network(source?.attr("network")?.to_owned()),
        "bridge" => NetSource::Bridge(source?.attr("bridge")?.to_owned()),
        _ => return None,
    };
    let average = |direction: &str| -> u64 {
        device
            .path(&["bandwidth", direction])
            .and_then(|element| element.attr("average"))
            .and_then(|average| average.parse().ok())
            .unwrap_or(0)
    };
    Some(InterfaceXml {
        source,
        mac: device
            .child("mac")
            .and_then(|mac| mac.attr("address"))
            .unwrap_or_default()
            .to_owned(),
        bandwidth: Bandwidth {
            inbound_kbytes: average("inbound"),
            outbound_kbytes: average("outbound"),
        },
    })
}

fn vnc_of(graphics: &Element) -> VncXml {
    let port = graphics
        .attr("port")
        .and_then(|port| port.parse::<i64>().ok())
        .and_then(|port| u16::try_from(port).ok())
        .filter(|port| *port > 0);
    let listen = graphics
        .attr("listen")
        .or_else(|| {
            graphics
                .children_named("listen")
                .find_map(|listen| listen.attr("address"))
        })
        .unwrap_or_default();
    VncXml {
        port,
        autoport: graphics.attr("autoport") == Some("yes"),
        listen: listen.to_owned(),
        passwd: graphics.attr("passwd").unwrap_or_default().to_owned(),
    }
}

impl DiskXml {
    /// The `<disk>` (or, for containers, `<filesystem>`) element.
    pub fn to_element(&self, domain_type: DomainType) -> Element {
        if domain_type == DomainType::Lxc {
            return Element::new("filesystem")
                .with_attr("type", "file")
                .with_attr("accessmode", "passthrough")
                .with_child(
                    Element::new("driver")
                        .with_attr("type", "loop")
                        .with_attr("format", "raw"),
                )
                .with_child(Element::new("source").with_attr("file", self.path.as_str()))
                .with_child(Element::new("target").with_attr("dir", self.target.as_str()));
        }
        let mut disk = Element::new("disk")
            .with_attr("type", "file")
            .with_attr("device", "disk");
        if domain_type.is_qemu() {
            disk.push(
                Element::new("driver")
                    .with_attr("name", "qemu")
                    .with_attr("type", self.format.as_str()),
            );
        }
        disk.with_child(Element::new("source").with_attr("file", self.path.as_str()))
            .with_child(
                Element::new("target")
                    .with_attr("dev", self.target.as_str())
                    .with_attr("bus", "virtio"),
            )
    }

    /// The XML text of [`DiskXml::to_element`] (for `attach-device`).
    pub fn to_xml(&self, domain_type: DomainType) -> String {
        self.to_element(domain_type).to_xml()
    }
}

impl InterfaceXml {
    /// The `<interface>` element.
    pub fn to_element(&self, domain_type: DomainType) -> Element {
        let mut interface = Element::new("interface");
        set_interface_source(&mut interface, &self.source);
        if !self.mac.is_empty() {
            interface.push(Element::new("mac").with_attr("address", self.mac.as_str()));
        }
        if domain_type != DomainType::Lxc {
            interface.push(Element::new("model").with_attr("type", "virtio"));
        }
        set_bandwidth(&mut interface, &self.bandwidth);
        interface
    }

    /// The XML text of [`InterfaceXml::to_element`] (for `attach-device` and
    /// `detach-device`, which find the NIC by its MAC).
    pub fn to_xml(&self, domain_type: DomainType) -> String {
        self.to_element(domain_type).to_xml()
    }
}

fn set_interface_source(interface: &mut Element, source: &NetSource) {
    let (kind, attribute, name) = match source {
        NetSource::Network(network) => ("network", "network", network),
        NetSource::Bridge(bridge) => ("bridge", "bridge", bridge),
    };
    interface.set_attr("type", kind);
    // A fresh <source> drops the other kind's attributes (and a stale
    // `portid` of a running network port).
    interface.remove_children("source");
    interface.children.insert(
        0,
        xmltree::Node::Element(Element::new("source").with_attr(attribute, name.as_str())),
    );
}

fn set_bandwidth(interface: &mut Element, bandwidth: &Bandwidth) {
    interface.remove_children("bandwidth");
    if bandwidth.is_unlimited() {
        return;
    }
    let mut element = Element::new("bandwidth");
    if bandwidth.inbound_kbytes > 0 {
        element.push(
            Element::new("inbound").with_attr("average", bandwidth.inbound_kbytes.to_string()),
        );
    }
    if bandwidth.outbound_kbytes > 0 {
        element.push(
            Element::new("outbound").with_attr("average", bandwidth.outbound_kbytes.to_string()),
        );
    }
    interface.push(element);
}

impl VncXml {
    /// The `<graphics type='vnc'>` element.
    pub fn to_element(&self) -> Element {
        let mut graphics = Element::new("graphics").with_attr("type", "vnc");
        self.write_to(&mut graphics);
        graphics
    }

    /// Write port, listen address and password into a graphics element,
    /// keeping its other attributes.
    fn write_to(&self, graphics: &mut Element) {
        match (self.autoport, self.port) {
            (false, Some(port)) => {
                graphics.set_attr("port", port.to_string());
                graphics.set_attr("autoport", "no");
            }
            _ => {
                graphics.set_attr("port", "-1");
                graphics.set_attr("autoport", "yes");
            }
        }
        if !self.listen.is_empty() {
            graphics.set_attr("listen", self.listen.as_str());
            graphics.remove_children("listen");
            graphics.push(
                Element::new("listen")
                    .with_attr("type", "address")
                    .with_attr("address", self.listen.as_str()),
            );
        }
        if self.passwd.is_empty() {
            graphics.remove_attr("passwd");
        } else {
            graphics.set_attr("passwd", self.passwd.as_str());
        }
    }
}

/// An existing domain definition being brought to a new [`DomainXml`].
///
/// Redefining from a freshly built document would drop what libvirt added
/// (PCI addresses, controllers, the machine type) and could renumber the
/// guest's devices; [`DomainDocument::apply`] edits only what the model
/// describes and keeps the rest as read.
#[derive(Clone, Debug)]
pub struct DomainDocument {
    pub root: Element,
}

impl DomainDocument {
    /// Read libvirt's XML of a domain (use the inactive definition).
    pub fn parse(xml: &str) -> Result<DomainDocument, XmlError> {
        let root = xmltree::parse(xml)?;
        if root.local_name() != "domain" {
            return Err(XmlError {
                offset: 0,
                message: format!("expected <domain>, found <{}>", root.name),
            });
        }
        Ok(DomainDocument { root })
    }

    /// The model of the document as it stands.
    pub fn read(&self) -> DomainXml {
        DomainXml::from_element(&self.root)
    }

    /// The document as XML text, for `define-domain`.
    pub fn to_xml(&self) -> String {
        self.root.to_xml()
    }

    /// The CPU model of a KVM domain, when it is one of [`CpuModel`]'s.
    pub fn cpu(&self) -> Option<CpuModel> {
        self.root.child("cpu").and_then(CpuModel::of)
    }

    /// Replace the `<cpu>` element (or add it) with `model`'s.
    pub fn set_cpu(&mut self, model: CpuModel) {
        // libvirt reads a domain's elements in any order.
        self.root.remove_children("cpu");
        self.root.push(model.to_element());
    }

    /// Replace the `<cpu>` element with `cpu`.
    pub fn set_cpu_element(&mut self, cpu: Element) {
        self.root.remove_children("cpu");
        self.root.push(cpu);
    }

    /// Attach the seed disk at `path` (`None`: detach it), replacing any
    /// seed the domain had.
    pub fn set_seed(&mut self, path: Option<&str>) {
        let current = self.read();
        self.root.edit_child("devices", |devices| {
            devices.retain_elements(|device| !is_seed(device));
            if let Some(path) = path {
                devices.push(seed_element(path, &current.free_disk_target()));
            }
        });
    }

    /// Write the disk at `path` as `format` (an installed system disk is a
    /// qcow2 overlay where a blank one was raw).
    pub fn set_disk_format(&mut self, path: &str, format: DiskFormat) {
        self.root.edit_child("devices", |devices| {
            for device in devices.elements_mut() {
                if disk_of(device).is_some_and(|disk| disk.path == path) {
                    device.edit_child("driver", |driver| {
                        driver.set_attr("name", "qemu");
                        driver.set_attr("type", format.as_str());
                    });
                }
            }
        });
    }

    /// The XML of the NIC with this MAC as the document has it, with
    /// `bandwidth` instead of its own (for `update-device`); `None` when the
    /// NIC is absent or already has that bandwidth.
    pub fn interface_with_bandwidth(&self, mac: &str, bandwidth: &Bandwidth) -> Option<String> {
        let devices = self.root.child("devices")?;
        let element = devices.elements().find(|device| {
            interface_of(device).is_some_and(|interface| interface.mac.eq_ignore_ascii_case(mac))
        })?;
        if interface_of(element).is_some_and(|interface| interface.bandwidth == *bandwidth) {
            return None;
        }
        let mut changed = element.clone();
        set_bandwidth(&mut changed, bandwidth);
        Some(changed.to_xml())
    }

    /// Remove every NIC's `<bandwidth>`; whether there was one. For a host
    /// whose kernel cannot shape traffic (libvirt's `tc` fails).
    pub fn clear_bandwidth(&mut self) -> bool {
        self.root.edit_child("devices", |devices| {
            let mut cleared = false;
            for device in devices.elements_mut() {
                if interface_of(device).is_some_and(|interface| !interface.bandwidth.is_unlimited())
                {
                    device.remove_children("bandwidth");
                    cleared = true;
                }
            }
            cleared
        })
    }

    /// Add the guest agent channel when the domain has none.
    pub fn ensure_guest_agent(&mut self) {
        self.root.edit_child("devices", |devices| {
            if !devices.elements().any(is_guest_agent) {
                devices.push(guest_agent_element());
            }
        });
    }

    /// Replace the openidcs metadata only (`None` removes it). Use this, not
    /// [`DomainDocument::apply`], to record something without touching the
    /// rest of the definition.
    pub fn set_metadata(&mut self, metadata: Option<&VmMetadata>) {
        apply_metadata(&mut self.root, metadata);
    }

    /// Bring the document to `model`: memory, vCPUs, CPU cap, disks (matched
    /// by path), network/bridge NICs (matched by MAC; updated in place,
    /// removed or appended), the VNC console and the openidcs metadata. The
    /// name, UUID and type are kept from the document. Other devices (and
    /// disks or NICs of kinds the model does not describe) stay as they are.
    pub fn apply(&mut self, model: &DomainXml) {
        let current = self.read();
        let domain_type = current.domain_type;
        let root = &mut self.root;

        for name in ["memory", "currentMemory"] {
            root.edit_child(name, |memory| {
                memory.set_attr("unit", "MiB");
                memory.set_text(model.memory_mib.to_string());
            });
        }

        if current.vcpus != model.vcpus {
            root.edit_child("vcpu", |vcpu| {
                vcpu.set_text(model.vcpus.to_string());
                // `current` above the new maximum would be refused.
                vcpu.remove_attr("current");
            });
            // A per-vCPU list and a topology were sized for the old count.
            root.remove_children("vcpus");
            if let Some(cpu) = root.child_mut("cpu") {
                cpu.remove_children("topology");
            }
        }

        if model.cpu_cap_percent > 0 {
            root.edit_child("cputune", |cputune| {
                set_cputune(cputune, model.cpu_cap_percent)
            });
        } else if let Some(cputune) = root.child_mut("cputune") {
            cputune.remove_children("period");
            cputune.remove_children("quota");
        }
        root.retain_elements(|element| {
            element.local_name() != "cputune" || element.elements().next().is_some()
        });

        root.edit_child("devices", |devices| {
            apply_disks(devices, &current, model, domain_type);
            apply_interfaces(devices, model, domain_type);
            apply_vnc(devices, model, domain_type);
        });

        apply_metadata(root, model.metadata.as_ref());
    }
}

fn apply_disks(
    devices: &mut Element,
    current: &DomainXml,
    model: &DomainXml,
    domain_type: DomainType,
) {
    devices.retain_elements(|device| match disk_of(device) {
        Some(disk) => model.disk_by_path(&disk.path).is_some(),
        None => true,
    });
    for disk in &model.disks {
        if current.disk_by_path(&disk.path).is_none() {
            devices.push(disk.to_element(domain_type));
        }
    }
}

fn apply_interfaces(devices: &mut Element, model: &DomainXml, domain_type: DomainType) {
    let mut present = Vec::new();
    devices.retain_elements(|device| match interface_of(device) {
        Some(interface) => model.interface_by_mac(&interface.mac).is_some(),
        None => true,
    });
    for device in devices.elements_mut() {
        let Some(interface) = interface_of(device) else {
            continue;
        };
        if let Some(wanted) = model.interface_by_mac(&interface.mac) {
            if interface.source != wanted.source {
                set_interface_source(device, &wanted.source);
            }
            set_bandwidth(device, &wanted.bandwidth);
            present.push(interface.mac.to_ascii_lowercase());
        }
    }
    for interface in &model.interfaces {
        if !present.contains(&interface.mac.to_ascii_lowercase()) {
            devices.push(interface.to_element(domain_type));
        }
    }
}

fn apply_vnc(devices: &mut Element, model: &DomainXml, domain_type: DomainType) {
    let is_vnc = |element: &Element| {
        element.local_name() == "graphics" && element.attr("type") == Some("vnc")
    };
    match model
        .vnc
        .as_ref()
        .filter(|_| domain_type != DomainType::Lxc)
    {
        Some(vnc) => {
            let existing = devices.elements_mut().find(|element| is_vnc(element));
            if let Some(graphics) = existing {
                vnc.write_to(graphics);
            } else {
                devices.push(vnc.to_element());
            }
        }
        None => devices.retain_elements(|element| !is_vnc(element)),
    }
}

fn apply_metadata(root: &mut Element, metadata: Option<&VmMetadata>) {
    if let Some(element) = root.child_mut("metadata") {
        element.retain_elements(|child| !is_openidcs_metadata(child));
    }
    match metadata {
        Some(metadata) => {
            root.edit_child("metadata", |element| element.push(metadata.to_element()))
        }
        None => root.retain_elements(|element| {
            element.local_name() != "metadata" || element.elements().next().is_some()
        }),
    }
}

#[cfg(test)]
mod tests;
