"""An openidcs engine in Python: adopt and operate existing libvirt domains.

Built into a WebAssembly component with componentize-py against
`wit/engine.wit` (see README.md). It imports only the `libvirt` and `log`
capabilities, so its config grants just those two, and it shows what a
third-party engine looks like outside Rust: each export of the `engine`
interface is a method below; a failure is `raise Err(Error_...(text))`,
which the core answers as 404/400/409/403/500 with that text.

What it does: list, read, power, monitor and open the console of domains
that already exist on the host (`scaner` imports them into the panel).
What it refuses, as `unsupported` (400 naming this engine): creating,
changing and deleting VMs, and NAT/IP/proxy changes. The Rust engine in
plugins/libvirt does those.
"""

import xml.etree.ElementTree as ElementTree
from typing import List

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import libvirt, log
from wit_world.imports.types import (
    ConsoleEndpoint,
    Disk,
    EngineInfo,
    Error_Invalid,
    Error_NotFound,
    Error_Unsupported,
    HostConfig,
    HostCounters,
    Nic,
    NicKind,
    PortForward,
    PowerAction,
    PowerState,
    ProxySite,
    VmCounters,
    VmInfo,
    VmSpec,
)

NAME = "python-adopt"
VERSION = "0.1.0"
MB = 1024 * 1024

LIFECYCLE = {
    PowerAction.START: libvirt.LifecycleOp.START,
    PowerAction.STOP: libvirt.LifecycleOp.SHUTDOWN,
    PowerAction.HARD_STOP: libvirt.LifecycleOp.DESTROY,
    PowerAction.RESET: libvirt.LifecycleOp.REBOOT,
    PowerAction.HARD_RESET: libvirt.LifecycleOp.RESET,
    PowerAction.PAUSE: libvirt.LifecycleOp.SUSPEND,
    PowerAction.RESUME: libvirt.LifecycleOp.RESUME,
}

ACTIVE = {PowerState.RUNNING, PowerState.PAUSED, PowerState.STOPPING, PowerState.SUSPENDED}


def managed(host: HostConfig, name: str) -> bool:
    return name.startswith(host.filter_name)


def refuse(what: str):
    raise Err(Error_Unsupported(
        f"{NAME} adopts existing domains and does not {what}; use the libvirt engine for that"))


def empty_spec(name: str) -> VmSpec:
    return VmSpec(vm_uuid=name, os_name="", os_pass="", vc_port=0, vc_pass="", cpu_num=0,
                  cpu_per=0, mem_mb=0, hdd_mb=0, speed_up=0, speed_down=0, nics=[], disks=[])


def spec_of(name: str, definition: str) -> VmSpec:
    """The parts of a domain definition the panel shows."""
    spec = empty_spec(name)
    root = ElementTree.fromstring(definition)
    spec.cpu_num = int(root.findtext("vcpu") or 0)
    memory = root.find("memory")
    if memory is not None and memory.text:
        unit = memory.get("unit", "KiB")
        scale = {"KiB": 1024, "MiB": MB, "GiB": 1024 * MB, "b": 1, "bytes": 1}.get(unit, 1024)
        spec.mem_mb = int(memory.text) * scale // MB
    graphics = root.find("devices/graphics[@type='vnc']")
    if graphics is not None:
        spec.vc_port = max(int(graphics.get("port", "0")), 0)
        spec.vc_pass = graphics.get("passwd", "")
    for index, interface in enumerate(root.findall("devices/interface")):
        mac = interface.find("mac")
        spec.nics.append(Nic(
            name=f"nic{index}",
            kind=NicKind.NAT if interface.get("type") == "network" else NicKind.PUB,
            mac_addr=mac.get("address", "") if mac is not None else "",
            ip4_addr="", ip6_addr="", gate="", mask="", dns=[]))
    for disk in root.findall("devices/disk[@device='disk']"):
        target = disk.find("target")
        spec.disks.append(Disk(name=target.get("dev", "") if target is not None else "", size_mb=0))
    return spec


def info_of(host: HostConfig, name: str) -> VmInfo:
    if not managed(host, name):
        raise Err(Error_NotFound(f"vm {name} is not managed on host {host.name}"))
    domain = libvirt.get_domain(name)
    return VmInfo(vm_uuid=domain.name, domain_uuid=domain.uuid, power=domain.state,
                  spec=spec_of(domain.name, libvirt.domain_xml(name, True)))


class Engine(exports.Engine):
    def describe(self) -> EngineInfo:
        return EngineInfo(name=NAME, version=VERSION,
                          description="Adopts existing libvirt domains: list, power, "
                                      "monitor, console (written in Python)")

    def host_status(self, host: HostConfig) -> HostCounters:
        node = libvirt.node_info()
        domains = [domain for domain in libvirt.list_domains() if managed(host, domain.name)]
        return HostCounters(
            hostname=node.hostname, hypervisor=node.hypervisor,
            hypervisor_version=node.hypervisor_version, cpu_total=node.cpus,
            cpu_busy_ns=node.cpu_busy_ns, cpu_idle_ns=node.cpu_idle_ns,
            mem_total_mb=node.mem_total_kib // 1024,
            mem_used_mb=max(node.mem_total_kib - node.mem_free_kib, 0) // 1024,
            hdd_total_mb=node.storage_capacity_bytes // MB,
            hdd_used_mb=node.storage_allocation_bytes // MB,
            vm_count=len(domains),
            vm_running=sum(1 for domain in domains if domain.state == PowerState.RUNNING))

    def vm_list(self, host: HostConfig) -> List[VmInfo]:
        return [VmInfo(vm_uuid=domain.name, domain_uuid=domain.uuid, power=domain.state,
                       spec=empty_spec(domain.name))
                for domain in libvirt.list_domains() if managed(host, domain.name)]

    def vm_get(self, host: HostConfig, vm_uuid: str) -> VmInfo:
        return info_of(host, vm_uuid)

    def vm_create(self, host: HostConfig, spec: VmSpec) -> VmInfo:
        refuse("create VMs")

    def vm_update(self, host: HostConfig, spec: VmSpec) -> VmInfo:
        refuse("change VMs")

    def vm_delete(self, host: HostConfig, vm_uuid: str) -> None:
        refuse("delete VMs")

    def vm_power(self, host: HostConfig, vm_uuid: str, action: PowerAction) -> PowerState:
        if not managed(host, vm_uuid):
            raise Err(Error_NotFound(f"vm {vm_uuid} is not managed on host {host.name}"))
        state = libvirt.lifecycle(vm_uuid, LIFECYCLE[action])
        log.log(log.Level.INFO, f"{NAME}: {action.name.lower()} {vm_uuid} -> {state.name.lower()}")
        return state

    def vm_usage(self, host: HostConfig) -> List[VmCounters]:
        return [VmCounters(
            vm_uuid=stats.name, power=stats.state, cpu_num=stats.vcpus,
            cpu_time_ns=stats.cpu_time_ns, mem_total_mb=stats.mem_max_kib // 1024,
            mem_used_mb=stats.mem_used_kib // 1024,
            hdd_total_mb=stats.disk_capacity_bytes // MB,
            hdd_used_mb=stats.disk_allocation_bytes // MB,
            net_rx_bytes=stats.net_rx_bytes, net_tx_bytes=stats.net_tx_bytes)
            for stats in libvirt.all_domain_stats() if managed(host, stats.name)]

    def vm_console(self, host: HostConfig, vm_uuid: str) -> ConsoleEndpoint:
        info = info_of(host, vm_uuid)
        if info.power not in ACTIVE:
            raise Err(Error_Invalid(f"vm {vm_uuid} is not running; its console exists only while it runs"))
        live = ElementTree.fromstring(libvirt.domain_xml(vm_uuid, False))
        graphics = live.find("devices/graphics[@type='vnc']")
        if graphics is None:
            raise Err(Error_NotFound(f"vm {vm_uuid} has no VNC console"))
        port = int(graphics.get("port", "-1"))
        if port <= 0:
            raise Err(Error_Invalid(f"vm {vm_uuid} has no VNC port yet"))
        listen = graphics.get("listen", "")
        address = listen if listen not in ("", "0.0.0.0", "::") else (host.public_addr or ["127.0.0.1"])[0]
        return ConsoleEndpoint(protocol="vnc", host=address, port=port, password=info.spec.vc_pass)

    def vm_scan(self, host: HostConfig, prefix: str) -> List[VmInfo]:
        found = []
        for domain in libvirt.list_domains():
            if domain.name.startswith(prefix) and managed(host, domain.name):
                try:
                    found.append(info_of(host, domain.name))
                except Err as error:
                    if not isinstance(error.value, Error_NotFound):
                        raise
        return found

    def nat_apply(self, host: HostConfig, vm_uuid: str, forward: PortForward) -> PortForward:
        refuse("forward ports")

    def nat_remove(self, host: HostConfig, vm_uuid: str, forward: PortForward) -> None:
        refuse("forward ports")

    def ip_apply(self, host: HostConfig, vm_uuid: str, nic: Nic) -> Nic:
        refuse("change NICs")

    def ip_remove(self, host: HostConfig, vm_uuid: str, nic: Nic) -> None:
        refuse("change NICs")

    def proxy_apply(self, host: HostConfig, vm_uuid: str, site: ProxySite) -> ProxySite:
        refuse("publish web sites")

    def proxy_remove(self, host: HostConfig, vm_uuid: str, site: ProxySite) -> None:
        refuse("publish web sites")
