//! Throwaway network namespaces for the NAT traffic tests: a "host"
//! namespace where the server's nftables rules live, a "vm" namespace behind
//! a veth pair with echo servers, and a "client" namespace on the host's
//! public side. Only addresses inside these namespaces are ever used; every
//! namespace and process is removed on drop.

use std::process::{Child, Command, Stdio};

/// The addresses of the layout.
pub const VM_ADDRESS: &str = "10.231.0.2";
pub const VM_GATEWAY: &str = "10.231.0.1";
pub const PUBLIC_ADDRESS: &str = "10.232.0.1";
pub const CLIENT_ADDRESS: &str = "10.232.0.2";

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Skip (printing why) unless root; under CI a missing root is a failure.
pub fn require_root(test: &str) -> bool {
    if is_root() {
        return true;
    }
    println!("SKIPPED {test}: needs root to create network namespaces");
    assert!(std::env::var("CI").is_err(), "CI runs as root");
    false
}

fn run(arguments: &[&str]) {
    let status = Command::new(arguments[0])
        .args(&arguments[1..])
        .status()
        .unwrap_or_else(|error| panic!("{arguments:?}: {error}"));
    assert!(status.success(), "{arguments:?} failed");
}

pub struct Namespaces {
    pub host: String,
    pub vm: String,
    pub client: String,
    servers: Vec<Child>,
}

impl Namespaces {
    /// Build the three namespaces with a unique suffix.
    pub fn create() -> Namespaces {
        let suffix = format!(
            "{:x}",
            std::process::id()
                ^ (std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|elapsed| elapsed.subsec_nanos())
                    .unwrap_or(0))
        );
        let suffix = &suffix[suffix.len().saturating_sub(6)..];
        let namespaces = Namespaces {
            host: format!("oidcs-h-{suffix}"),
            vm: format!("oidcs-v-{suffix}"),
            client: format!("oidcs-c-{suffix}"),
            servers: Vec::new(),
        };
        for name in [&namespaces.host, &namespaces.vm, &namespaces.client] {
            run(&["ip", "netns", "add", name]);
            run(&["ip", "-n", name, "link", "set", "lo", "up"]);
        }
        let (host, vm, client) = (&namespaces.host, &namespaces.vm, &namespaces.client);
        let (host_vm, vm_side) = (format!("hv{suffix}"), format!("vh{suffix}"));
        let (host_client, client_side) = (format!("hc{suffix}"), format!("ch{suffix}"));
        run(&[
            "ip", "link", "add", &host_vm, "netns", host, "type", "veth", "peer", "name", &vm_side,
            "netns", vm,
        ]);
        run(&[
            "ip",
            "link",
            "add",
            &host_client,
            "netns",
            host,
            "type",
            "veth",
            "peer",
            "name",
            &client_side,
            "netns",
            client,
        ]);
        run(&[
            "ip",
            "-n",
            host,
            "addr",
            "add",
            &format!("{VM_GATEWAY}/24"),
            "dev",
            &host_vm,
        ]);
        run(&[
            "ip",
            "-n",
            host,
            "addr",
            "add",
            &format!("{PUBLIC_ADDRESS}/24"),
            "dev",
            &host_client,
        ]);
        run(&[
            "ip",
            "-n",
            vm,
            "addr",
            "add",
            &format!("{VM_ADDRESS}/24"),
            "dev",
            &vm_side,
        ]);
        run(&[
            "ip",
            "-n",
            client,
            "addr",
            "add",
            &format!("{CLIENT_ADDRESS}/24"),
            "dev",
            &client_side,
        ]);
        for (name, device) in [
            (host, &host_vm),
            (host, &host_client),
            (vm, &vm_side),
            (client, &client_side),
        ] {
            run(&["ip", "-n", name, "link", "set", device, "up"]);
        }
        run(&["ip", "-n", vm, "route", "add", "default", "via", VM_GATEWAY]);
        run(&[
            "ip",
            "-n",
            client,
            "route",
            "add",
            "default",
            "via",
            PUBLIC_ADDRESS,
        ]);
        run(&[
            "ip",
            "netns",
            "exec",
            host,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ]);
        namespaces
    }

    /// The server's `[nat]` table: nft runs in the host namespace.
    pub fn nat_config(&self) -> String {
        let command: Vec<String> = ["ip", "netns", "exec", &self.host, "nft"]
            .iter()
            .map(|part| format!("{part:?}"))
            .collect();
        format!("[nat]\nnft_command = [{}]\n\n", command.join(", "))
    }

    /// Run nft in the host namespace; answers stdout.
    pub fn nft(&self, arguments: &[&str]) -> String {
        let output = Command::new("ip")
            .args(["netns", "exec", &self.host, "nft"])
            .args(arguments)
            .output()
            .expect("nft");
        assert!(
            output.status.success(),
            "nft {arguments:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// The public ports our prerouting chain forwards (empty without the table).
    pub fn forwarded_ports(&self) -> std::collections::BTreeSet<u64> {
        let listing = self.nft(&["-j", "list", "ruleset"]);
        let json: serde_json::Value = serde_json::from_str(&listing).expect("nft JSON");
        json["nftables"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|item| {
                item["rule"]["table"] == "openidcs" && item["rule"]["chain"] == "prerouting"
            })
            .filter_map(|item| item["rule"]["expr"].as_array())
            .flatten()
            .filter(|expression| expression["match"]["left"]["payload"]["field"] == "dport")
            .filter_map(|expression| expression["match"]["right"].as_u64())
            .collect()
    }

    /// Start TCP and UDP echo servers on the VM address, port `port`.
    pub fn start_echo_servers(&mut self, port: u16) {
        let tcp = format!(
            "import socket\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
             s.bind(('{VM_ADDRESS}',{port}))\ns.listen(64)\nwhile True:\n  c,_=s.accept()\n  d=c.recv(1024)\n  c.sendall(d)\n  c.close()\n"
        );
        let udp = format!(
            "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('{VM_ADDRESS}',{port}))\n\
             while True:\n  d,a=s.recvfrom(1024)\n  s.sendto(d,a)\n"
        );
        for program in [tcp, udp] {
            let child = Command::new("ip")
                .args(["netns", "exec", &self.vm, "python3", "-c", &program])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("echo server");
            self.servers.push(child);
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
    }

    /// From the client namespace, send `payload` to the host's public
    /// address and port; answers what came back, or None.
    pub fn echo(&self, protocol: &str, port: u16, payload: &str) -> Option<String> {
        let program = match protocol {
            "udp" => format!(
                "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.settimeout(1.5)\n\
                 s.sendto(b'{payload}',('{PUBLIC_ADDRESS}',{port}))\nprint(s.recvfrom(1024)[0].decode())\n"
            ),
            _ => format!(
                "import socket\ns=socket.create_connection(('{PUBLIC_ADDRESS}',{port}),timeout=1.5)\n\
                 s.sendall(b'{payload}')\nprint(s.recv(1024).decode())\n"
            ),
        };
        let output = Command::new("ip")
            .args(["netns", "exec", &self.client, "python3", "-c", &program])
            .output()
            .expect("client");
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for server in &mut self.servers {
            let _ = server.kill();
            let _ = server.wait();
        }
        for name in [&self.host, &self.vm, &self.client] {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}
