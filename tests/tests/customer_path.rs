//! The customer path on a real hypervisor: a VM created from the Debian test
//! image on `qemu:///system` with a root password and a bigger disk, a NAT
//! forward of a public port to its SSH, and a client in a network namespace
//! of its own that logs in with the password. Then the password changed in
//! the running guest, and a reinstall with a new password that wipes the
//! system disk and keeps the data disk.
//!
//! Needs root, the libvirt daemons (`make test` starts them) and /dev/kvm.
//! Where KVM cannot run a Linux guest (the software `kvm_pvm` module: QEMU
//! starts, the kernel hangs), the host is set to software emulation
//! (`virt_type = "qemu"`) and the test says so: slower, the same path.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use openidcs_tests::{
    DomainCleanup, Server, kernel_can_shape, plugin_toml, qemu_system_skip_reason, root, virsh,
};
use serde_json::{Value, json};

const VM: &str = "oidcs-test-cust1";
const SUBNET: &str = "10.233.7";
const PUBLIC: &str = "10.232.7.1";
const CLIENT: &str = "10.232.7.2";
const SSH_PORT: u16 = 40022;

/// Everything the test made outside the server, removed on drop.
struct Fixture {
    id: String,
    dir: PathBuf,
    netns: String,
    veth: String,
}

impl Fixture {
    fn images_pool(&self) -> String {
        format!("oidcs-test-images-{}", self.id)
    }
    fn vms_pool(&self) -> String {
        format!("oidcs-test-vms-{}", self.id)
    }
    fn network(&self) -> String {
        format!("oidcs-test-net-{}", self.id)
    }
    fn images_dir(&self) -> PathBuf {
        self.dir.join("images")
    }
    fn vms_dir(&self) -> PathBuf {
        self.dir.join("vms")
    }

    fn create(image: &Path) -> Fixture {
        let id = format!("{:x}", std::process::id() & 0xffff);
        let fixture = Fixture {
            dir: PathBuf::from(format!("/var/lib/openidcs-test-{id}")),
            netns: format!("oidcs-cl-{id}"),
            veth: format!("oidcsv{id}"),
            id,
        };
        for dir in [fixture.images_dir(), fixture.vms_dir()] {
            std::fs::create_dir_all(&dir).expect("test directories");
        }
        let linked = fixture.images_dir().join("debian-12.qcow2");
        if std::fs::hard_link(image, &linked).is_err() {
            std::fs::copy(image, &linked).expect("the image in the images pool");
        }
        for (pool, dir) in [
            (fixture.images_pool(), fixture.images_dir()),
            (fixture.vms_pool(), fixture.vms_dir()),
        ] {
            let dir = dir.display().to_string();
            let (created, output) = virsh(&["pool-create-as", &pool, "dir", "--target", &dir]);
            assert!(created, "pool {pool}: {output}");
        }
        // A routed network: libvirt lets traffic in to it (a NAT network
        // rejects new connections from outside, DNATed ones included).
        let network_xml = fixture.dir.join("network.xml");
        std::fs::write(
            &network_xml,
            format!(
                "<network><name>{}</name><forward mode='route'/>\
                 <bridge name='oidcsbr{}' stp='off'/>\
                 <ip address='{SUBNET}.1' netmask='255.255.255.0'>\
                 <dhcp><range start='{SUBNET}.100' end='{SUBNET}.200'/></dhcp></ip></network>",
                fixture.network(),
                fixture.id
            ),
        )
        .expect("network XML");
        let (created, output) = virsh(&["net-create", &network_xml.display().to_string()]);
        assert!(created, "network: {output}");
        // The customer's side: a namespace behind a veth pair whose host end
        // is the host's public address.
        let peer = format!("oidcsc{}", fixture.id);
        for command in [
            vec!["ip", "netns", "add", &fixture.netns],
            vec![
                "ip",
                "link",
                "add",
                &fixture.veth,
                "type",
                "veth",
                "peer",
                "name",
                &peer,
            ],
            vec!["ip", "link", "set", &peer, "netns", &fixture.netns],
            vec![
                "ip",
                "addr",
                "add",
                &format!("{PUBLIC}/24"),
                "dev",
                &fixture.veth,
            ],
            vec!["ip", "link", "set", &fixture.veth, "up"],
            vec![
                "ip",
                "-n",
                &fixture.netns,
                "addr",
                "add",
                &format!("{CLIENT}/24"),
                "dev",
                &peer,
            ],
            vec!["ip", "-n", &fixture.netns, "link", "set", &peer, "up"],
            vec!["ip", "-n", &fixture.netns, "link", "set", "lo", "up"],
            vec![
                "ip",
                "-n",
                &fixture.netns,
                "route",
                "add",
                "default",
                "via",
                PUBLIC,
            ],
        ] {
            let status = Command::new(command[0])
                .args(&command[1..])
                .status()
                .expect("ip");
            assert!(status.success(), "{command:?}");
        }
        fixture
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = virsh(&["destroy", VM]);
        let _ = virsh(&["undefine", VM]);
        let _ = virsh(&["net-destroy", &self.network()]);
        for pool in [self.images_pool(), self.vms_pool()] {
            let _ = virsh(&["pool-destroy", &pool]);
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.veth])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Why KVM cannot boot a Linux guest here, if it cannot: only the
/// software `kvm_pvm` module provides /dev/kvm (QEMU starts; a stock kernel
/// hangs in early boot).
fn kvm_cannot_boot_linux() -> Option<String> {
    let hardware = ["kvm_intel", "kvm_amd"]
        .iter()
        .any(|module| Path::new("/sys/module").join(module).exists());
    if hardware {
        return None;
    }
    let provider = if Path::new("/sys/module/kvm_pvm").exists() {
        "the kvm_pvm module (software virtualisation)"
    } else {
        "no kvm_intel or kvm_amd module"
    };
    Some(format!(
        "/dev/kvm comes from {provider}; the host runs the VM under software emulation (virt_type = \"qemu\")"
    ))
}

/// The test image (built from Debian packages and cached under target/).
fn test_image() -> PathBuf {
    let output = Command::new(root().join("tests/scripts/debian-image.sh"))
        .arg(root().join("target/test-image"))
        .output()
        .expect("debian-image.sh");
    assert!(
        output.status.success(),
        "building the test image failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
}

/// `ssh root@<public>:<SSH_PORT> command` from the client namespace with
/// `password` (and no key, no host key check).
fn ssh_command(netns: &str, password: &str, command: &str) -> Command {
    let mut ssh = Command::new("ip");
    ssh.args(["netns", "exec", netns, "sshpass", "-p", password, "ssh"])
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "ConnectTimeout=5",
            "-o",
            "PreferredAuthentications=password",
            "-o",
            "PubkeyAuthentication=no",
            "-o",
            "LogLevel=ERROR",
            "-p",
            &SSH_PORT.to_string(),
            &format!("root@{PUBLIC}"),
            command,
        ]);
    ssh
}

/// Run `command` on the VM over SSH from the client namespace with
/// `password`: `Ok(output)` or `Err(why)`.
fn ssh(netns: &str, password: &str, command: &str) -> Result<String, String> {
    let output = ssh_command(netns, password, command)
        .output()
        .map_err(|error| error.to_string())?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "exit {:?}: {} {}",
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).trim(),
            String::from_utf8_lossy(&output.stdout).trim()
        ))
    }
}

/// SSH with `password` until it answers, within `limit`; answers the
/// output and how long it took.
fn ssh_when_up(netns: &str, password: &str, command: &str, limit: Duration) -> (String, Duration) {
    let started = Instant::now();
    loop {
        match ssh(netns, password, command) {
            Ok(output) => return (output, started.elapsed()),
            Err(why) if started.elapsed() > limit => {
                let (_, console) = virsh(&["domstate", VM]);
                panic!(
                    "no SSH with the password after {limit:?}: {why} (domain {})",
                    console.trim()
                );
            }
            Err(_) => std::thread::sleep(Duration::from_secs(3)),
        }
    }
}

/// Mbit/s of `bytes` sent by the VM to the client over SSH, counted after
/// the first `skip` bytes (a policer's bucket lets its first second of the
/// rate through at once).
fn transfer_from_vm_mbit(netns: &str, password: &str, bytes: u64, skip: u64) -> f64 {
    let mut child = ssh_command(netns, password, &format!("head -c {bytes} /dev/zero"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("ssh");
    let mut stdout = child.stdout.take().expect("piped");
    let mut buffer = vec![0u8; 1 << 16];
    let (mut got, mut mark) = (0u64, None);
    loop {
        let read = std::io::Read::read(&mut stdout, &mut buffer).expect("reading the transfer");
        if read == 0 {
            break;
        }
        got += read as u64;
        if mark.is_none() && got >= skip {
            mark = Some((got, Instant::now()));
        }
    }
    let status = child.wait().expect("ssh ends");
    assert!(
        status.success() && got == bytes,
        "the whole transfer arrived: {got} of {bytes}"
    );
    let (from, at) = mark.expect("past the skipped part");
    (got - from) as f64 * 8.0 / at.elapsed().as_secs_f64() / 1e6
}

/// The server's table in this (the machine's own) namespace, deleted on
/// drop when it was not there before the test: a server already running
/// here keeps its table.
struct ServerTable {
    existed: bool,
}

impl ServerTable {
    fn note() -> ServerTable {
        ServerTable {
            existed: Command::new("nft")
                .args(["list", "table", "inet", "openidcs"])
                .output()
                .is_ok_and(|output| output.status.success()),
        }
    }
}

impl Drop for ServerTable {
    fn drop(&mut self) {
        if !self.existed {
            let _ = Command::new("nft")
                .args(["delete", "table", "inet", "openidcs"])
                .status();
        }
    }
}

/// `nft list table inet openidcs`: the server's table in this namespace.
fn server_table() -> String {
    let output = Command::new("nft")
        .args(["list", "table", "inet", "openidcs"])
        .output()
        .expect("nft");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The packets the police rule for `addr` dropped.
fn policed_drops(addr: &str) -> u64 {
    server_table()
        .lines()
        .find(|line| line.contains(&format!("saddr {addr} limit rate over")))
        .and_then(|line| line.split("counter packets ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|packets| packets.parse().ok())
        .unwrap_or(0)
}

/// The running domain's XML once it contains `part` (a task is changing it).
fn wait_for_xml(vm: &str, part: &str) -> String {
    let started = Instant::now();
    loop {
        let (_, xml) = virsh(&["dumpxml", vm]);
        if xml.contains(part) {
            return xml;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the domain never got {part}: {xml}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The server's table once it contains `part` (a task is changing it).
fn wait_for_table(part: &str) -> String {
    let started = Instant::now();
    loop {
        let table = server_table();
        if table.contains(part) {
            return table;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the table never got {part}: {table}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The VM's power state as the API reports it.
async fn power_status(server: &Server) -> String {
    let detail = server
        .ok("GET", &format!("/api/client/detail/kvm/{VM}"), None)
        .await;
    detail["power_status"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// sshpass exits 5 for a refused password.
fn refused(netns: &str, password: &str) -> bool {
    matches!(ssh(netns, password, "true"), Err(why) if why.starts_with("exit Some(5)"))
}

/// The create body of the test's VM: Debian from the catalogue, a 4 GiB
/// system disk (the image is 2 GiB), a NAT NIC, a 64 MB data disk.
fn create_body(password: &str) -> Value {
    json!({
        "vm_uuid": VM, "os_name": "debian12", "os_pass": password,
        "cpu_num": 1, "mem_num": 1024, "hdd_num": 4096,
        "nic_all": { "nic0": { "nic_type": "nat" } },
        "hdd_all": { "data": { "hdd_size": 64 } },
    })
}

/// Start the VM and forward the public SSH port to its port 22.
async fn start_and_forward(server: &Server) {
    server
        .ok(
            "POST",
            &format!("/api/client/powers/kvm/{VM}"),
            Some(json!({ "action": "start" })),
        )
        .await;
    server
        .ok(
            "POST",
            &format!("/api/client/natadd/kvm/{VM}"),
            Some(json!({ "protocol": "tcp", "wan_port": SSH_PORT, "lan_port": 22 })),
        )
        .await;
}

#[tokio::test]
async fn create_start_forward_ssh_password_reinstall() {
    if let Some(reason) = qemu_system_skip_reason() {
        println!("SKIPPED create_start_forward_ssh_password_reinstall: {reason}");
        assert!(
            std::env::var("CI").is_err(),
            "CI runs as root with libvirtd: {reason}"
        );
        return;
    }
    if !Path::new("/dev/kvm").exists() {
        println!("SKIPPED create_start_forward_ssh_password_reinstall: no /dev/kvm");
        return;
    }
    let software = kvm_cannot_boot_linux();
    if let Some(reason) = &software {
        println!("NOTE: {reason}");
    }
    // Boot to SSH: seconds under KVM, a minute or two under emulation.
    let boot_limit = Duration::from_secs(if software.is_some() { 420 } else { 180 });

    let image = test_image();
    let fixture = Fixture::create(&image);
    let _cleanup = DomainCleanup(VM);
    // Dropped after the server: the table goes if this test made it.
    let _table = ServerTable::note();
    let server = Server::start(&format!(
        "[nat]\n\n{}",
        plugin_toml(
            "libvirt",
            "openidcs_plugin_libvirt",
            &["libvirt", "nat", "proxy", "log"],
            "timeout_ms = 120000",
        )
    ));
    let mut extend_data = serde_json::Map::new();
    if software.is_some() {
        extend_data.insert("virt_type".into(), "qemu".into());
    }
    server
        .ok(
            "POST",
            "/api/server/create",
            Some(json!({ "name": "kvm", "type": "libvirt", "config": {
                "server_addr": "qemu:///system", "filter_name": "oidcs-test-",
                "system_path": fixture.vms_dir(), "images_path": fixture.images_dir(),
                "network_nat": fixture.network(),
                "ports_start": 40000, "ports_close": 40100, "public_addr": [PUBLIC],
                "ipaddr_maps": { "lan": {
                    "vers": "ipv4", "type": "nat", "gate": format!("{SUBNET}.1"),
                    "mask": "255.255.255.0", "from": format!("{SUBNET}.10"), "nums": 10,
                    "dnss": [format!("{SUBNET}.1")] } },
                "system_maps": { "debian12": ["debian-12.qcow2", 2048] },
                "extend_data": extend_data,
            } })),
        )
        .await;
    let images = server.ok("GET", "/api/client/os-images/kvm", None).await;
    assert_eq!(images[0]["name"], "debian12", "{images}");
    assert_eq!(images[0]["format"], "qcow2", "{images}");

    // An unknown image is refused before anything is made.
    let (status, refusal) = server
        .call(
            "POST",
            "/api/client/create/kvm",
            Some(json!({ "vm_uuid": VM, "os_name": "win2022" })),
        )
        .await;
    assert_eq!(status, 400, "{refusal}");
    assert!(
        refusal["msg"]
            .as_str()
            .unwrap_or("")
            .contains("choices: debian12"),
        "{refusal}"
    );

    let started = Instant::now();
    let created = server
        .ok(
            "POST",
            "/api/client/create/kvm",
            Some(create_body("First-Pw-1")),
        )
        .await;
    assert_eq!(created["config"]["os_pass"], "******", "{created}");
    let address = created["config"]["nic_all"]["nic0"]["ip4_addr"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(address, format!("{SUBNET}.10"), "{created}");
    let stored = std::fs::read(server.data_dir().join("openidcs.db")).unwrap_or_default();
    assert!(
        !String::from_utf8_lossy(&stored).contains("First-Pw-1"),
        "the password is not in the database"
    );
    start_and_forward(&server).await;

    // The console URL a billing module fetches (the original's `remote`).
    let console = server
        .ok("GET", &format!("/api/client/remote/kvm/{VM}"), None)
        .await;
    assert!(
        console["url"]
            .as_str()
            .is_some_and(|url| url.contains("/console")),
        "{console}"
    );
    let (output, _) = ssh_when_up(
        &fixture.netns,
        "First-Pw-1",
        "hostname; ip -4 -o addr; df -m / | tail -1",
        boot_limit,
    );
    let create_to_ssh = started.elapsed();
    println!(
        "create → SSH answering: {:.1} s",
        create_to_ssh.as_secs_f64()
    );
    assert!(
        output.lines().next() == Some(VM),
        "hostname is the VM name: {output}"
    );
    assert!(output.contains(&format!("inet {address}/24")), "{output}");
    let root_mb: u64 = output
        .lines()
        .last()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|size| size.parse().ok())
        .unwrap_or(0);
    assert!(
        root_mb > 3500,
        "the root file system grew from the image's 2 GiB towards hdd_num 4096 MB: {output}"
    );
    // A file on the system disk (gone after a reinstall) and one on the
    // data disk (kept).
    ssh(
        &fixture.netns,
        "First-Pw-1",
        "echo before > /root/marker && \
         data=$(for d in /dev/vd?; do [ $(blockdev --getsize64 $d) = 67108864 ] && echo $d; done; true) && \
         [ -n \"$data\" ] && mkfs.ext4 -q -F $data && mkdir -p /mnt/data && mount $data /mnt/data && \
         echo kept > /mnt/data/file && umount /mnt/data && sync",
    )
    .expect("writing the marker files");

    // The password of the running guest, through its agent (which may
    // start a little after SSH).
    let agent_started = Instant::now();
    loop {
        let answer = server
            .ok(
                "POST",
                &format!("/api/client/password/kvm/{VM}"),
                Some(json!({ "password": "Second-Pw-2" })),
            )
            .await;
        if answer["applied"] == "guest-agent" {
            break;
        }
        assert!(
            agent_started.elapsed() < Duration::from_secs(120),
            "the guest agent never took the password: {answer}"
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    ssh(&fixture.netns, "Second-Pw-2", "true").expect("the new password works at once");
    assert!(
        refused(&fixture.netns, "First-Pw-1"),
        "the old password is refused"
    );

    // Bandwidth and the traffic quota. libvirt's <bandwidth> is tc (htb,
    // sfq, an ingress police filter); a kernel without them cannot shape,
    // and there the server polices the VM's speeds in its nftables table.
    let shaping = kernel_can_shape();
    if let Err(reason) = &shaping {
        println!("NOTE: no bandwidth shaping on this kernel ({reason}); the server polices");
    }
    let unlimited = transfer_from_vm_mbit(&fixture.netns, "Second-Pw-2", 6_000_000, 1_000_000);
    // speed_u caps what the VM sends, changed on the running VM.
    server
        .ok(
            "PUT",
            &format!("/api/client/update/kvm/{VM}"),
            Some(json!({ "speed_u": 10 })),
        )
        .await;
    if shaping.is_ok() {
        let (_, live) = virsh(&["dumpxml", VM]);
        assert!(
            live.contains("<outbound average='1250'"),
            "10 Mbit/s out is 1250 KB/s on the running VM's NIC: {live}"
        );
    } else {
        let table = server_table();
        assert!(
            table.contains(&format!(
                "ip saddr {address} limit rate over 1250000 bytes/second"
            )),
            "10 Mbit/s out is 1 250 000 B/s from the VM's address: {table}"
        );
    }
    let megabits = transfer_from_vm_mbit(&fixture.netns, "Second-Pw-2", 12_000_000, 3_000_000);
    println!(
        "a transfer from the VM: {unlimited:.1} Mbit/s unlimited, {megabits:.1} Mbit/s with speed_u = 10"
    );
    assert!(
        megabits <= 11.0,
        "at most ~10 Mbit/s, measured {megabits:.1}"
    );
    if shaping.is_err() && unlimited > 15.0 {
        assert!(
            policed_drops(&address) > 0,
            "the policer dropped the excess: {}",
            server_table()
        );
    }

    // Over the traffic quota: throttled to [traffic] over_quota_mbps (1) in
    // the running domain or the server's table; the panel's reset lifts it.
    server
        .ok(
            "PUT",
            &format!("/api/client/update/kvm/{VM}"),
            Some(json!({ "flu_num": 1 })),
        )
        .await;
    let detail = server
        .ok("GET", &format!("/api/client/detail/kvm/{VM}"), None)
        .await;
    let key = detail["upload_key"].as_str().unwrap_or_default().to_owned();
    let mac = detail["config"]["nic_all"]["nic0"]["mac_addr"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let (status, uploaded) = server
        .call_as(
            None,
            "POST",
            &format!("/api/client/upload?nic={mac}&key={key}"),
            Some(json!({ "ac_status": "running", "flu_usage": 2.0 })),
        )
        .await;
    assert_eq!(status, 200, "{uploaded}");
    if shaping.is_ok() {
        let throttled = wait_for_xml(VM, "<inbound average='125'");
        assert!(
            throttled.contains("<outbound average='125'"),
            "1 Mbit/s each way: {throttled}"
        );
    } else {
        let throttled = wait_for_table(&format!(
            "daddr {address} limit rate over 125000 bytes/second"
        ));
        assert!(
            throttled.contains(&format!(
                "saddr {address} limit rate over 125000 bytes/second"
            )),
            "1 Mbit/s each way: {throttled}"
        );
    }
    assert_eq!(
        power_status(&server).await,
        "running",
        "throttled, not paused"
    );
    server
        .ok("POST", &format!("/api/traffic/reset?hostname={VM}"), None)
        .await;
    if shaping.is_ok() {
        let lifted = wait_for_xml(VM, "<outbound average='1250'");
        assert!(!lifted.contains("average='125'"), "{lifted}");
    } else {
        let lifted = wait_for_table(&format!(
            "saddr {address} limit rate over 1250000 bytes/second"
        ));
        assert!(!lifted.contains("125000 bytes"), "{lifted}");
    }
    server
        .ok(
            "PUT",
            &format!("/api/client/update/kvm/{VM}"),
            Some(json!({ "flu_num": 0 })),
        )
        .await;

    // Reinstall with a new password: the system disk is new, data stays.
    let reinstall_started = Instant::now();
    let reinstalled = server
        .ok(
            "PUT",
            &format!("/api/client/update/kvm/{VM}?reinstall=true"),
            Some(json!({ "os_pass": "Third-Pw-3" })),
        )
        .await;
    assert_eq!(reinstalled["power_status"], "running", "{reinstalled}");
    let (output, _) = ssh_when_up(
        &fixture.netns,
        "Third-Pw-3",
        "cat /root/marker 2>/dev/null || echo no-marker; \
         data=$(for d in /dev/vd?; do [ $(blockdev --getsize64 $d) = 67108864 ] && echo $d; done; true); \
         mkdir -p /mnt/data && mount $data /mnt/data && cat /mnt/data/file",
        boot_limit,
    );
    let reinstall_to_ssh = reinstall_started.elapsed();
    println!(
        "reinstall → SSH answering: {:.1} s",
        reinstall_to_ssh.as_secs_f64()
    );
    assert!(
        output.contains("no-marker"),
        "the system disk is new: {output}"
    );
    assert!(
        output.contains("kept"),
        "the data disk kept its file: {output}"
    );
    assert!(
        refused(&fixture.netns, "Second-Pw-2"),
        "the previous password is refused"
    );

    let tasks = server
        .ok("GET", "/api/system/tasget?hs_name=kvm&limit=20", None)
        .await;
    let update_task: Option<&Value> = tasks
        .as_array()
        .and_then(|tasks| tasks.iter().find(|task| task["actions"] == "update"));
    assert!(
        update_task.is_some_and(|task| task["state"] == "done"),
        "the reinstall is a task: {tasks}"
    );

    // `make bench` asks for more runs (OPENIDCS_PROVISION_RUNS): reinstall
    // → SSH and create → SSH again, timed.
    let runs: usize = std::env::var("OPENIDCS_PROVISION_RUNS")
        .ok()
        .and_then(|runs| runs.parse().ok())
        .unwrap_or(1);
    let mut creates = vec![create_to_ssh];
    let mut reinstalls = vec![reinstall_to_ssh];
    for run in 1..runs {
        let password = format!("Run-{run}-Pw");
        let started = Instant::now();
        server
            .ok(
                "PUT",
                &format!("/api/client/update/kvm/{VM}?reinstall=true"),
                Some(json!({ "os_pass": password })),
            )
            .await;
        ssh_when_up(&fixture.netns, &password, "true", boot_limit);
        reinstalls.push(started.elapsed());
        server
            .ok("DELETE", &format!("/api/client/delete/kvm/{VM}"), None)
            .await;
        let started = Instant::now();
        server
            .ok(
                "POST",
                "/api/client/create/kvm",
                Some(create_body(&password)),
            )
            .await;
        start_and_forward(&server).await;
        ssh_when_up(&fixture.netns, &password, "true", boot_limit);
        creates.push(started.elapsed());
    }
    let seconds = |times: &[Duration]| -> Vec<f64> {
        times
            .iter()
            .map(|time| (time.as_secs_f64() * 10.0).round() / 10.0)
            .collect()
    };
    println!(
        "PROVISION {}",
        json!({
            "virt": if software.is_some() { "qemu (software emulation)" } else { "kvm" },
            "linked_clone": true,
            "create_to_ssh_s": seconds(&creates),
            "reinstall_to_ssh_s": seconds(&reinstalls),
        })
    );

    server
        .ok("DELETE", &format!("/api/client/delete/kvm/{VM}"), None)
        .await;
    let left: Vec<_> = std::fs::read_dir(fixture.vms_dir())
        .map(|entries| entries.flatten().map(|entry| entry.file_name()).collect())
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "the VM's volumes and seed are gone: {left:?}"
    );
}
