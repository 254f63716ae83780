//! Test engine: `vm-create` submits hostile domain XML chosen by the spec's
//! `os-name` (`commandline`, `hostdev`, `shadow`, `traversal`, `clean`) and
//! reports what the libvirt capability answered. The sandbox tests expect
//! `denied` and nothing defined.

use openidcs_sdk::{Engine, EngineInfo, HostConfig, Result, VmInfo, VmSpec, libvirt};

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
