//! The engine's operations: each `engine` function as a sequence of
//! capability calls, with the cleanup that keeps a failed call from leaving
//! volumes, definitions or DHCP bindings behind.
//!
//! Every function is generic over [`Capabilities`], so the component runs
//! them against the real imports and the tests against an in-memory fake.
//! Decisions that need no call (validation, XML, planning) are delegated to
//! [`crate::convert`]. Nothing here keeps state between calls: what the
//! engine must remember about a VM lives in its domain's metadata.

use openidcs_sdk::cloudinit::Seed;
use openidcs_sdk::domain::{
    Bandwidth, DiskFormat, DiskXml, DomainDocument, DomainType, DomainXml, InterfaceXml,
    VmMetadata, VolumeMeta,
};
use openidcs_sdk::libvirt::LifecycleOp;
use openidcs_sdk::{
    ConsoleEndpoint, CpuChoice, Error, FirstBoot, HostConfig, HostCounters, ImageEntry,
    InstallPlan, Nic, NicKind, OsImage, PasswordRoute, PortForward, PowerAction, PowerState,
    Protocol, ProxySite, Result, VmCounters, VmInfo, VmSpec,
};

use crate::caps::{Capabilities, Level};
use crate::convert::{
    self, Binding, Context, DhcpHost, PlannedDisk, check_mac, check_vm_name, is_active, is_managed,
    message_of, nic_meta, nic_name, normalize_mac, with_context,
};

/// A source of fresh MACs ([`openidcs_sdk::generate_mac`] in the component).
pub type NewMac<'a> = &'a mut dyn FnMut() -> String;

fn unreadable(vm: &str, error: impl std::fmt::Display) -> Error {
    Error::Failed(format!(
        "libvirt answered unreadable XML for vm {vm}: {error}"
    ))
}

fn look_up<C: Capabilities>(caps: &C, vm: &str) -> Result<openidcs_sdk::libvirt::Domain> {
    caps.get_domain(vm)
        .context(|| format!("looking up vm {vm}"))
}

fn read_document<C: Capabilities>(caps: &C, vm: &str) -> Result<DomainDocument> {
    let xml = caps
        .domain_xml(vm, true)
        .context(|| format!("reading the definition of vm {vm}"))?;
    DomainDocument::parse(&xml).map_err(|error| unreadable(vm, error))
}

fn read_definition<C: Capabilities>(caps: &C, vm: &str) -> Result<DomainXml> {
    Ok(read_document(caps, vm)?.read())
}

/// Log a failed cleanup step; the caller answers the error that caused it.
fn warn_on_error<C: Capabilities>(caps: &C, what: &str, result: Result<()>) {
    if let Err(error) = result {
        caps.log(
            Level::Warn,
            &format!("{what} failed: {}", message_of(&error)),
        );
    }
}

fn delete_volumes<C: Capabilities>(caps: &C, volumes: &[String]) {
    for volume in volumes {
        warn_on_error(
            caps,
            &format!("cleanup: deleting volume {volume}"),
            caps.delete_volume(volume),
        );
    }
}

pub fn host_status<C: Capabilities>(caps: &C, host: &HostConfig) -> Result<HostCounters> {
    let node = caps
        .node_info()
        .context(|| format!("reading the node info of host {}", host.name))?;
    let managed: Vec<_> = caps
        .list_domains()
        .context(|| format!("listing the domains of host {}", host.name))?
        .into_iter()
        .filter(|domain| is_managed(host, &domain.name))
        .collect();
    Ok(convert::host_counters(&node, &managed))
}

/// One `list-domains` call; the specs carry only their key (`vm-get` and
/// `vm-scan` read configurations back), so listing stays cheap.
pub fn vm_list<C: Capabilities>(caps: &C, host: &HostConfig) -> Result<Vec<VmInfo>> {
    Ok(caps
        .list_domains()
        .context(|| format!("listing the domains of host {}", host.name))?
        .into_iter()
        .filter(|domain| is_managed(host, &domain.name))
        .map(|domain| VmInfo {
            spec: convert::empty_spec(&domain.name),
            vm_uuid: domain.name,
            domain_uuid: domain.uuid,
            power: domain.state,
        })
        .collect())
}

pub fn vm_get<C: Capabilities>(caps: &C, host: &HostConfig, vm: &str) -> Result<VmInfo> {
    check_vm_name(vm)?;
    let domain = look_up(caps, vm)?;
    let definition = read_definition(caps, vm)?;
    let mut spec = convert::spec_from_domain(vm, &definition);
    fill_dhcp_addresses(caps, host, &mut spec);
    Ok(VmInfo {
        vm_uuid: vm.to_owned(),
        domain_uuid: domain.uuid,
        power: domain.state,
        spec,
    })
}

/// NAT NICs whose address the metadata lacks (a VM this engine did not
/// create, a NIC attached by hand) get the address the NAT network's DHCP
/// binds to their MAC. Best effort: without it they read with no address.
fn fill_dhcp_addresses<C: Capabilities>(caps: &C, host: &HostConfig, spec: &mut VmSpec) {
    let missing = |nic: &Nic| nic.kind == NicKind::Nat && nic.ip4_addr.is_empty();
    if host.network_nat.is_empty() || !spec.nics.iter().any(missing) {
        return;
    }
    let Ok(xml) = caps.network_xml(&host.network_nat) else {
        return;
    };
    let bindings = convert::dhcp_hosts(&xml);
    for nic in spec.nics.iter_mut().filter(|nic| missing(nic)) {
        if let Some(binding) = bindings.iter().find(|binding| binding.mac == nic.mac_addr) {
            nic.ip4_addr = binding.ip.clone();
        }
    }
}

/// The NICs of a spec with their final names and MACs.
fn named_nics(spec: &VmSpec, macs: &[String]) -> Vec<Nic> {
    spec.nics
        .iter()
        .zip(macs)
        .enumerate()
        .map(|(index, (nic, mac))| Nic {
            name: nic_name(nic, index),
            mac_addr: mac.clone(),
            ..nic.clone()
        })
        .collect()
}

fn add_binding<C: Capabilities>(caps: &C, host: &HostConfig, binding: &Binding) -> Result<()> {
    caps.dhcp_host_add(&host.network_nat, &binding.mac, &binding.ip, &binding.name)
        .context(|| {
            format!(
                "binding MAC {} to {} in the DHCP of network {}",
                binding.mac, binding.ip, host.network_nat
            )
        })
}

/// Remove a binding; an absent one is already what we want.
fn remove_binding<C: Capabilities>(caps: &C, host: &HostConfig, binding: &Binding) -> Result<()> {
    match caps.dhcp_host_remove(&host.network_nat, &binding.mac, &binding.ip) {
        Ok(()) | Err(Error::NotFound(_)) => Ok(()),
        Err(error) => Err(with_context(
            error,
            &format!(
                "removing the DHCP binding of MAC {} to {} from network {}",
                binding.mac, binding.ip, host.network_nat
            ),
        )),
    }
}

/// Create the volumes of `disks` that have no path yet, filling it in.
/// On failure the volumes created here are deleted again.
fn create_volumes<C: Capabilities>(caps: &C, disks: &mut [PlannedDisk]) -> Result<Vec<String>> {
    let mut created = Vec::new();
    for disk in disks.iter_mut().filter(|disk| disk.path.is_empty()) {
        match caps.create_volume(&disk.volume, disk.size_mb) {
            Ok(path) => {
                disk.path = path;
                created.push(disk.volume.clone());
            }
            Err(error) => {
                delete_volumes(caps, &created);
                return Err(with_context(
                    error,
                    &format!("creating volume {}", disk.volume),
                ));
            }
        }
    }
    Ok(created)
}

pub fn vm_create<C: Capabilities>(
    caps: &C,
    host: &HostConfig,
    spec: &VmSpec,
    new_mac: NewMac,
) -> Result<VmInfo> {
    let domain_type = convert::domain_type(host)?;
    convert::validate_spec(host, spec)?;
    convert::validate_new(spec, domain_type)?;
    let vm = spec.vm_uuid.as_str();
    match caps.get_domain(vm) {
        Ok(_) => {
            return Err(Error::Conflict(format!(
                "vm {vm} already exists on host {}",
                host.name
            )));
        }
        Err(Error::NotFound(_)) => {}
        Err(error) => return Err(with_context(error, &format!("looking up vm {vm}"))),
    }

    let macs = convert::create_macs(spec, new_mac);
    let mut disks = convert::planned_disks(spec);
    let created = create_volumes(caps, &mut disks)?;
    let defined =
        convert::create_domain(host, spec, domain_type, &disks, &macs).and_then(|model| {
            caps.define_domain(&model.to_xml())
                .context(|| format!("defining vm {vm}"))
        });
    if let Err(error) = defined {
        delete_volumes(caps, &created);
        return Err(error);
    }

    let bindings = convert::bindings_of(vm, &named_nics(spec, &macs));
    for (index, binding) in bindings.iter().enumerate() {
        if let Err(error) = add_binding(caps, host, binding) {
            for added in &bindings[..index] {
                warn_on_error(
                    caps,
                    "cleanup: removing a DHCP binding",
                    remove_binding(caps, host, added),
                );
            }
            warn_on_error(
                caps,
                &format!("cleanup: undefining vm {vm}"),
                caps.undefine_domain(vm),
            );
            delete_volumes(caps, &created);
            return Err(error);
        }
    }
    vm_get(caps, host, vm)
}

/// Redefine the VM from its current definition brought to `spec`; new disks
/// get new volumes, grown disks are resized, nothing shrinks. A running VM
/// sees the change at its next boot.
pub fn vm_update<C: Capabilities>(
    caps: &C,
    host: &HostConfig,
    spec: &VmSpec,
    new_mac: NewMac,
) -> Result<VmInfo> {
    let vm = spec.vm_uuid.as_str();
    check_vm_name(vm)?;
    let domain = look_up(caps, vm)?;
    // The running domain as it is before the redefinition (what a live
    // change starts from).
    let live = if domain.state == PowerState::Running {
        caps.domain_xml(vm, false)
            .ok()
            .and_then(|xml| DomainDocument::parse(&xml).ok())
    } else {
        None
    };
    let mut document = read_document(caps, vm)?;
    let current = document.read();
    convert::validate_spec(host, spec)?;
    let plan = convert::plan_disk_update(vm, spec, &current)?;
    let macs = convert::update_macs(spec, &current, new_mac);

    let mut disks = plan.disks;
    let created = create_volumes(caps, &mut disks)?;
    let redefined = (|| -> Result<()> {
        for (volume, size_mb) in &plan.grow {
            caps.resize_volume(volume, *size_mb)
                .context(|| format!("growing volume {volume} to {size_mb} MB"))?;
        }
        let model = convert::update_domain(host, spec, &current, &disks, &macs)?;
        document.apply(&model);
        caps.define_domain(&document.to_xml())
            .context(|| format!("redefining vm {vm}"))?;
        Ok(())
    })();
    if let Err(error) = redefined {
        // A grown volume stays grown: growing is what was asked, and harmless.
        delete_volumes(caps, &created);
        return Err(error);
    }

    let old = convert::bindings_of(vm, &convert::nics_of(&current));
    let new = convert::bindings_of(vm, &named_nics(spec, &macs));
    let (remove, add) = convert::binding_changes(&old, &new);
    let redefined_but = |error: Error| with_context(error, &format!("vm {vm} was redefined, but"));
    for binding in &remove {
        remove_binding(caps, host, binding).map_err(redefined_but)?;
    }
    for binding in &add {
        add_binding(caps, host, binding).map_err(redefined_but)?;
    }
    if let Some(live) = live {
        apply_bandwidth_live(caps, vm, &live, spec);
    }
    vm_get(caps, host, vm)
}

/// A running VM's NICs get the spec's bandwidth at once (the definition
/// already has it); where the driver cannot, a warning says it applies from
/// the VM's next start. On a host that cannot shape at all, the server's
/// table polices the new speeds instead (an over-quota throttle too).
fn apply_bandwidth_live<C: Capabilities>(caps: &C, vm: &str, live: &DomainDocument, spec: &VmSpec) {
    let bandwidth = Bandwidth::from_mbit(spec.speed_down, spec.speed_up);
    let mut unshapeable = None;
    for interface in live.read().interfaces {
        let Some(xml) = live.interface_with_bandwidth(&interface.mac, &bandwidth) else {
            continue;
        };
        match caps.update_device(vm, &xml, true) {
            Ok(()) => {}
            Err(error) if cannot_shape(&error) => unshapeable = Some(error),
            Err(error) => caps.log(
                Level::Warn,
                &format!(
                    "vm {vm}: the bandwidth of NIC {} applies from its next start ({})",
                    interface.mac,
                    message_of(&error)
                ),
            ),
        }
    }
    if let Some(error) = unshapeable {
        police(caps, vm, &spec.nics, &bandwidth, &error);
    } else if bandwidth.is_unlimited() {
        // A limit the server policed before (unshaped start) goes with it.
        warn_on_error(
            caps,
            &format!("lifting the rate limit of vm {vm}"),
            lift_rate_limit(caps, vm),
        );
    }
}

/// Remove the server's rate limit of a VM, if it has one; a server without
/// `[nat]` has none to remove.
fn lift_rate_limit<C: Capabilities>(caps: &C, vm: &str) -> Result<()> {
    match caps.nat_remove_rate_limit(vm) {
        Ok(()) | Err(Error::Unsupported(_)) => Ok(()),
        Err(error) => Err(error),
    }
}

/// The server's rate limit standing in for `<bandwidth>` on a host that
/// cannot shape: the VM's addresses and its speeds, policed in the server's
/// nftables table (traffic the server routes). A warning record says which
/// of the two the VM got; `why` is libvirt's refusal.
fn police<C: Capabilities>(caps: &C, vm: &str, nics: &[Nic], bandwidth: &Bandwidth, why: &Error) {
    let speeds = format!(
        "up {} Mbit/s, down {} Mbit/s",
        bandwidth.up_mbit(),
        bandwidth.down_mbit()
    );
    let limit = openidcs_sdk::rate_limit_for(
        vm,
        nics,
        bandwidth.outbound_kbytes * 8,
        bandwidth.inbound_kbytes * 8,
    );
    let outcome = match limit {
        None => Err("it has no address to police".to_owned()),
        Some(limit) => caps
            .nat_set_rate_limit(&limit)
            .map_err(|error| format!("the server cannot police them: {}", message_of(&error))),
    };
    let message = match outcome {
        Ok(()) => format!(
            "vm {vm}: this host cannot shape traffic ({}); the server polices its speeds ({speeds}) \
             in its nftables table instead",
            message_of(why)
        ),
        Err(reason) => format!(
            "vm {vm} runs without its bandwidth limits ({speeds}): this host cannot shape \
             traffic ({}), and {reason}; set the host's flu_over to pause for the traffic quota",
            message_of(why)
        ),
    };
    caps.log(Level::Warn, &message);
}

pub fn vm_delete<C: Capabilities>(caps: &C, host: &HostConfig, vm: &str) -> Result<()> {
    check_vm_name(vm)?;
    let domain = look_up(caps, vm)?;
    let definition = read_definition(caps, vm)?;
    if domain.state != PowerState::Stopped
        && let Err(error) = caps.lifecycle(vm, LifecycleOp::Destroy)
    {
        // "Not running" is fine: only a domain that still runs is a failure.
        let still_running = caps
            .get_domain(vm)
            .map(|domain| is_active(domain.state))
            .unwrap_or(true);
        if still_running {
            return Err(with_context(error, &format!("stopping vm {vm}")));
        }
    }
    caps.undefine_domain(vm)
        .context(|| format!("undefining vm {vm}"))?;

    // The domain is gone; clean up all we can before reporting what failed.
    let mut failures = Vec::new();
    for volume in convert::owned_volumes(vm, &definition) {
        match caps.delete_volume(&volume) {
            Ok(()) | Err(Error::NotFound(_)) => {}
            Err(error) => {
                failures.push(format!("deleting volume {volume}: {}", message_of(&error)))
            }
        }
    }
    for binding in convert::bindings_of(vm, &convert::nics_of(&definition)) {
        if let Err(error) = remove_binding(caps, host, &binding) {
            failures.push(message_of(&error).to_owned());
        }
    }
    if let Err(error) = lift_rate_limit(caps, vm) {
        failures.push(format!("removing the rate limit: {}", message_of(&error)));
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(Error::Failed(format!(
            "vm {vm} was removed, but cleaning up failed: {}",
            failures.join("; ")
        )))
    }
}

pub fn vm_power<C: Capabilities>(caps: &C, vm: &str, action: PowerAction) -> Result<PowerState> {
    check_vm_name(vm)?;
    let doing = match action {
        PowerAction::Start => "starting",
        PowerAction::Stop => "shutting down",
        PowerAction::HardStop => "powering off",
        PowerAction::Reset => "rebooting",
        PowerAction::HardReset => "resetting",
        PowerAction::Pause => "pausing",
        PowerAction::Resume => "resuming",
    };
    let result = match action {
        PowerAction::Start => start(caps, vm),
        _ => caps.lifecycle(vm, convert::lifecycle_for(action)),
    };
    result.context(|| format!("{doing} vm {vm}"))
}

/// Start a VM; when QEMU cannot run the domain's CPU model on this host,
/// redefine it with the next models of
/// [`CpuModel::FALLBACK`](openidcs_sdk::domain::CpuModel::FALLBACK) until one
/// starts. The model that started stays in the definition, so the search
/// happens once per VM; when none starts, the definition is put back and
/// the first error answered.
fn start<C: Capabilities>(caps: &C, vm: &str) -> Result<PowerState> {
    let first_error = match caps.lifecycle(vm, LifecycleOp::Start) {
        Ok(state) => return Ok(state),
        // QEMU failing to start is `failed`; a wrong state or a missing
        // domain is not a CPU question.
        Err(error @ Error::Failed(_)) => error,
        Err(error) => return Err(error),
    };
    if cannot_shape(&first_error) {
        return start_unshaped(caps, vm, first_error);
    }
    let mut document = read_document(caps, vm)?;
    let Some(tried) = document.cpu() else {
        // Not a KVM domain, or a CPU the operator chose: left alone.
        return Err(first_error);
    };
    let original = document.to_xml();
    for model in tried.next_ones() {
        document.set_cpu(model);
        caps.define_domain(&document.to_xml())
            .context(|| format!("redefining vm {vm} with CPU model {}", model.as_str()))?;
        if let Ok(state) = caps.lifecycle(vm, LifecycleOp::Start) {
            caps.log(
                Level::Warn,
                &format!(
                    "vm {vm} did not start with CPU model {} ({}); it runs with {} from now on",
                    tried.as_str(),
                    message_of(&first_error),
                    model.as_str()
                ),
            );
            return Ok(state);
        }
    }
    warn_on_error(
        caps,
        &format!("restoring the definition of vm {vm}"),
        caps.define_domain(&original).map(|_| ()),
    );
    Err(first_error)
}

/// Whether a start failed on the NICs' `<bandwidth>`: libvirt applies it
/// with `tc` (htb, sfq, an ingress policer), and a kernel without those
/// (some VMs' and containers' kernels) fails the start on it.
fn cannot_shape(error: &Error) -> bool {
    let text = message_of(error);
    text.contains("tc ") && (text.contains("qdisc") || text.contains("filter"))
}

/// Start once without the NICs' bandwidth limits, then put them back into
/// the definition (a host that can shape applies them at the next start),
/// and ask the server to police them meanwhile. The traffic quota counts
/// either way.
fn start_unshaped<C: Capabilities>(caps: &C, vm: &str, first_error: Error) -> Result<PowerState> {
    let mut document = read_document(caps, vm)?;
    let definition = document.read();
    let original = document.to_xml();
    if !document.clear_bandwidth() {
        return Err(first_error);
    }
    caps.define_domain(&document.to_xml())
        .context(|| format!("redefining vm {vm} without its bandwidth limits"))?;
    let started = caps.lifecycle(vm, LifecycleOp::Start);
    warn_on_error(
        caps,
        &format!("restoring the bandwidth limits of vm {vm}"),
        caps.define_domain(&original).map(|_| ()),
    );
    let state = started?;
    // Every NIC has the VM's speeds; the first limited one says them.
    let bandwidth = definition
        .interfaces
        .iter()
        .map(|interface| interface.bandwidth)
        .find(|bandwidth| !bandwidth.is_unlimited())
        .unwrap_or_default();
    police(
        caps,
        vm,
        &convert::nics_of(&definition),
        &bandwidth,
        &first_error,
    );
    Ok(state)
}

/// One `all-domain-stats` call for every managed VM of the host.
pub fn vm_usage<C: Capabilities>(caps: &C, host: &HostConfig) -> Result<Vec<VmCounters>> {
    Ok(caps
        .all_domain_stats()
        .context(|| format!("reading the domain statistics of host {}", host.name))?
        .iter()
        .filter(|stats| is_managed(host, &stats.name))
        .map(convert::vm_counters)
        .collect())
}

pub fn vm_console<C: Capabilities>(
    caps: &C,
    host: &HostConfig,
    vm: &str,
) -> Result<ConsoleEndpoint> {
    check_vm_name(vm)?;
    let domain = look_up(caps, vm)?;
    if !is_active(domain.state) {
        return Err(Error::Invalid(format!(
            "vm {vm} is not running; its console exists only while it runs"
        )));
    }
    let live_xml = caps
        .domain_xml(vm, false)
        .context(|| format!("reading the live definition of vm {vm}"))?;
    let live = DomainXml::from_xml(&live_xml).map_err(|error| unreadable(vm, error))?;
    let inactive = read_definition(caps, vm)?;
    convert::console_endpoint(host, vm, &live, &inactive)
}

/// The domains whose names start with `prefix`, read back whole. A domain
/// that vanishes between the listing and its reading is skipped.
pub fn vm_scan<C: Capabilities>(caps: &C, host: &HostConfig, prefix: &str) -> Result<Vec<VmInfo>> {
    let names: Vec<String> = caps
        .list_domains()
        .context(|| format!("listing the domains of host {}", host.name))?
        .into_iter()
        .map(|domain| domain.name)
        .filter(|name| name.starts_with(prefix))
        .collect();
    let mut found = Vec::with_capacity(names.len());
    for name in names {
        match vm_get(caps, host, &name) {
            Ok(info) => found.push(info),
            Err(Error::NotFound(_)) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(found)
}

/// `given` when set, else the VM's first NAT address.
fn nat_address<C: Capabilities>(
    caps: &C,
    host: &HostConfig,
    vm: &str,
    given: &str,
) -> Result<String> {
    if !given.is_empty() {
        return Ok(given.to_owned());
    }
    let info = vm_get(caps, host, vm)?;
    convert::first_nat_address(&info.spec).ok_or_else(|| convert::no_nat_address(vm))
}

fn protocol_name(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    }
}

pub fn nat_apply<C: Capabilities>(
    caps: &C,
    host: &HostConfig,
    vm: &str,
    mut forward: PortForward,
) -> Result<PortForward> {
    forward.target_addr = nat_address(caps, host, vm, &forward.target_addr)?;
    caps.nat_add_rule(&forward).context(|| {
        format!(
            "forwarding {} port {} to {}:{}",
            protocol_name(forward.protocol),
            forward.public_port,
            forward.target_addr,
            forward.target_port
        )
    })?;
    Ok(forward)
}

pub fn nat_remove<C: Capabilities>(caps: &C, vm: &str, forward: &PortForward) -> Result<()> {
    caps.nat_remove_rule(forward.id).context(|| {
        format!(
            "removing the forward {} of {} port {} to vm {vm}",
            forward.id,
            protocol_name(forward.protocol),
            forward.public_port
        )
    })
}

pub fn proxy_apply<C: Capabilities>(
    caps: &C,
    host: &HostConfig,
    vm: &str,
    mut site: ProxySite,
) -> Result<ProxySite> {
    site.backend_addr = nat_address(caps, host, vm, &site.backend_addr)?;
    caps.proxy_put_site(&site).context(|| {
        format!(
            "publishing {} to {}:{}",
            site.domain, site.backend_addr, site.backend_port
        )
    })?;
    Ok(site)
}

pub fn proxy_remove<C: Capabilities>(caps: &C, vm: &str, site: &ProxySite) -> Result<()> {
    caps.proxy_remove_site(site.id)
        .context(|| format!("removing the site {} ({}) of vm {vm}", site.id, site.domain))
}

/// Record (or with `nic` = `None`, forget) a NIC's addressing in the
/// domain's metadata. Best effort: the NIC itself is already attached or
/// detached, and its DHCP binding is what the VM's network depends on.
fn record_nic<C: Capabilities>(caps: &C, vm: &str, mac: &str, nic: Option<&Nic>) {
    let recorded = (|| -> Result<()> {
        let mut document = read_document(caps, vm)?;
        let mut metadata: VmMetadata = convert::metadata_of(vm, &document.read());
        metadata
            .nics
            .retain(|recorded| !recorded.mac.eq_ignore_ascii_case(mac));
        if let Some(nic) = nic {
            metadata.nics.push(nic_meta(nic, &nic.name, mac));
        }
        document.set_metadata(Some(&metadata));
        caps.define_domain(&document.to_xml())?;
        Ok(())
    })();
    warn_on_error(
        caps,
        &format!("recording the NICs of vm {vm} in its metadata"),
        recorded,
    );
}

#[derive(Clone, Copy, PartialEq)]
enum DeviceChange {
    Plug,
    Unplug,
}

/// Attach or detach a NIC, persistently and, when the VM runs, live. A
/// driver that cannot change devices at all (libvirt's test driver answers
/// "not supported" even for the definition) gets the definition rewritten
/// instead; a running VM then has the change from its next start, which a
/// warning log record says.
fn change_interface<C: Capabilities>(
    caps: &C,
    vm: &str,
    interface: &InterfaceXml,
    live: bool,
    change: DeviceChange,
) -> Result<()> {
    let domain_type = read_definition(caps, vm)?.domain_type;
    let interface_xml = interface.to_xml(domain_type);
    let changed = match change {
        DeviceChange::Plug => caps.attach_device(vm, &interface_xml, live),
        DeviceChange::Unplug => caps.detach_device(vm, &interface_xml, live),
    };
    if !matches!(changed, Err(Error::Unsupported(_))) {
        return changed;
    }
    let mut document = read_document(caps, vm)?;
    let mut model = document.read();
    model
        .interfaces
        .retain(|present| !present.mac.eq_ignore_ascii_case(&interface.mac));
    if change == DeviceChange::Plug {
        model.interfaces.push(interface.clone());
    }
    document.apply(&model);
    caps.define_domain(&document.to_xml())?;
    if live {
        caps.log(
            Level::Warn,
            &format!(
                "vm {vm} runs on a host that cannot change its NICs live: NIC {} is {} its \
                 definition and applies from its next start",
                interface.mac,
                if change == DeviceChange::Plug {
                    "in"
                } else {
                    "gone from"
                }
            ),
        );
    }
    Ok(())
}

/// Attach a NIC (persistently, and live when the VM runs), bind its MAC to
/// its address in the NAT network's DHCP, and record it in the metadata.
pub fn ip_apply<C: Capabilities>(
    caps: &C,
    host: &HostConfig,
    vm: &str,
    mut nic: Nic,
    new_mac: NewMac,
) -> Result<Nic> {
    check_vm_name(vm)?;
    let source = convert::net_source(host, nic.kind)?;
    if !nic.mac_addr.is_empty() {
        check_mac(&nic.mac_addr)?;
        nic.mac_addr = normalize_mac(&nic.mac_addr);
    }
    let domain = look_up(caps, vm)?;
    let current = read_definition(caps, vm)?;
    let current_nics = convert::nics_of(&current);
    if !nic.mac_addr.is_empty() && current.interface_by_mac(&nic.mac_addr).is_some() {
        return Err(Error::Conflict(format!(
            "vm {vm} already has a NIC with MAC {}",
            nic.mac_addr
        )));
    }
    if nic.mac_addr.is_empty() {
        let taken: Vec<String> = current_nics
            .iter()
            .map(|nic| nic.mac_addr.clone())
            .collect();
        let mut mac = normalize_mac(&new_mac());
        for _ in 0..8 {
            if !taken.contains(&mac) {
                break;
            }
            mac = normalize_mac(&new_mac());
        }
        nic.mac_addr = mac;
    }
    if nic.name.is_empty() {
        nic.name = (current_nics.len()..)
            .map(|index| format!("nic{index}"))
            .find(|name| !current_nics.iter().any(|nic| &nic.name == name))
            .unwrap_or_default();
    }

    // The VM's speed limits apply to each of its NICs.
    let bandwidth = current
        .interfaces
        .first()
        .map(|interface| interface.bandwidth)
        .unwrap_or_default();
    let interface = InterfaceXml {
        source,
        mac: nic.mac_addr.clone(),
        bandwidth,
    };
    let live = is_active(domain.state);
    change_interface(caps, vm, &interface, live, DeviceChange::Plug)
        .context(|| format!("attaching NIC {} ({}) to vm {vm}", nic.name, nic.mac_addr))?;

    if let Some(binding) = convert::bindings_of(vm, std::slice::from_ref(&nic)).first()
        && let Err(error) = add_binding(caps, host, binding)
    {
        warn_on_error(
            caps,
            &format!("cleanup: detaching NIC {} from vm {vm}", nic.mac_addr),
            change_interface(caps, vm, &interface, live, DeviceChange::Unplug),
        );
        return Err(error);
    }
    record_nic(caps, vm, &nic.mac_addr, Some(&nic));
    Ok(nic)
}

/// The MAC of the NIC `nic` designates: its own, else that of the VM's NIC
/// of the same name or address, else the one the NAT DHCP binds its
/// address to.
fn designated_mac<C: Capabilities>(
    caps: &C,
    host: &HostConfig,
    nic: &Nic,
    current_nics: &[Nic],
) -> String {
    if !nic.mac_addr.is_empty() {
        return normalize_mac(&nic.mac_addr);
    }
    let by_name_or_address = current_nics.iter().find(|current| {
        (!nic.name.is_empty() && current.name == nic.name)
            || (!nic.ip4_addr.is_empty() && current.ip4_addr == nic.ip4_addr)
    });
    if let Some(current) = by_name_or_address {
        return current.mac_addr.clone();
    }
    if nic.kind == NicKind::Nat
        && !nic.ip4_addr.is_empty()
        && !host.network_nat.is_empty()
        && let Ok(xml) = caps.network_xml(&host.network_nat)
    {
        let bindings: Vec<DhcpHost> = convert::dhcp_hosts(&xml);
        if let Some(binding) = bindings.iter().find(|binding| binding.ip == nic.ip4_addr) {
            return binding.mac.clone();
        }
    }
    String::new()
}

/// Detach a NIC and remove its DHCP binding. A NIC already gone is fine;
/// a detach refused while the NIC is still there is not.
pub fn ip_remove<C: Capabilities>(caps: &C, host: &HostConfig, vm: &str, nic: &Nic) -> Result<()> {
    check_vm_name(vm)?;
    let domain = look_up(caps, vm)?;
    let current = read_definition(caps, vm)?;
    let current_nics = convert::nics_of(&current);
    let mac = designated_mac(caps, host, nic, &current_nics);
    if mac.is_empty() {
        return Err(Error::NotFound(format!(
            "vm {vm} has no NIC named {:?} or with address {:?}; give its mac_addr",
            nic.name, nic.ip4_addr
        )));
    }
    check_mac(&mac)?;

    if let Some(interface) = current.interface_by_mac(&mac) {
        let live = is_active(domain.state);
        if let Err(error) = change_interface(caps, vm, interface, live, DeviceChange::Unplug) {
            let still_attached = read_definition(caps, vm)
                .map(|definition| definition.interface_by_mac(&mac).is_some())
                .unwrap_or(true);
            if !matches!(error, Error::NotFound(_)) || still_attached {
                return Err(with_context(
                    error,
                    &format!("detaching NIC {mac} from vm {vm}"),
                ));
            }
        }
        record_nic(caps, vm, &mac, None);
    }

    let recorded = current_nics.iter().find(|current| current.mac_addr == mac);
    let kind = recorded.map(|current| current.kind).unwrap_or(nic.kind);
    let ip = if nic.ip4_addr.is_empty() {
        recorded
            .map(|current| current.ip4_addr.clone())
            .unwrap_or_default()
    } else {
        nic.ip4_addr.clone()
    };
    if kind == NicKind::Nat && !ip.is_empty() && !host.network_nat.is_empty() {
        let binding = Binding {
            mac,
            ip,
            name: String::new(),
        };
        remove_binding(caps, host, &binding)?;
    }
    Ok(())
}

/// The catalogue entries whose image the host's image storage holds.
pub fn os_images<C: Capabilities>(caps: &C, catalogue: &[ImageEntry]) -> Result<Vec<OsImage>> {
    let volumes = caps
        .list_images()
        .context(|| "listing the host's images".to_owned())?;
    let mut images = Vec::new();
    for entry in catalogue {
        match volumes.iter().find(|volume| volume.name == entry.file) {
            Some(volume) => images.push(OsImage {
                name: entry.name.clone(),
                file: entry.file.clone(),
                format: volume.format.clone(),
                size_mb: volume.capacity_bytes.div_ceil(MIB),
                min_disk_mb: entry.min_disk_mb,
            }),
            None => caps.log(
                Level::Warn,
                &format!(
                    "image {} of os {} is not in the host's image storage",
                    entry.file, entry.name
                ),
            ),
        }
    }
    Ok(images)
}

const MIB: u64 = 1 << 20;

/// Delete a volume that may not exist.
fn delete_if_present<C: Capabilities>(caps: &C, volume: &str) -> Result<()> {
    match caps.delete_volume(volume) {
        Ok(()) | Err(Error::NotFound(_)) => Ok(()),
        Err(error) => Err(with_context(error, &format!("deleting volume {volume}"))),
    }
}

/// Write `boot` as the VM's seed volume (replacing the one it had); answers
/// the volume's path.
fn write_seed<C: Capabilities>(
    caps: &C,
    vm: &str,
    boot: &FirstBoot,
    nics: &[Nic],
) -> Result<String> {
    let image = Seed::new(boot, nics).to_fat_image().map_err(|error| {
        Error::Failed(format!("making the first-boot seed of vm {vm}: {error}"))
    })?;
    let volume = convert::seed_volume(vm);
    delete_if_present(caps, &volume)?;
    caps.upload_volume(&volume, &image)
        .context(|| format!("uploading the first-boot seed of vm {vm}"))
}

/// Put a fresh system disk from `plan.image` under the stopped VM and a new
/// first-boot seed beside it. The data disks stay as they are.
pub fn vm_install<C: Capabilities>(
    caps: &C,
    host: &HostConfig,
    spec: &VmSpec,
    plan: &InstallPlan,
) -> Result<VmInfo> {
    let vm = spec.vm_uuid.as_str();
    check_vm_name(vm)?;
    let domain = look_up(caps, vm)?;
    if domain.state != PowerState::Stopped {
        return Err(Error::Conflict(format!(
            "vm {vm} must be stopped to install an image (it is {:?})",
            domain.state
        )));
    }
    let image = caps
        .list_images()
        .context(|| "listing the host's images".to_owned())?
        .into_iter()
        .find(|volume| volume.name == plan.image.file)
        .ok_or_else(|| {
            Error::NotFound(format!(
                "image {} of os {} is not in the host's image storage",
                plan.image.file, plan.image.name
            ))
        })?;
    let size_mb = spec
        .hdd_mb
        .max(plan.image.min_disk_mb)
        .max(image.capacity_bytes.div_ceil(MIB));

    let mut document = read_document(caps, vm)?;
    let current = document.read();
    let system = convert::volume_name(vm, convert::SYSTEM_DISK);
    delete_if_present(caps, &system)?;
    let path = caps
        .create_volume_from_image(&system, &image.name, size_mb, plan.linked_clone)
        .context(|| {
            format!(
                "making the system disk of vm {vm} from image {}",
                image.name
            )
        })?;
    let seed = write_seed(caps, vm, &plan.first_boot, &convert::nics_of(&current))?;

    let mut model = current.clone();
    if current.disk_by_path(&path).is_none() {
        // A VM created without a system disk gets one in front.
        model.disks.insert(
            0,
            DiskXml {
                path: path.clone(),
                target: current.free_disk_target(),
                format: DiskFormat::Qcow2,
            },
        );
    }
    let mut metadata = current.metadata.clone().unwrap_or_default();
    metadata.os_name = plan.image.name.clone();
    metadata.system = Some(VolumeMeta {
        name: convert::SYSTEM_DISK.to_owned(),
        volume: system,
        size_mb,
    });
    model.metadata = Some(metadata);
    document.apply(&model);
    document.set_disk_format(&path, DiskFormat::Qcow2);
    document.set_seed(Some(&seed));
    document.ensure_guest_agent();
    caps.define_domain(&document.to_xml())
        .context(|| format!("redefining vm {vm} with its installed system disk"))?;
    vm_get(caps, host, vm)
}

/// A new password: through the guest agent of a running VM, else in a new
/// seed that the guest applies at its next boot.
pub fn vm_password<C: Capabilities>(
    caps: &C,
    vm: &str,
    user: &str,
    boot: &FirstBoot,
) -> Result<PasswordRoute> {
    check_vm_name(vm)?;
    let domain = look_up(caps, vm)?;
    if domain.state == PowerState::Running {
        match caps.guest_set_password(vm, user, &boot.password_hash) {
            Ok(()) => return Ok(PasswordRoute::GuestAgent),
            Err(error) => caps.log(
                Level::Info,
                &format!(
                    "vm {vm}: the guest agent did not take the password ({}); it applies at the next boot",
                    message_of(&error)
                ),
            ),
        }
    }
    let mut document = read_document(caps, vm)?;
    let current = document.read();
    let seed = write_seed(caps, vm, boot, &convert::nics_of(&current))?;
    document.set_seed(Some(&seed));
    caps.define_domain(&document.to_xml())
        .context(|| format!("redefining vm {vm} with its new seed"))?;
    Ok(PasswordRoute::NextBoot)
}

/// The CPU this host runs: `wanted` if a throwaway domain starts with it,
/// else the first of the fallback chain that does.
pub fn cpu_probe<C: Capabilities>(
    caps: &C,
    host: &HostConfig,
    wanted: Option<&CpuChoice>,
) -> Result<CpuChoice> {
    let domain_type = convert::domain_type(host)?;
    if domain_type != DomainType::Kvm {
        return Err(Error::Unsupported(format!(
            "a {} host has no CPU model to choose",
            domain_type.as_str()
        )));
    }
    let capabilities = caps.domain_capabilities().ok();
    let candidates: Vec<CpuChoice> = wanted
        .cloned()
        .into_iter()
        .chain(
            convert::cpu_candidates(capabilities.as_deref())
                .into_iter()
                .map(convert::cpu_choice_of),
        )
        .collect();
    let mut refusals = Vec::new();
    // Its own name: two creates (or two panels on one host) probing at
    // once must not find each other's throwaway domain.
    let suffix = openidcs_sdk::random_suffix();
    for choice in candidates {
        let probe = convert::probe_domain(host, &choice, &suffix);
        match caps.try_domain(&probe.to_xml()) {
            Ok(()) => return Ok(choice),
            Err(error) => refusals.push(format!(
                "{}: {}",
                convert::describe_cpu(&choice),
                message_of(&error)
            )),
        }
    }
    Err(Error::Failed(format!(
        "no CPU model starts on host {}: {}",
        host.name,
        refusals.join("; ")
    )))
}
