//! An in-memory host for the engine's tests: libvirt domains, volumes and
//! DHCP bindings, NAT rules, proxy sites and log records, behaving like the
//! real capabilities where the engine depends on it (not-found and conflict
//! errors, libvirt adding a UUID and device addresses, a live VNC port once
//! running). Every call is recorded, and any operation can be made to fail
//! once, so the tests can check call counts and cleanup.

use std::cell::RefCell;
use std::collections::BTreeMap;

use openidcs_sdk::domain::xmltree::{self, Element};
use openidcs_sdk::domain::{CpuModel, DomainDocument, DomainXml};
use openidcs_sdk::libvirt::{Domain, DomainStats, ImageVolume, LifecycleOp, NodeSummary};
use openidcs_sdk::{Error, PortForward, PowerState, ProxySite, RateLimit, Result};

use crate::caps::{Capabilities, Level};

/// The port the fake's "QEMU" gives an autoport console when it starts.
pub const LIVE_VNC_PORT: u16 = 5907;
pub const STORAGE_DIR: &str = "/srv/vm";
pub const IMAGES_DIR: &str = "/srv/images";

#[derive(Clone, Debug)]
pub struct FakeDomain {
    pub uuid: String,
    pub state: PowerState,
    pub xml: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeBinding {
    pub network: String,
    pub mac: String,
    pub ip: String,
    pub name: String,
}

#[derive(Default)]
pub struct State {
    pub domains: BTreeMap<String, FakeDomain>,
    /// Volume name → size in MB.
    pub volumes: BTreeMap<String, u64>,
    pub dhcp: Vec<FakeBinding>,
    pub nat: Vec<PortForward>,
    /// The server's rate limits, by VM.
    pub rate_limits: BTreeMap<String, RateLimit>,
    pub proxy: Vec<ProxySite>,
    pub calls: Vec<String>,
    pub logs: Vec<String>,
    /// Operations to fail on their next call.
    pub failures: Vec<(String, Error)>,
    /// CPU models this host's "QEMU" cannot run: starting a domain with one
    /// fails as QEMU does on AMD with nested KVM.
    pub unrunnable_cpus: Vec<CpuModel>,
    /// The kernel cannot shape traffic: starting a domain with a NIC's
    /// `<bandwidth>` fails as libvirt's `tc` does without sfq.
    pub no_traffic_shaping: bool,
    /// The image storage: volume name → (format, size in MB).
    pub images: BTreeMap<String, (String, u64)>,
    /// Volume name → the image it was made from and whether it is linked.
    pub clones: BTreeMap<String, (String, bool)>,
    /// Volume name → the bytes uploaded into it.
    pub uploads: BTreeMap<String, Vec<u8>>,
    /// Whether the guest agents answer, and the passwords they set.
    pub agents_answer: bool,
    pub guest_passwords: Vec<(String, String, String)>,
    /// What `domain-capabilities` answers (`None`: the driver has none).
    pub domain_capabilities: Option<String>,
    /// Devices changed in place: domain, XML, live.
    pub updated_devices: Vec<(String, String, bool)>,
    /// `<cpu>` XML of every throwaway domain started.
    pub tried_cpus: Vec<String>,
    next_uuid: u32,
}

#[derive(Default)]
pub struct Fake {
    pub state: RefCell<State>,
}

fn not_found(what: &str) -> Error {
    Error::NotFound(format!("{what} not found"))
}

impl Fake {
    pub fn new() -> Fake {
        Fake::default()
    }

    /// Make the next call of `operation` answer `error`.
    pub fn fail_next(&self, operation: &str, error: Error) {
        self.state
            .borrow_mut()
            .failures
            .push((operation.to_owned(), error));
    }

    /// How many times `operation` was called.
    pub fn count(&self, operation: &str) -> usize {
        self.state
            .borrow()
            .calls
            .iter()
            .filter(|call| call.as_str() == operation)
            .count()
    }

    pub fn volumes(&self) -> BTreeMap<String, u64> {
        self.state.borrow().volumes.clone()
    }

    pub fn dhcp(&self) -> Vec<FakeBinding> {
        self.state.borrow().dhcp.clone()
    }

    pub fn domain(&self, name: &str) -> Option<FakeDomain> {
        self.state.borrow().domains.get(name).cloned()
    }

    pub fn set_state(&self, name: &str, state: PowerState) {
        if let Some(domain) = self.state.borrow_mut().domains.get_mut(name) {
            domain.state = state;
        }
    }

    /// Define a domain directly (an "imported" VM), volumes included.
    pub fn insert_domain(&self, xml: &str, state: PowerState) {
        let name = DomainXml::from_xml(xml).expect("test XML").name;
        self.define_domain(xml).expect("defines");
        self.set_state(&name, state);
    }

    pub fn insert_volume(&self, name: &str, size_mb: u64) {
        self.state
            .borrow_mut()
            .volumes
            .insert(name.to_owned(), size_mb);
    }

    /// Record the call; answer the failure queued for it, if any.
    fn enter(&self, operation: &str) -> Result<()> {
        let mut state = self.state.borrow_mut();
        state.calls.push(operation.to_owned());
        match state
            .failures
            .iter()
            .position(|(name, _)| name == operation)
        {
            Some(index) => Err(state.failures.remove(index).1),
            None => Ok(()),
        }
    }

    fn modify_domain(
        &self,
        name: &str,
        edit: impl FnOnce(&mut Element) -> Result<()>,
    ) -> Result<()> {
        let mut state = self.state.borrow_mut();
        let domain = state
            .domains
            .get_mut(name)
            .ok_or_else(|| not_found("domain"))?;
        let mut root =
            xmltree::parse(&domain.xml).map_err(|error| Error::Failed(error.to_string()))?;
        edit(&mut root)?;
        domain.xml = root.to_xml();
        Ok(())
    }
}

/// What libvirt adds to a definition: PCI addresses on disks and NICs.
fn add_addresses(devices: &mut Element) {
    for (slot, device) in devices.elements_mut().enumerate() {
        if matches!(device.local_name(), "disk" | "interface") && device.child("address").is_none()
        {
            device.push(
                Element::new("address")
                    .with_attr("type", "pci")
                    .with_attr("slot", format!("0x{:02x}", slot + 3)),
            );
        }
    }
}

fn interface_mac(element: &Element) -> Option<String> {
    element
        .child("mac")
        .and_then(|mac| mac.attr("address"))
        .map(str::to_ascii_lowercase)
}

impl Capabilities for Fake {
    fn list_domains(&self) -> Result<Vec<Domain>> {
        self.enter("list_domains")?;
        Ok(self
            .state
            .borrow()
            .domains
            .iter()
            .map(|(name, domain)| Domain {
                name: name.clone(),
                uuid: domain.uuid.clone(),
                state: domain.state,
            })
            .collect())
    }

    fn get_domain(&self, name: &str) -> Result<Domain> {
        self.enter("get_domain")?;
        let state = self.state.borrow();
        let domain = state.domains.get(name).ok_or_else(|| not_found("domain"))?;
        Ok(Domain {
            name: name.to_owned(),
            uuid: domain.uuid.clone(),
            state: domain.state,
        })
    }

    fn domain_xml(&self, name: &str, inactive: bool) -> Result<String> {
        self.enter("domain_xml")?;
        let state = self.state.borrow();
        let domain = state.domains.get(name).ok_or_else(|| not_found("domain"))?;
        if inactive || domain.state == PowerState::Stopped {
            return Ok(domain.xml.clone());
        }
        // A running domain: QEMU picked the autoport console's port.
        let mut root =
            xmltree::parse(&domain.xml).map_err(|error| Error::Failed(error.to_string()))?;
        root.edit_child("devices", |devices| {
            for graphics in devices
                .elements_mut()
                .filter(|element| element.local_name() == "graphics")
            {
                if graphics.attr("autoport") == Some("yes") {
                    graphics.set_attr("port", LIVE_VNC_PORT.to_string());
                }
            }
        });
        Ok(root.to_xml())
    }

    fn define_domain(&self, xml: &str) -> Result<Domain> {
        self.enter("define_domain")?;
        let mut root = xmltree::parse(xml).map_err(|error| Error::Invalid(error.to_string()))?;
        let model = DomainXml::from_element(&root);
        let mut state = self.state.borrow_mut();
        for disk in &model.disks {
            let volume = disk
                .path
                .strip_prefix(&format!("{STORAGE_DIR}/"))
                .unwrap_or_default();
            if !state.volumes.contains_key(volume) {
                return Err(Error::Denied(format!(
                    "disk {} is not a volume of the storage",
                    disk.path
                )));
            }
        }
        let uuid = match state.domains.get(&model.name) {
            Some(existing) if !model.uuid.is_empty() && model.uuid != existing.uuid => {
                return Err(Error::Conflict(format!(
                    "domain '{}' already exists with uuid {}",
                    model.name, existing.uuid
                )));
            }
            Some(existing) if model.uuid.is_empty() => {
                return Err(Error::Conflict(format!(
                    "domain '{}' already exists with uuid {}",
                    model.name, existing.uuid
                )));
            }
            Some(existing) => existing.uuid.clone(),
            None if !model.uuid.is_empty() => model.uuid.clone(),
            None => {
                state.next_uuid += 1;
                format!("00000000-0000-4000-8000-{:012}", state.next_uuid)
            }
        };
        if root.child("uuid").is_none() {
            root.push(Element::new("uuid").with_text(uuid.as_str()));
        }
        root.edit_child("devices", add_addresses);
        let power = state
            .domains
            .get(&model.name)
            .map(|domain| domain.state)
            .unwrap_or(PowerState::Stopped);
        state.domains.insert(
            model.name.clone(),
            FakeDomain {
                uuid: uuid.clone(),
                state: power,
                xml: root.to_xml(),
            },
        );
        Ok(Domain {
            name: model.name,
            uuid,
            state: power,
        })
    }

    fn undefine_domain(&self, name: &str) -> Result<()> {
        self.enter("undefine_domain")?;
        self.state
            .borrow_mut()
            .domains
            .remove(name)
            .map(|_| ())
            .ok_or_else(|| not_found("domain"))
    }

    fn lifecycle(&self, name: &str, op: LifecycleOp) -> Result<PowerState> {
        let operation = format!("{op:?}");
        self.enter(&format!(
            "lifecycle {}",
            operation.trim_start_matches("LifecycleOp::")
        ))?;
        let mut state = self.state.borrow_mut();
        let unrunnable_cpus = state.unrunnable_cpus.clone();
        let no_traffic_shaping = state.no_traffic_shaping;
        let domain = state
            .domains
            .get_mut(name)
            .ok_or_else(|| not_found("domain"))?;
        use PowerState::{Paused, Running, Stopped};
        if op == LifecycleOp::Start && domain.state == Stopped {
            let shaped = DomainXml::from_xml(&domain.xml).is_ok_and(|model| {
                model
                    .interfaces
                    .iter()
                    .any(|interface| !interface.bandwidth.is_unlimited())
            });
            if no_traffic_shaping && shaped {
                return Err(Error::Failed(
                    "internal error: Child process (tc qdisc add dev vnet0 parent 1:1 handle 2: \
                     sfq perturb 10) unexpected exit status 2: Error: Specified qdisc kind is unknown."
                        .to_owned(),
                ));
            }
            let cpu = DomainDocument::parse(&domain.xml)
                .ok()
                .and_then(|document| document.cpu());
            if let Some(cpu) = cpu.filter(|cpu| unrunnable_cpus.contains(cpu)) {
                return Err(Error::Failed(format!(
                    "qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69 ({})",
                    cpu.as_str()
                )));
            }
        }
        let next = match (op, domain.state) {
            (LifecycleOp::Start, Stopped) => Running,
            (LifecycleOp::Shutdown | LifecycleOp::Destroy, Running | Paused) => Stopped,
            (LifecycleOp::Reboot | LifecycleOp::Reset, Running) => Running,
            (LifecycleOp::Suspend, Running) => Paused,
            (LifecycleOp::Resume, Paused) => Running,
            (LifecycleOp::Start, _) => {
                return Err(Error::Invalid("domain is already running".to_owned()));
            }
            _ => return Err(Error::Invalid("domain is not running".to_owned())),
        };
        domain.state = next;
        Ok(next)
    }

    fn all_domain_stats(&self) -> Result<Vec<DomainStats>> {
        self.enter("all_domain_stats")?;
        Ok(self
            .state
            .borrow()
            .domains
            .iter()
            .map(|(name, domain)| {
                let model = DomainXml::from_xml(&domain.xml).unwrap_or_else(|_| {
                    DomainXml::new(name, openidcs_sdk::domain::DomainType::Test)
                });
                DomainStats {
                    name: name.clone(),
                    state: domain.state,
                    vcpus: model.vcpus,
                    cpu_time_ns: 123_000_000,
                    mem_max_kib: model.memory_mib * 1024,
                    mem_used_kib: model.memory_mib * 512,
                    disk_capacity_bytes: 10 << 30,
                    disk_allocation_bytes: 3 << 30,
                    net_rx_bytes: 1000,
                    net_tx_bytes: 2000,
                }
            })
            .collect())
    }

    fn node_info(&self) -> Result<NodeSummary> {
        self.enter("node_info")?;
        Ok(NodeSummary {
            hostname: "node1".to_owned(),
            hypervisor: "QEMU".to_owned(),
            hypervisor_version: "8.2.0".to_owned(),
            cpus: 16,
            cpu_busy_ns: 5_000,
            cpu_idle_ns: 95_000,
            mem_total_kib: 64 << 20,
            mem_free_kib: 16 << 20,
            storage_capacity_bytes: 1 << 40,
            storage_allocation_bytes: 1 << 38,
        })
    }

    fn create_volume(&self, name: &str, capacity_mb: u64) -> Result<String> {
        self.enter("create_volume")?;
        let mut state = self.state.borrow_mut();
        if state.volumes.contains_key(name) {
            return Err(Error::Conflict(format!("volume {name} already exists")));
        }
        state.volumes.insert(name.to_owned(), capacity_mb);
        Ok(format!("{STORAGE_DIR}/{name}"))
    }

    fn resize_volume(&self, name: &str, capacity_mb: u64) -> Result<()> {
        self.enter("resize_volume")?;
        let mut state = self.state.borrow_mut();
        let size = state
            .volumes
            .get_mut(name)
            .ok_or_else(|| not_found("volume"))?;
        if capacity_mb < *size {
            return Err(Error::Invalid(format!("volume {name} never shrinks")));
        }
        *size = capacity_mb;
        Ok(())
    }

    fn delete_volume(&self, name: &str) -> Result<()> {
        self.enter("delete_volume")?;
        self.state
            .borrow_mut()
            .volumes
            .remove(name)
            .map(|_| ())
            .ok_or_else(|| not_found("volume"))
    }

    fn list_images(&self) -> Result<Vec<ImageVolume>> {
        self.enter("list_images")?;
        Ok(self
            .state
            .borrow()
            .images
            .iter()
            .map(|(name, (format, size_mb))| ImageVolume {
                name: name.clone(),
                path: format!("{IMAGES_DIR}/{name}"),
                format: format.clone(),
                capacity_bytes: size_mb << 20,
            })
            .collect())
    }

    fn create_volume_from_image(
        &self,
        name: &str,
        image: &str,
        capacity_mb: u64,
        linked: bool,
    ) -> Result<String> {
        self.enter("create_volume_from_image")?;
        let mut state = self.state.borrow_mut();
        let Some((_, image_mb)) = state.images.get(image).cloned() else {
            return Err(not_found("image"));
        };
        if state.volumes.contains_key(name) {
            return Err(Error::Conflict(format!("volume {name} already exists")));
        }
        state
            .volumes
            .insert(name.to_owned(), capacity_mb.max(image_mb));
        state
            .clones
            .insert(name.to_owned(), (image.to_owned(), linked));
        Ok(format!("{STORAGE_DIR}/{name}"))
    }

    fn upload_volume(&self, name: &str, content: &[u8]) -> Result<String> {
        self.enter("upload_volume")?;
        let mut state = self.state.borrow_mut();
        if state.volumes.contains_key(name) {
            return Err(Error::Conflict(format!("volume {name} already exists")));
        }
        state
            .volumes
            .insert(name.to_owned(), (content.len() as u64).div_ceil(1 << 20));
        state.uploads.insert(name.to_owned(), content.to_vec());
        Ok(format!("{STORAGE_DIR}/{name}"))
    }

    fn guest_set_password(&self, domain: &str, user: &str, crypt_hash: &str) -> Result<()> {
        self.enter("guest_set_password")?;
        let mut state = self.state.borrow_mut();
        let running = state
            .domains
            .get(domain)
            .ok_or_else(|| not_found("domain"))?
            .state
            == PowerState::Running;
        if !running || !state.agents_answer {
            return Err(Error::Failed(
                "Guest agent is not responding: QEMU guest agent is not connected".to_owned(),
            ));
        }
        state
            .guest_passwords
            .push((domain.to_owned(), user.to_owned(), crypt_hash.to_owned()));
        Ok(())
    }

    fn domain_capabilities(&self) -> Result<String> {
        self.enter("domain_capabilities")?;
        self.state.borrow().domain_capabilities.clone().ok_or_else(|| {
            Error::Unsupported(
                "this function is not supported by the connection driver: virConnectGetDomainCapabilities"
                    .to_owned(),
            )
        })
    }

    fn try_domain(&self, xml: &str) -> Result<()> {
        self.enter("try_domain")?;
        let document = DomainDocument::parse(xml).map_err(|error| Error::Invalid(error.message))?;
        let mut state = self.state.borrow_mut();
        state.tried_cpus.push(
            document
                .root
                .child("cpu")
                .map(|cpu| cpu.to_xml())
                .unwrap_or_default(),
        );
        match document.cpu() {
            Some(cpu) if state.unrunnable_cpus.contains(&cpu) => Err(Error::Failed(format!(
                "qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69 ({})",
                cpu.as_str()
            ))),
            _ => Ok(()),
        }
    }

    fn attach_device(&self, domain: &str, xml: &str, _live: bool) -> Result<()> {
        self.enter("attach_device")?;
        let device = xmltree::parse(xml).map_err(|error| Error::Invalid(error.to_string()))?;
        let mac = interface_mac(&device);
        self.modify_domain(domain, |root| {
            root.edit_child("devices", |devices| {
                if mac.is_some()
                    && devices
                        .elements()
                        .any(|existing| interface_mac(existing) == mac)
                {
                    return Err(Error::Invalid("a NIC with this MAC exists".to_owned()));
                }
                devices.push(device);
                add_addresses(devices);
                Ok(())
            })
        })
    }

    fn detach_device(&self, domain: &str, xml: &str, _live: bool) -> Result<()> {
        self.enter("detach_device")?;
        let device = xmltree::parse(xml).map_err(|error| Error::Invalid(error.to_string()))?;
        let mac = interface_mac(&device);
        self.modify_domain(domain, |root| {
            root.edit_child("devices", |devices| {
                let before = devices.elements().count();
                devices.retain_elements(|existing| {
                    existing.local_name() != "interface" || interface_mac(existing) != mac
                });
                if devices.elements().count() == before {
                    return Err(not_found("device"));
                }
                Ok(())
            })
        })
    }

    fn update_device(&self, domain: &str, xml: &str, live: bool) -> Result<()> {
        self.enter("update_device")?;
        let mut state = self.state.borrow_mut();
        if !state.domains.contains_key(domain) {
            return Err(not_found("domain"));
        }
        if state.no_traffic_shaping && xml.contains("<bandwidth") {
            return Err(Error::Failed(
                "internal error: Child process (tc qdisc add dev vnet0 root handle 1: htb \
                 default 2) unexpected exit status 2: Error: Specified qdisc kind is unknown."
                    .to_owned(),
            ));
        }
        state
            .updated_devices
            .push((domain.to_owned(), xml.to_owned(), live));
        Ok(())
    }

    fn network_xml(&self, network: &str) -> Result<String> {
        self.enter("network_xml")?;
        let state = self.state.borrow();
        let mut dhcp = Element::new("dhcp").with_child(
            Element::new("range")
                .with_attr("start", "192.168.122.2")
                .with_attr("end", "192.168.122.254"),
        );
        for binding in state
            .dhcp
            .iter()
            .filter(|binding| binding.network == network)
        {
            dhcp.push(
                Element::new("host")
                    .with_attr("mac", binding.mac.as_str())
                    .with_attr("name", binding.name.as_str())
                    .with_attr("ip", binding.ip.as_str()),
            );
        }
        Ok(Element::new("network")
            .with_child(Element::new("name").with_text(network))
            .with_child(
                Element::new("ip")
                    .with_attr("address", "192.168.122.1")
                    .with_attr("netmask", "255.255.255.0")
                    .with_child(dhcp),
            )
            .to_xml())
    }

    fn dhcp_host_add(&self, network: &str, mac: &str, ip: &str, name: &str) -> Result<()> {
        self.enter("dhcp_host_add")?;
        let mut state = self.state.borrow_mut();
        let wanted = FakeBinding {
            network: network.to_owned(),
            mac: mac.to_owned(),
            ip: ip.to_owned(),
            name: name.to_owned(),
        };
        for binding in state
            .dhcp
            .iter()
            .filter(|binding| binding.network == network)
        {
            if *binding == wanted {
                return Ok(());
            }
            if binding.mac == mac || binding.ip == ip || binding.name == name {
                return Err(Error::Conflict(format!(
                    "network {network} already has a DHCP entry for {mac}, {ip} or {name}"
                )));
            }
        }
        state.dhcp.push(wanted);
        Ok(())
    }

    fn dhcp_host_remove(&self, network: &str, mac: &str, ip: &str) -> Result<()> {
        self.enter("dhcp_host_remove")?;
        self.state.borrow_mut().dhcp.retain(|binding| {
            !(binding.network == network && binding.mac == mac && binding.ip == ip)
        });
        Ok(())
    }

    fn nat_add_rule(&self, forward: &PortForward) -> Result<()> {
        self.enter("nat_add_rule")?;
        let mut state = self.state.borrow_mut();
        if state.nat.iter().any(|rule| {
            rule.protocol == forward.protocol && rule.public_port == forward.public_port
        }) {
            return Err(Error::Conflict(format!(
                "port {} is taken",
                forward.public_port
            )));
        }
        state.nat.push(forward.clone());
        Ok(())
    }

    fn nat_remove_rule(&self, id: u64) -> Result<()> {
        self.enter("nat_remove_rule")?;
        self.state.borrow_mut().nat.retain(|rule| rule.id != id);
        Ok(())
    }

    fn nat_set_rate_limit(&self, limit: &RateLimit) -> Result<()> {
        self.enter("nat_set_rate_limit")?;
        self.state
            .borrow_mut()
            .rate_limits
            .insert(limit.vm_uuid.clone(), limit.clone());
        Ok(())
    }

    fn nat_remove_rate_limit(&self, vm: &str) -> Result<()> {
        self.enter("nat_remove_rate_limit")?;
        self.state.borrow_mut().rate_limits.remove(vm);
        Ok(())
    }

    fn proxy_put_site(&self, site: &ProxySite) -> Result<()> {
        self.enter("proxy_put_site")?;
        let mut state = self.state.borrow_mut();
        state.proxy.retain(|existing| existing.id != site.id);
        state.proxy.push(site.clone());
        Ok(())
    }

    fn proxy_remove_site(&self, id: u64) -> Result<()> {
        self.enter("proxy_remove_site")?;
        self.state.borrow_mut().proxy.retain(|site| site.id != id);
        Ok(())
    }

    fn log(&self, level: Level, message: &str) {
        self.state
            .borrow_mut()
            .logs
            .push(format!("{level:?}: {message}"));
    }
}
