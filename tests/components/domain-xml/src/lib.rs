//! Test engine: `vm-create` submits hostile domain XML chosen by the spec's
//! `os-name` (`commandline`, `hostdev`, `shadow`, `traversal`, `clean`) and
//! reports what the libvirt capability answered. The sandbox tests expect
//! `denied` and nothing defined. Its `host-status` answers the XML of the
//! host's NAT network in `hostname`, so tests can see DHCP bindings as
//! libvirt holds them.

use openidcs_sdk::{Engine, EngineInfo, HostConfig, HostCounters, Result, VmInfo, VmSpec, libvirt};

struct DomainXml;

fn domain_xml(name: &str, devices: &str, extra: &str) -> String {
    format!(
        "<domain type='test' xmlns:q='http://libvirt.org/schemas/domain/qemu/1.0'>\
         <name>{name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>\
         <os><type>hvm</type></os><devices>{devices}</devices>{extra}</domain>"
    )
}

impl Engine for DomainXml {
    fn describe() -> EngineInfo {
        EngineInfo {
            name: "domain-xml".to_owned(),
            version: "0.0.0".to_owned(),
            description: "test engine that submits hostile domain XML".to_owned(),
        }
    }

    fn host_status(host: HostConfig) -> Result<HostCounters> {
        Ok(HostCounters {
            hostname: libvirt::network_xml(&host.network_nat)?,
            hypervisor: String::new(),
            hypervisor_version: String::new(),
            cpu_total: 0,
            cpu_busy_ns: 0,
            cpu_idle_ns: 0,
            mem_total_mb: 0,
            mem_used_mb: 0,
            hdd_total_mb: 0,
            hdd_used_mb: 0,
            vm_count: 0,
            vm_running: 0,
        })
    }

    fn vm_create(_host: HostConfig, spec: VmSpec) -> Result<VmInfo> {
        let name = spec.vm_uuid.as_str();
        let xml = match spec.os_name.as_str() {
            "commandline" => domain_xml(
                name,
                "",
                "<q:commandline><q:arg value='-evil'/></q:commandline>",
            ),
            "hostdev" => domain_xml(
                name,
                "<hostdev mode='subsystem' type='pci'><source><address domain='0' bus='0' slot='1' function='0'/></source></hostdev>",
                "",
            ),
            "shadow" => domain_xml(
                name,
                "<disk type='file' device='disk'><source file='/etc/shadow'/><target dev='vda'/></disk>",
                "",
            ),
            "traversal" => domain_xml(
                name,
                "<disk type='file' device='disk'><source file='/default-pool/../etc/shadow'/><target dev='vda'/></disk>",
                "",
            ),
            _ => domain_xml(name, "", ""),
        };
        let domain = libvirt::define_domain(&xml)?;
        Ok(VmInfo {
            vm_uuid: domain.name,
            domain_uuid: domain.uuid,
            power: domain.state,
            spec,
        })
    }
}

openidcs_sdk::export_engine!(DomainXml);
