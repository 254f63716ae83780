//! One real VM through `qemu:///system`: created by the API, started, seen
//! running by libvirt itself (virsh), stopped and deleted. Needs root and the
//! libvirt daemons (`make test` starts them); skips with a reason otherwise.

use openidcs_tests::{DomainCleanup, kvm_server, qemu_system_skip_reason, virsh};
use serde_json::json;

const VM: &str = "oidcs-test-vm1";

#[tokio::test]
async fn a_real_vm_through_qemu_system() {
    if let Some(reason) = qemu_system_skip_reason() {
        println!("SKIPPED a_real_vm_through_qemu_system: {reason}");
        assert!(
            std::env::var("CI").is_err(),
            "CI runs as root with libvirtd started: {reason}"
        );
        return;
    }
    let _cleanup = DomainCleanup(VM);
    let server = kvm_server().await;
    let vm = server
        .ok(
            "POST",
            "/api/client/create/kvm",
            Some(json!({ "vm_uuid": VM, "cpu_num": 1, "mem_num": 64, "hdd_num": 0, "vc_pass": "pw123" })),
        )
        .await;
    assert_eq!(vm["power_status"], "stopped", "{vm}");
    // The first create probed the host's CPU with a throwaway domain; the
    // choice is in the host's detail and in the VM's definition.
    let host = server.ok("GET", "/api/server/detail/kvm", None).await;
    let mode = host["cpu"]["mode"].as_str().unwrap_or_default().to_owned();
    assert!(
        ["host-passthrough", "host-model", "custom"].contains(&mode.as_str()),
        "a probed CPU: {host}"
    );
    let (_, definition) = virsh(&["dumpxml", "--inactive", VM]);
    assert!(
        definition.contains(&format!("mode='{mode}'")),
        "the VM has the host's CPU {mode}: {definition}"
    );
    let (defined, output) = virsh(&["dominfo", VM]);
    assert!(defined, "libvirt knows the VM: {output}");

    let started = server
        .ok(
            "POST",
            &format!("/api/client/powers/kvm/{VM}"),
            Some(json!({ "action": "start" })),
        )
        .await;
    assert_eq!(started["power_status"], "running", "{started}");
    let (_, state) = virsh(&["domstate", VM]);
    assert_eq!(state.trim(), "running", "libvirt sees it running");

    // listup answers are reused: what the API did shows at once, what was
    // done outside the API within poller.listup_max_age_ms (2 s by default).
    let listed = server.ok("GET", "/api/client/listup/kvm", None).await;
    assert_eq!(listed[VM]["power_status"], "running", "{listed}");
    let (destroyed, output) = virsh(&["destroy", VM]);
    assert!(destroyed, "virsh destroy: {output}");
    let outside = std::time::Instant::now();
    loop {
        let listed = server.ok("GET", "/api/client/listup/kvm", None).await;
        if listed[VM]["power_status"] == "stopped" {
            break;
        }
        assert!(
            outside.elapsed() < std::time::Duration::from_secs(5),
            "listup still says {} 5 s after virsh destroy",
            listed[VM]["power_status"]
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let restarted = server
        .ok(
            "POST",
            &format!("/api/client/powers/kvm/{VM}"),
            Some(json!({ "action": "start" })),
        )
        .await;
    assert_eq!(restarted["power_status"], "running", "{restarted}");
    let listed = server.ok("GET", "/api/client/listup/kvm", None).await;
    assert_eq!(
        listed[VM]["power_status"], "running",
        "a start through the API shows at once: {listed}"
    );
    let console = server
        .ok("GET", &format!("/api/client/vncons/kvm/{VM}"), None)
        .await;
    assert!(
        console["url"]
            .as_str()
            .unwrap_or_default()
            .contains("ticket="),
        "{console}"
    );

    let stopped = server
        .ok(
            "POST",
            &format!("/api/client/powers/kvm/{VM}"),
            Some(json!({ "action": "hard_stop" })),
        )
        .await;
    assert_eq!(stopped["power_status"], "stopped");
    let (_, state) = virsh(&["domstate", VM]);
    assert_eq!(state.trim(), "shut off");

    server
        .ok("DELETE", &format!("/api/client/delete/kvm/{VM}"), None)
        .await;
    let (exists, _) = virsh(&["dominfo", VM]);
    assert!(!exists, "the domain is gone from libvirt");
}

/// A bridge of the test's own (no address, nothing sent), removed on drop.
struct Bridge(String);

impl Bridge {
    fn create() -> Bridge {
        let name = format!("oidcsbw{}", std::process::id() % 100_000);
        for arguments in [
            vec!["link", "add", name.as_str(), "type", "bridge"],
            vec!["link", "set", name.as_str(), "up"],
        ] {
            let status = std::process::Command::new("ip")
                .args(&arguments)
                .status()
                .expect("ip");
            assert!(status.success(), "ip {arguments:?}");
        }
        Bridge(name)
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.0])
            .status();
    }
}

/// A VM sold with speed limits starts on any kernel: where libvirt's `tc`
/// can shape, the running domain has its `<bandwidth>`; where it cannot (no
/// sfq or police), the engine starts it unshaped, says so in a warning, and
/// keeps the limits in the definition.
#[tokio::test]
async fn a_vm_with_speed_limits_starts_whether_or_not_the_kernel_shapes() {
    const SHAPED: &str = "oidcs-test-bw1";
    if let Some(reason) = qemu_system_skip_reason() {
        println!(
            "SKIPPED a_vm_with_speed_limits_starts_whether_or_not_the_kernel_shapes: {reason}"
        );
        assert!(
            std::env::var("CI").is_err(),
            "CI runs as root with libvirtd started: {reason}"
        );
        return;
    }
    let _cleanup = DomainCleanup(SHAPED);
    let bridge = Bridge::create();
    let server = kvm_server().await;
    server
        .ok(
            "PUT",
            "/api/server/update/kvm",
            Some(json!({ "config": { "network_pub": bridge.0,
                "ipaddr_maps": { "wan": { "vers": "ipv4", "type": "pub", "gate": "192.0.2.1",
                                          "mask": "255.255.255.0", "from": "192.0.2.10", "nums": 10 } } } })),
        )
        .await;
    server
        .ok(
            "POST",
            "/api/client/create/kvm",
            Some(
                json!({ "vm_uuid": SHAPED, "cpu_num": 1, "mem_num": 64, "hdd_num": 0,
                         "speed_u": 10, "speed_d": 20,
                         "nic_all": { "nic0": { "nic_type": "pub" } } }),
            ),
        )
        .await;
    let started = server
        .ok(
            "POST",
            &format!("/api/client/powers/kvm/{SHAPED}"),
            Some(json!({ "action": "start" })),
        )
        .await;
    assert_eq!(started["power_status"], "running", "{started}");
    let (_, live) = virsh(&["dumpxml", SHAPED]);
    let (_, definition) = virsh(&["dumpxml", "--inactive", SHAPED]);
    assert!(
        definition.contains("<bandwidth>"),
        "the definition keeps the limits: {definition}"
    );
    match openidcs_tests::kernel_can_shape() {
        Ok(()) => assert!(
            live.contains("<bandwidth>"),
            "this kernel shapes: the running domain has the limits: {live}"
        ),
        Err(why) => {
            println!("NOTE: this kernel cannot shape ({why}): the VM runs unshaped");
            assert!(!live.contains("<bandwidth>"), "{live}");
            let logs = server
                .ok("GET", "/api/system/logget?level=warn&hs_name=kvm", None)
                .await;
            assert!(
                logs.to_string()
                    .contains("runs without its bandwidth limits"),
                "a warning says so: {logs}"
            );
        }
    }
    let (stopped, output) = virsh(&["destroy", SHAPED]);
    assert!(stopped, "{output}");
}
