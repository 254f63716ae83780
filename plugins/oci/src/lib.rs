//! openidcs engine for containers on the Docker Engine API: dockerd, or
//! Podman's Docker-compatible service. Containers are the VMs: one per
//! `vm_uuid` (the container's name), made from an image of the host's
//! `system_maps` with the VM's CPU and memory as limits, its NICs as
//! endpoints on Docker networks (`network_nat`, `network_pub`) at the
//! addresses the panel gave, its data disks as named volumes kept across
//! reinstalls. The console is a shell in the container (an exec with a
//! TTY) that the server joins to the browser's terminal.
//!
//! World `http-engine`, grants `http`, `nat`, `proxy`, `log`: it reaches its
//! host's `server_addr` (`unix:///run/docker.sock`, or `https://…` with a
//! pinned certificate) and nothing else; the server adds the credential.

mod convert;

use convert::{LABEL_VM, network_of, vm_info};
use openidcs_sdk::http::Api;
use openidcs_sdk::{
    ConsoleEndpoint, CpuChoice, Engine, EngineInfo, Error, FirstBoot, HostConfig, HostCounters,
    ImageEntry, InstallPlan, Nic, OsImage, PasswordRoute, PortForward, PowerAction, PowerState,
    ProxySite, Result, TerminalRequest, VmCounters, VmInfo, VmSpec, nat, proxy,
};
use serde_json::{Value, json};

/// The API version every path names: Docker 20.10 and Podman 3+ speak it.
const API: &str = "/v1.41";

struct Oci;

/// A container name in a path; the core's names are `[A-Za-z0-9_.-]`.
fn container(vm_uuid: &str) -> Result<&str> {
    let plain = !vm_uuid.is_empty()
        && vm_uuid
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'.' | b'-'));
    if plain {
        Ok(vm_uuid)
    } else {
        Err(Error::Invalid(format!(
            "{vm_uuid:?} is not a container name"
        )))
    }
}

/// An image reference in a path (`debian:12`, `registry/x:tag`).
fn image_ref(image: &str) -> Result<&str> {
    let plain = !image.is_empty()
        && image.bytes().all(|byte| {
            byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'.' | b'-' | b':' | b'/' | b'@')
        });
    if plain {
        Ok(image)
    } else {
        Err(Error::Invalid(format!("{image:?} is not an image name")))
    }
}

fn inspect(api: &Api, vm_uuid: &str) -> Result<Value> {
    api.get(&format!("{API}/containers/{}/json", container(vm_uuid)?))?
        .expect(&[200])?
        .json()
}

fn get(host: &HostConfig, vm_uuid: &str) -> Result<VmInfo> {
    Ok(vm_info(host, &inspect(&Api::of(host)?, vm_uuid)?))
}

/// The containers whose name starts with `prefix`; `ours` keeps only those
/// this engine made.
fn containers(host: &HostConfig, prefix: &str, ours: bool) -> Result<Vec<VmInfo>> {
    let api = Api::of(host)?;
    let filters = if ours {
        json!({ "label": [LABEL_VM] }).to_string()
    } else {
        "{}".to_owned()
    };
    let listed = api
        .get(&format!(
            "{API}/containers/json?all=true&filters={}",
            percent_encode(&filters)
        ))?
        .expect(&[200])?
        .json()?;
    let mut found = Vec::new();
    for item in listed.as_array().into_iter().flatten() {
        let Some(name) = item["Names"]
            .as_array()
            .and_then(|names| names.first())
            .and_then(Value::as_str)
            .map(|name| name.trim_start_matches('/'))
        else {
            continue;
        };
        if !name.starts_with(prefix) || container(name).is_err() {
            continue;
        }
        match inspect(&api, name) {
            Ok(inspected) => found.push(vm_info(host, &inspected)),
            // Removed between the list and the inspect.
            Err(Error::NotFound(_)) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(found)
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (byte as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// The address of the VM's first NIC on `network_nat`: live when it runs,
/// else the one it was given.
fn nat_address(host: &HostConfig, vm_uuid: &str) -> Result<String> {
    let info = get(host, vm_uuid)?;
    info.spec
        .nics
        .iter()
        .find(|nic| nic.kind == openidcs_sdk::NicKind::Nat && !nic.ip4_addr.is_empty())
        .map(|nic| nic.ip4_addr.clone())
        .ok_or_else(|| Error::Conflict(format!("container {vm_uuid} has no NAT address")))
}

/// `POST /networks/<the NIC's network>/<action>` for the container, with
/// `body`'s fields beside `Container`.
fn network_call(
    host: &HostConfig,
    vm_uuid: &str,
    nic: &Nic,
    action: &str,
    mut body: Value,
    ok: &[u16],
) -> Result<()> {
    let network = network_of(host, nic.kind)?;
    body["Container"] = json!(container(vm_uuid)?);
    Api::of(host)?
        .post_json(&format!("{API}/networks/{network}/{action}"), &body)?
        .expect(ok)?;
    Ok(())
}

/// The spec's speeds, policed in the server's nftables table on the
/// container's addresses (the Docker API has no bandwidth limits), or the
/// limit lifted when it has none. A server without `[nat]` cannot police:
/// a warning says the speeds are not enforced.
fn police(spec: &VmSpec) {
    let limit = openidcs_sdk::rate_limit_for(
        &spec.vm_uuid,
        &spec.nics,
        u64::from(spec.speed_up) * 1000,
        u64::from(spec.speed_down) * 1000,
    );
    let outcome = match &limit {
        Some(limit) => nat::set_rate_limit(limit),
        None => nat::remove_rate_limit(&spec.vm_uuid),
    };
    match outcome {
        Ok(()) => {}
        Err(Error::Unsupported(_)) if limit.is_none() => {}
        Err(error) => openidcs_sdk::log_warn(&format!(
            "container {}: its speeds (up {} Mbit/s, down {} Mbit/s) are not enforced: {}",
            spec.vm_uuid,
            spec.speed_up,
            spec.speed_down,
            openidcs_sdk::message_of(&error)
        )),
    }
}

/// The container's name, after checking that it runs (`doing` says what
/// needs it).
fn running<'a>(api: &Api, host: &HostConfig, vm_uuid: &'a str, doing: &str) -> Result<&'a str> {
    let name = container(vm_uuid)?;
    if vm_info(host, &inspect(api, name)?).power != PowerState::Running {
        return Err(Error::Conflict(format!(
            "container {name} is not running; start it to {doing}"
        )));
    }
    Ok(name)
}

/// Run `command` in the running container; answers its exit code.
fn exec(api: &Api, vm_uuid: &str, command: &[&str]) -> Result<i64> {
    let created = api
        .post_json(
            &format!("{API}/containers/{}/exec", container(vm_uuid)?),
            &json!({ "Cmd": command, "AttachStdout": true, "AttachStderr": true }),
        )?
        .expect(&[201])?
        .json()?;
    let id = created["Id"].as_str().unwrap_or_default().to_owned();
    // Without an upgrade the answer's body is the output, sent when the
    // command ends.
    api.post_json(
        &format!("{API}/exec/{id}/start"),
        &json!({ "Detach": false, "Tty": false }),
    )?
    .expect(&[200])?;
    let state = api
        .get(&format!("{API}/exec/{id}/json"))?
        .expect(&[200])?
        .json()?;
    Ok(state["ExitCode"].as_i64().unwrap_or(-1))
}

impl Engine for Oci {
    fn describe() -> EngineInfo {
        EngineInfo {
            name: "oci".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            description: "containers on the Docker Engine API (dockerd, Podman)".to_owned(),
        }
    }

    fn host_status(host: HostConfig) -> Result<HostCounters> {
        let info = Api::of(&host)?
            .get(&format!("{API}/info"))?
            .expect(&[200])?
            .json()?;
        let count = |field: &str| info[field].as_u64().unwrap_or(0) as u32;
        // The API tells no host CPU times or memory use: the core shows them
        // as unknown (zero).
        Ok(HostCounters {
            hostname: info["Name"].as_str().unwrap_or_default().to_owned(),
            hypervisor: "docker".to_owned(),
            hypervisor_version: info["ServerVersion"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            cpu_total: count("NCPU"),
            cpu_busy_ns: 0,
            cpu_idle_ns: 0,
            mem_total_mb: info["MemTotal"].as_u64().unwrap_or(0) >> 20,
            mem_used_mb: 0,
            hdd_total_mb: 0,
            hdd_used_mb: 0,
            vm_count: count("Containers"),
            vm_running: count("ContainersRunning"),
        })
    }

    fn vm_list(host: HostConfig) -> Result<Vec<VmInfo>> {
        let prefix = host.filter_name.clone();
        containers(&host, &prefix, true)
    }

    fn vm_get(host: HostConfig, vm_uuid: String) -> Result<VmInfo> {
        get(&host, &vm_uuid)
    }

    /// Nothing is made yet: a container needs its image, which the core's
    /// `vm-install` brings right after.
    fn vm_create(host: HostConfig, spec: VmSpec) -> Result<VmInfo> {
        container(&spec.vm_uuid)?;
        if spec.os_name.is_empty() {
            return Err(Error::Invalid(
                "os_name: a container needs an image; pick one of the host's system_maps"
                    .to_owned(),
            ));
        }
        for nic in &spec.nics {
            network_of(&host, nic.kind)?;
        }
        match inspect(&Api::of(&host)?, &spec.vm_uuid) {
            Ok(_) => Err(Error::Conflict(format!(
                "a container named {} exists",
                spec.vm_uuid
            ))),
            Err(Error::NotFound(_)) => Ok(VmInfo {
                vm_uuid: spec.vm_uuid.clone(),
                domain_uuid: String::new(),
                power: PowerState::Stopped,
                spec,
            }),
            Err(error) => Err(error),
        }
    }

    /// CPU and memory change in place (live); NICs through `ip-apply`.
    fn vm_update(host: HostConfig, spec: VmSpec) -> Result<VmInfo> {
        let api = Api::of(&host)?;
        let name = container(&spec.vm_uuid)?;
        match api
            .post_json(
                &format!("{API}/containers/{name}/update"),
                &Value::Object(convert::resources(&spec)),
            )?
            .expect(&[200])
        {
            // Not installed yet (a create whose install failed).
            Err(Error::NotFound(_)) => Ok(VmInfo {
                vm_uuid: spec.vm_uuid.clone(),
                domain_uuid: String::new(),
                power: PowerState::Stopped,
                spec,
            }),
            Err(error) => Err(error),
            Ok(_) => {
                police(&spec);
                get(&host, name)
            }
        }
    }

    fn vm_delete(host: HostConfig, vm_uuid: String) -> Result<()> {
        let api = Api::of(&host)?;
        let name = container(&vm_uuid)?;
        let disks = match inspect(&api, name) {
            Ok(inspected) => vm_info(&host, &inspected).spec.disks,
            Err(Error::NotFound(_)) => Vec::new(),
            Err(error) => return Err(error),
        };
        api.delete(&format!("{API}/containers/{name}?force=true"))?
            .expect(&[204, 404])?;
        match nat::remove_rate_limit(name) {
            Ok(()) | Err(Error::Unsupported(_)) => {}
            Err(error) => return Err(error),
        }
        for disk in disks {
            api.delete(&format!(
                "{API}/volumes/{}",
                convert::volume_name(name, &disk.name)
            ))?
            .expect(&[204, 404])?;
        }
        Ok(())
    }

    fn vm_power(host: HostConfig, vm_uuid: String, action: PowerAction) -> Result<PowerState> {
        let api = Api::of(&host)?;
        let name = container(&vm_uuid)?;
        let now = vm_info(&host, &inspect(&api, name)?).power;
        let path = match (action, now) {
            // Start on a paused container resumes it, as on a VM.
            (PowerAction::Start | PowerAction::Resume, PowerState::Paused) => "unpause",
            (PowerAction::Start, _) => "start",
            (PowerAction::Stop, _) => "stop?t=20",
            (PowerAction::HardStop, _) => "kill",
            (PowerAction::Reset, _) => "restart?t=20",
            (PowerAction::HardReset, _) => "restart?t=0",
            (PowerAction::Pause, _) => "pause",
            (PowerAction::Resume, _) => "unpause",
        };
        // 304: already in that state.
        api.post_json(&format!("{API}/containers/{name}/{path}"), &Value::Null)?
            .expect(&[204, 304])?;
        Ok(vm_info(&host, &inspect(&api, name)?).power)
    }

    fn vm_usage(host: HostConfig) -> Result<Vec<VmCounters>> {
        let api = Api::of(&host)?;
        let mut all = Vec::new();
        for info in containers(&host, &host.filter_name, true)? {
            let stats = if info.power == PowerState::Running {
                api.get(&format!(
                    "{API}/containers/{}/stats?stream=false&one-shot=true",
                    info.vm_uuid
                ))?
                .expect(&[200])?
                .json()?
            } else {
                Value::Null
            };
            all.push(convert::counters(&info, &stats));
        }
        Ok(all)
    }

    fn vm_console(host: HostConfig, vm_uuid: String) -> Result<ConsoleEndpoint> {
        get(&host, &vm_uuid)?;
        Ok(ConsoleEndpoint {
            protocol: "terminal".to_owned(),
            host: String::new(),
            port: 0,
            password: String::new(),
        })
    }

    /// A shell with a TTY in the running container; the server starts it
    /// with an upgrade to a raw stream.
    fn vm_terminal(host: HostConfig, vm_uuid: String) -> Result<TerminalRequest> {
        let api = Api::of(&host)?;
        let name = running(&api, &host, &vm_uuid, "open its console")?;
        let created = api
            .post_json(
                &format!("{API}/containers/{name}/exec"),
                &json!({
                    "Cmd": ["/bin/sh"],
                    "AttachStdin": true, "AttachStdout": true, "AttachStderr": true,
                    "Tty": true, "Env": ["TERM=xterm-256color"],
                }),
            )?
            .expect(&[201])?
            .json()?;
        let id = created["Id"].as_str().unwrap_or_default();
        if id.is_empty() || !id.bytes().all(|byte| byte.is_ascii_hexdigit()) {
            return Err(Error::Failed(format!("the API made no exec: {created}")));
        }
        Ok(TerminalRequest {
            method: "POST".to_owned(),
            path: format!("{API}/exec/{id}/start"),
            body: json!({ "Detach": false, "Tty": true }).to_string(),
            resize_path: format!("{API}/exec/{id}/resize"),
        })
    }

    fn vm_scan(host: HostConfig, prefix: String) -> Result<Vec<VmInfo>> {
        containers(&host, &prefix, false)
    }

    fn nat_apply(host: HostConfig, vm_uuid: String, forward: PortForward) -> Result<PortForward> {
        let mut forward = forward;
        if forward.target_addr.is_empty() {
            forward.target_addr = nat_address(&host, &vm_uuid)?;
        }
        nat::add_rule(&forward)?;
        Ok(forward)
    }

    fn nat_remove(_host: HostConfig, _vm_uuid: String, forward: PortForward) -> Result<()> {
        nat::remove_rule(forward.id)
    }

    /// Connect the container to the NIC's network at its address.
    fn ip_apply(host: HostConfig, vm_uuid: String, nic: Nic) -> Result<Nic> {
        let endpoint = json!({ "EndpointConfig": convert::endpoint(&nic) });
        network_call(&host, &vm_uuid, &nic, "connect", endpoint, &[200])?;
        Ok(nic)
    }

    fn ip_remove(host: HostConfig, vm_uuid: String, nic: Nic) -> Result<()> {
        network_call(
            &host,
            &vm_uuid,
            &nic,
            "disconnect",
            json!({ "Force": true }),
            &[200, 404],
        )
    }

    fn proxy_apply(host: HostConfig, vm_uuid: String, site: ProxySite) -> Result<ProxySite> {
        let mut site = site;
        if site.backend_addr.is_empty() {
            site.backend_addr = nat_address(&host, &vm_uuid)?;
        }
        proxy::put_site(&site)?;
        Ok(site)
    }

    fn proxy_remove(_host: HostConfig, _vm_uuid: String, site: ProxySite) -> Result<()> {
        proxy::remove_site(site.id)
    }

    fn os_images(host: HostConfig, catalogue: Vec<ImageEntry>) -> Result<Vec<OsImage>> {
        let api = Api::of(&host)?;
        let mut images = Vec::new();
        for entry in catalogue {
            let answer = api.get(&format!("{API}/images/{}/json", image_ref(&entry.file)?))?;
            if answer.status == 404 {
                openidcs_sdk::log_warn(&format!(
                    "image {} of catalogue entry {} is not on host {}",
                    entry.file, entry.name, host.name
                ));
                continue;
            }
            let image = answer.expect(&[200])?.json()?;
            images.push(OsImage {
                name: entry.name,
                file: entry.file,
                format: "oci".to_owned(),
                size_mb: image["Size"].as_u64().unwrap_or(0).div_ceil(1 << 20),
                min_disk_mb: entry.min_disk_mb,
            });
        }
        Ok(images)
    }

    /// A new container from the image (the old one, stopped, is removed;
    /// its data volumes stay).
    fn vm_install(host: HostConfig, spec: VmSpec, plan: InstallPlan) -> Result<VmInfo> {
        let api = Api::of(&host)?;
        let name = container(&spec.vm_uuid)?;
        let image = image_ref(&plan.image.file)?;
        match api
            .get(&format!("{API}/images/{image}/json"))?
            .expect(&[200])
        {
            Err(Error::NotFound(_)) => {
                return Err(Error::NotFound(format!(
                    "image {image} is not on host {} (load or import it there)",
                    host.name
                )));
            }
            Err(error) => return Err(error),
            Ok(_) => {}
        }
        match inspect(&api, name) {
            Ok(inspected) => {
                if vm_info(&host, &inspected).power != PowerState::Stopped {
                    return Err(Error::Conflict(format!("container {name} is not stopped")));
                }
                api.delete(&format!("{API}/containers/{name}"))?
                    .expect(&[204, 404])?;
            }
            Err(Error::NotFound(_)) => {}
            Err(error) => return Err(error),
        }
        let body = convert::create_body(&host, &spec, image, &plan.first_boot.hostname)?;
        api.post_json(&format!("{API}/containers/create?name={name}"), &body)?
            .expect(&[201])?;
        for nic in spec.nics.iter().skip(1) {
            Self::ip_apply(host.clone(), spec.vm_uuid.clone(), nic.clone())?;
        }
        police(&spec);
        get(&host, name)
    }

    /// `chpasswd -e` inside the running container (the image must have it).
    fn vm_password(
        host: HostConfig,
        vm_uuid: String,
        user: String,
        boot: FirstBoot,
    ) -> Result<PasswordRoute> {
        let api = Api::of(&host)?;
        let name = running(&api, &host, &vm_uuid, "set a password")?;
        // Both go into a shell's single quotes: no quote may be in them.
        let safe = |text: &str| {
            !text.is_empty()
                && text
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || b"$./_-".contains(&byte))
        };
        if !safe(&user) || !safe(&boot.password_hash) {
            return Err(Error::Invalid(
                "the user or the password hash has characters a shell would read".to_owned(),
            ));
        }
        let line = format!("echo '{user}:{}' | chpasswd -e", boot.password_hash);
        match exec(&api, name, &["/bin/sh", "-c", &line])? {
            0 => Ok(PasswordRoute::GuestAgent),
            code => Err(Error::Failed(format!(
                "chpasswd in container {name} exited with {code}"
            ))),
        }
    }

    /// Containers run on the host's CPU as it is.
    fn cpu_probe(_host: HostConfig, wanted: Option<CpuChoice>) -> Result<CpuChoice> {
        Ok(wanted.unwrap_or(CpuChoice {
            mode: "host-passthrough".to_owned(),
            model: String::new(),
            disabled_features: Vec::new(),
        }))
    }
}

openidcs_sdk::export_engine!(Oci);
