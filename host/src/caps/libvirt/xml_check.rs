//! The checks every domain and device XML passes before libvirt sees it.
//!
//! The XML is parsed here (roxmltree, no DTD, bounded size) and walked by one
//! small function per rule. Elements are matched by local name whatever their
//! namespace, so a namespaced `<x:hostdev>` is treated like `<hostdev>`: the
//! checks may be stricter than libvirt's parser, never looser. A violation is
//! `denied` naming the rule and the value; XML that does not parse is
//! `invalid`. Nothing here talks to libvirt.

use std::path::{Component, Path, PathBuf};

use roxmltree::{Document, Node, ParsingOptions};

use crate::caps::HostScope;
use crate::model::rules;
use crate::plugin::bindings::PluginError;

/// Largest XML accepted; real domain XML is a few KiB.
const MAX_XML_BYTES: usize = 1 << 20;
/// Bound on parsed nodes, so a flat flood of elements cannot eat memory.
const MAX_XML_NODES: u32 = 100_000;
/// libvirt's per-driver extension namespaces (`qemu:commandline`,
/// `lxc:namespace`, `bhyve:commandline`, `xen:commandline`, ...).
const DRIVER_NAMESPACES: &str = "http://libvirt.org/schemas/domain/";
/// The QEMU one, named in messages because it is the one people try.
const QEMU_NAMESPACE: &str = "http://libvirt.org/schemas/domain/qemu/1.0";
/// Where hypervisor binaries live; `<emulator>` may only name one of these.
const EMULATOR_DIRS: &[&str] = &[
    "/usr/bin",
    "/usr/libexec",
    "/usr/local/bin",
    "/bin",
    "/usr/lib/libvirt",
];
/// Read-only firmware images (`<loader>`, `<nvram template=>`).
const FIRMWARE_DIR: &str = "/usr/share";
/// Where libvirt keeps per-domain UEFI variable stores it generates.
const NVRAM_DIR: &str = "/var/lib/libvirt/qemu/nvram";
/// Where libvirt puts the host end of a guest agent channel it generates
/// (older releases, then newer ones).
const CHANNEL_DIRS: &[&str] = &[
    "/var/lib/libvirt/qemu/channel/target",
    "/run/libvirt/qemu/channel",
];
/// Entropy sources an `<rng>` backend may read.
const RNG_SOURCES: &[&str] = &["/dev/urandom", "/dev/random"];

type Check = Result<(), PluginError>;

/// Check a whole domain definition; answers the domain's name.
pub fn check_domain_xml(xml: &str, scope: &HostScope) -> Result<String, PluginError> {
    let text = bounded(xml)?;
    let document = parse(text)?;
    let root = document.root_element();
    if root.tag_name().name() != "domain" {
        return Err(PluginError::Invalid(format!(
            "domain XML must have <domain> as its root element, not <{}>",
            root.tag_name().name()
        )));
    }
    let name = domain_name(root)?;
    check_name("domain", &name, &scope.name_prefix)?;
    check_all(&document, scope, Some(&name))?;
    Ok(name)
}

/// Check the XML of one device for attach/detach.
pub fn check_device_xml(xml: &str, scope: &HostScope) -> Check {
    let text = bounded(xml)?;
    let document = parse(text)?;
    if document.root_element().tag_name().name() == "domain" {
        return Err(PluginError::Invalid(
            "device XML must be one device element, not a whole <domain>".to_owned(),
        ));
    }
    check_all(&document, scope, None)
}

/// The name rule for domains and volumes: `[A-Za-z0-9_.-]{1,64}`, not all
/// dots, starting with the host's prefix when it has one.
pub fn check_name(kind: &str, name: &str, prefix: &str) -> Check {
    if !valid_name(name) {
        return Err(PluginError::Denied(format!(
            "{kind} name {} must be 1 to 64 characters of A-Z a-z 0-9 _ . - (and not only dots)",
            shown(name)
        )));
    }
    if !name.starts_with(prefix) {
        return Err(PluginError::Denied(format!(
            "{kind} name {} does not start with the host's prefix {}",
            shown(name),
            shown(prefix)
        )));
    }
    Ok(())
}

/// The panel's name rule, and not `.`/`..`/`...` (a volume's name is a
/// file name in the storage directory: dots alone are path components).
pub fn valid_name(name: &str) -> bool {
    rules::is_name(name) && !name.bytes().all(|byte| byte == b'.')
}

/// A value quoted for a message, cut short so a huge value cannot flood logs.
pub fn shown(value: &str) -> String {
    const LIMIT: usize = 200;
    match value.char_indices().nth(LIMIT) {
        None => format!("{value:?}"),
        Some((cut, _)) => format!("{:?}…", &value[..cut]),
    }
}

/// `path` cleaned lexically (`.` and repeated `/` dropped) when it is absolute
/// and has no `..` component; `None` otherwise.
pub fn clean_absolute(path: &str) -> Option<PathBuf> {
    if !path.starts_with('/') {
        return None;
    }
    let mut cleaned = PathBuf::from("/");
    for component in Path::new(path).components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(part) => cleaned.push(part),
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(cleaned)
}

fn bounded(xml: &str) -> Result<&str, PluginError> {
    // libvirt takes C strings: a NUL would cut the XML short (and `virt`
    // panics on one).
    if xml.contains('\0') {
        return Err(PluginError::Invalid(
            "XML contains a NUL character".to_owned(),
        ));
    }
    if xml.len() > MAX_XML_BYTES {
        return Err(PluginError::Invalid(format!(
            "XML is {} bytes; at most {MAX_XML_BYTES} are accepted",
            xml.len()
        )));
    }
    Ok(xml)
}

fn parse(xml: &str) -> Result<Document<'_>, PluginError> {
    // No DTD (the default): entities are how parsers get tricked into
    // disagreeing with libvirt's, and libvirt XML never needs one.
    let options = ParsingOptions {
        allow_dtd: false,
        nodes_limit: MAX_XML_NODES,
    };
    Document::parse_with_options(xml, options)
        .map_err(|error| PluginError::Invalid(format!("malformed XML: {error}")))
}

fn check_all(document: &Document, scope: &HostScope, domain: Option<&str>) -> Check {
    no_driver_namespace(document)?;
    no_host_devices(document, scope.allow_hostdev)?;
    no_network_disks(document)?;
    disk_types_are_local(document)?;
    disk_sources_in_storage(document, scope)?;
    emulator_is_a_hypervisor(document)?;
    no_interface_scripts(document)?;
    no_security_label_override(document)?;
    host_paths_in_storage(document, scope, domain)
}

/// The text of the root's one `<name>` child, as libvirt's XPath reads it.
fn domain_name(root: Node) -> Result<String, PluginError> {
    let mut names = root.children().filter(|node| is(node, "name"));
    let (Some(name), None) = (names.next(), names.next()) else {
        return Err(PluginError::Invalid(
            "domain XML must have exactly one <name>".to_owned(),
        ));
    };
    if name.children().any(|child| child.is_element()) {
        return Err(PluginError::Invalid(
            "<name> must hold only text".to_owned(),
        ));
    }
    // Concatenate every text piece, like XPath string(): a comment or CDATA
    // split inside the name must not make this check read another name.
    Ok(name
        .descendants()
        .filter_map(|node| if node.is_text() { node.text() } else { None })
        .collect())
}

fn is(node: &Node, local_name: &str) -> bool {
    node.is_element() && node.tag_name().name() == local_name
}

/// Every element libvirt interprets: all but the content of the domain's
/// `<metadata>`, which libvirt stores verbatim and never reads (engines keep
/// their own elements there, whatever their names).
fn checked<'a, 'input>(document: &'a Document<'input>) -> impl Iterator<Item = Node<'a, 'input>> {
    let root = document.root_element();
    let opaque = move |node: &Node| {
        is(&root, "domain")
            && node.ancestors().any(|ancestor| {
                is(&ancestor, "metadata") && ancestor.parent() == Some(root) && ancestor != *node
            })
    };
    document
        .descendants()
        .filter(move |node| node.is_element() && !opaque(node))
}

fn elements<'a, 'input>(
    document: &'a Document<'input>,
    local_name: &'a str,
) -> impl Iterator<Item = Node<'a, 'input>> {
    checked(document).filter(move |node| is(node, local_name))
}

/// Prevents raw hypervisor options (`<qemu:commandline>`, `<lxc:namespace>`...) that bypass every rule.
fn no_driver_namespace(document: &Document) -> Check {
    for node in checked(document) {
        let element_namespace = node.tag_name().namespace();
        let attribute_namespaces = node.attributes().map(|attribute| attribute.namespace());
        for namespace in std::iter::once(element_namespace)
            .chain(attribute_namespaces)
            .flatten()
        {
            if namespace.starts_with(DRIVER_NAMESPACES) {
                let what = if namespace == QEMU_NAMESPACE {
                    "the QEMU namespace"
                } else {
                    "a libvirt driver namespace"
                };
                return Err(PluginError::Denied(format!(
                    "<{}> uses {what} ({namespace}), which passes raw options to the hypervisor; not allowed",
                    node.tag_name().name()
                )));
            }
        }
    }
    Ok(())
}

/// Prevents passing the host's PCI/USB/SCSI devices or smartcard reader to a guest (unless allowed).
fn no_host_devices(document: &Document, allowed: bool) -> Check {
    if allowed {
        return Ok(());
    }
    let refused = |what: &str| {
        Err(PluginError::Denied(format!(
            "{what} (host device passthrough) is not allowed on this host"
        )))
    };
    for node in checked(document) {
        match (
            node.tag_name().name(),
            node.attribute("type"),
            node.attribute("mode"),
        ) {
            ("hostdev", _, _) => return refused("<hostdev>"),
            ("interface", Some("hostdev"), _) => return refused("<interface type='hostdev'>"),
            ("smartcard", _, Some("host")) => return refused("<smartcard mode='host'>"),
            _ => {}
        }
    }
    Ok(())
}

/// Prevents the hypervisor opening network storage (NBD, iSCSI, RBD, HTTP...) for the plugin.
fn no_network_disks(document: &Document) -> Check {
    for disk in elements(document, "disk") {
        for node in disk.descendants().filter(|node| node.is_element()) {
            if let Some(protocol) = node.attribute("protocol").filter(|_| is(&node, "source")) {
                return Err(PluginError::Denied(format!(
                    "network disk source (protocol {}) is not allowed",
                    shown(protocol)
                )));
            }
            if node.attribute("type") == Some("network")
                && ["disk", "backingStore", "mirror"].contains(&node.tag_name().name())
            {
                return Err(PluginError::Denied(format!(
                    "<{} type='network'> (network disk) is not allowed",
                    node.tag_name().name()
                )));
            }
        }
    }
    Ok(())
}

/// Prevents disk kinds whose source is no checkable path (`volume` of any pool, `nvme`, `vhostuser`).
fn disk_types_are_local(document: &Document) -> Check {
    for disk in elements(document, "disk") {
        match disk.attribute("type") {
            None | Some("file" | "block" | "dir") => {}
            Some(other) => {
                return Err(PluginError::Denied(format!(
                    "disk type {} is not allowed; use file, block or dir",
                    shown(other)
                )));
            }
        }
    }
    Ok(())
}

/// Prevents giving a guest (and relabelling) a host file outside the storage dir, e.g. `/etc/shadow`.
///
/// A `<backingStore>` source (the image under a linked clone) may also be in
/// the host's image directory: the guest reads it, QEMU never writes it.
fn disk_sources_in_storage(document: &Document, scope: &HostScope) -> Check {
    for disk in elements(document, "disk") {
        for node in disk.descendants().filter(|node| node.is_element()) {
            if in_images_backing_store(&node, scope) {
                continue;
            }
            let attributes: &[&str] = match node.tag_name().name() {
                "source" => &["file", "dev", "dir"],
                "mirror" => &["file"],
                _ => &[],
            };
            for attribute in attributes {
                // An empty source is an empty CD-ROM drive.
                if let Some(path) = node.attribute(*attribute).filter(|path| !path.is_empty()) {
                    in_storage("disk source", path, &scope.storage_dir)?;
                }
            }
        }
    }
    Ok(())
}

/// Prevents running an arbitrary host program as the hypervisor process.
fn emulator_is_a_hypervisor(document: &Document) -> Check {
    for emulator in elements(document, "emulator") {
        let path = element_text(&emulator);
        let known = clean_absolute(path.trim()).is_some_and(|clean| {
            let in_known_dir = clean
                .parent()
                .is_some_and(|dir| EMULATOR_DIRS.iter().any(|known| dir == Path::new(known)));
            let file = clean
                .file_name()
                .and_then(|file| file.to_str())
                .unwrap_or("");
            in_known_dir
                && (file.starts_with("qemu-system-")
                    || ["qemu-kvm", "kvm", "libvirt_lxc"].contains(&file))
        });
        if !known {
            return Err(PluginError::Denied(format!(
                "emulator {} is not a known hypervisor binary",
                shown(&path)
            )));
        }
    }
    Ok(())
}

/// Prevents libvirt running a host script as root when a NIC goes up or down.
fn no_interface_scripts(document: &Document) -> Check {
    match checked(document).find(|node| is(node, "script") || is(node, "downscript")) {
        Some(node) => Err(PluginError::Denied(format!(
            "<{} path={}> would run a host program as root; not allowed",
            node.tag_name().name(),
            shown(node.attribute("path").unwrap_or(""))
        ))),
        None => Ok(()),
    }
}

/// Prevents switching off or choosing the guest's confinement (`type='none'`, static `+0:+0` labels).
fn no_security_label_override(document: &Document) -> Check {
    for seclabel in elements(document, "seclabel") {
        let domain_level = seclabel
            .parent()
            .is_some_and(|parent| is(&parent, "domain"));
        let label_type = seclabel.attribute("type");
        if domain_level && !matches!(label_type, None | Some("dynamic")) {
            return Err(PluginError::Denied(format!(
                "<seclabel type={}> is not allowed; only dynamic labels",
                shown(label_type.unwrap_or(""))
            )));
        }
        if domain_level && seclabel.attribute("relabel") == Some("no") {
            return Err(PluginError::Denied(
                "<seclabel relabel='no'> on the domain is not allowed".to_owned(),
            ));
        }
        if let Some(label) = seclabel
            .children()
            .find(|child| is(child, "label") || is(child, "baselabel"))
        {
            return Err(PluginError::Denied(format!(
                "<seclabel> with <{}> chooses the guest's security label; not allowed",
                label.tag_name().name()
            )));
        }
    }
    Ok(())
}

/// Prevents reaching host files by other doors (`<filesystem>`, `<serial>`, `<log>`, `<kernel>`, evdev, TPM...).
//
// Every absolute path, and every relative one where libvirt expects a path,
// must be under the storage directory, bar a few read-only exceptions.
fn host_paths_in_storage(document: &Document, scope: &HostScope, domain: Option<&str>) -> Check {
    let storage_dir = scope.storage_dir.as_str();
    for node in checked(document) {
        if free_text_or_own_rule(&node) || in_images_backing_store(&node, scope) {
            continue;
        }
        let element = node.tag_name().name();
        // Guest-side names (`<target dir='/mnt'>`, `<target dev='vda'>`).
        if element != "target" {
            for attribute in node.attributes() {
                let value = attribute.value();
                let expects_path = element == "source"
                    && match attribute.name() {
                        "file" | "dir" | "path" | "socket" | "evdev" => true,
                        // `<interface><source dev='eth0'>` names a NIC, not a file.
                        "dev" => !node.parent().is_some_and(|parent| is(&parent, "interface")),
                        _ => false,
                    };
                if value.starts_with('/') || (expects_path && !value.is_empty()) {
                    allowed_path(&node, attribute.name(), value, storage_dir, domain)?;
                }
            }
        }
        let text = element_text(&node);
        let text = text.trim();
        let expects_path = [
            "kernel", "initrd", "dtb", "loader", "nvram", "backend", "path",
        ]
        .contains(&element);
        if text.starts_with('/')
            || (expects_path
                && !text.is_empty()
                && node.children().all(|child| !child.is_element()))
        {
            allowed_path(&node, "", text, storage_dir, domain)?;
        }
    }
    Ok(())
}

/// A `<source>` of a disk's `<backingStore>` whose file is inside the host's
/// image directory (`images_path`, when it is a directory).
fn in_images_backing_store(node: &Node, scope: &HostScope) -> bool {
    if !is(node, "source")
        || !node
            .ancestors()
            .any(|ancestor| is(&ancestor, "backingStore"))
    {
        return false;
    }
    let Some(images) = clean_absolute(&scope.images) else {
        return false;
    };
    node.attributes()
        .filter(|attribute| !attribute.value().is_empty())
        .all(|attribute| {
            attribute.name() == "file"
                && clean_absolute(attribute.value())
                    .is_some_and(|path| path.starts_with(&images) && path != images)
        })
}

/// Free text libvirt never reads as paths, `<emulator>`, which has its own
/// rule, and an LXC container's `<os><init>` family, which are paths inside
/// the container's own root, not on the host.
fn free_text_or_own_rule(node: &Node) -> bool {
    node.ancestors().any(|ancestor| {
        [
            "description",
            "title",
            "cmdline",
            "emulator",
            "init",
            "initarg",
            "initdir",
        ]
        .iter()
        .any(|name| is(&ancestor, name))
    })
}

/// `value` found in `node` (as attribute `attribute`, or its text when that is
/// empty): inside the storage directory, or one of the read-only exceptions.
fn allowed_path(
    node: &Node,
    attribute: &str,
    value: &str,
    storage_dir: &str,
    domain: Option<&str>,
) -> Check {
    let element = node.tag_name().name();
    let parent = node
        .parent()
        .map(|parent| parent.tag_name().name())
        .unwrap_or("");
    let clean = clean_absolute(value);
    let under = |dir: &str| {
        clean
            .as_deref()
            .is_some_and(|path| path.starts_with(dir) && path != Path::new(dir))
    };
    let exception = match (element, attribute) {
        // libvirt's own cgroup partition for VMs, present in read-back XML.
        ("partition", "") => value == "/machine",
        ("backend", "") => parent == "rng" && RNG_SOURCES.contains(&value),
        ("loader", "") | ("nvram", "template") => under(FIRMWARE_DIR),
        // The guest agent's socket, where libvirt generates it.
        ("source", "path") => {
            parent == "channel"
                && CHANNEL_DIRS.iter().any(|dir| under(dir))
                && clean
                    .as_deref()
                    .and_then(|path| path.file_name())
                    .and_then(|file| file.to_str())
                    .is_some_and(|file| file.ends_with("org.qemu.guest_agent.0"))
        }
        // The variable store libvirt generates for this domain, and only it.
        ("nvram", "") => clean.as_deref().is_some_and(|path| {
            let file = path
                .file_name()
                .and_then(|file| file.to_str())
                .unwrap_or("");
            path.parent() == Some(Path::new(NVRAM_DIR))
                && domain.is_some_and(|name| {
                    file.strip_prefix(name)
                        .is_some_and(|rest| rest.starts_with('_'))
                })
        }),
        _ => false,
    };
    if exception {
        return Ok(());
    }
    let what = if attribute.is_empty() {
        format!("<{element}>")
    } else {
        format!("<{element} {attribute}=…>")
    };
    in_storage(&what, value, storage_dir)
}

/// `path` must be a clean absolute path strictly inside `storage_dir`.
fn in_storage(what: &str, path: &str, storage_dir: &str) -> Check {
    if storage_dir.is_empty() {
        return Err(PluginError::Denied(format!(
            "{what} {} is not allowed: the host has no storage directory",
            shown(path)
        )));
    }
    let Some(dir) = clean_absolute(storage_dir) else {
        return Err(PluginError::Denied(format!(
            "{what} {} is not allowed: the host's storage directory {} is not a clean absolute path",
            shown(path),
            shown(storage_dir)
        )));
    };
    if !path.starts_with('/') {
        return Err(PluginError::Denied(format!(
            "{what} {} is not an absolute path",
            shown(path)
        )));
    }
    let Some(clean) = clean_absolute(path) else {
        return Err(PluginError::Denied(format!(
            "{what} {} contains a \"..\" component",
            shown(path)
        )));
    };
    if clean == dir || !clean.starts_with(&dir) {
        return Err(PluginError::Denied(format!(
            "{what} {} is outside the host's storage directory {}",
            shown(path),
            shown(storage_dir)
        )));
    }
    Ok(())
}

/// The element's own text (its direct text children, joined).
fn element_text(node: &Node) -> String {
    node.children()
        .filter_map(|child| if child.is_text() { child.text() } else { None })
        .collect()
}
