#!/usr/bin/env python3
"""`make bench`: load figures for openidcs against a bare axum ceiling, in
one run on one machine, written to docs/benchmarks.md.

Measures (wrk, fixed duration per point, 1/16/64 connections):
  (a) bare axum hello, (b) GET /api/system/statis with a token,
  (c) GET /api/server/listup and /api/client/listup/<host> with 1,000 and
      10,000 VMs on a test:/// host (driver XML generated here),
  (e) start-up to first 200, cold (no precompiled cache) and warm,
  (f) idle RSS after start, and RSS after (c);
  and (g), as root: 20 web consoles streaming at once from real QEMU VMs
      (qemu:///system) through the websocket-to-VNC proxy, with the server's
      CPU and RSS meanwhile.
Only loopback addresses are used; every process started here is stopped.
"""
import json, os, platform, re, shutil, signal, ssl, subprocess, sys, tempfile, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.join(ROOT, "target/release/openidcs")
HELLO = os.path.join(ROOT, "target/release/bare-hello")
CONSOLE_LOAD = os.path.join(ROOT, "target/release/console-load")
DAEMONS = os.path.join(ROOT, "tests/scripts/libvirt-daemons.sh")
PLUGIN = os.path.join(ROOT, "target/wasm32-wasip2/release/openidcs_plugin_libvirt.wasm")
DURATION = os.environ.get("BENCH_DURATION", "5s")
CONNECTIONS = [1, 16, 64]


def wrk(url, connections, token=None):
    command = ["wrk", "-t", str(min(connections, 2)), "-c", str(connections), "-d", DURATION, "--latency", url]
    if token:
        command[1:1] = ["-H", f"Authorization: Bearer {token}"]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    def latency(pct):
        m = re.search(rf"\s{pct}%\s+([\d.]+)(us|ms|s)", out)
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise SystemExit(f"{url}: {errors.group(1)} non-2xx answers\n{out}")
    return {"rps": rps, "p50": latency(50), "p99": latency(99)}


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def get(url, token=None, method="GET", body=None):
    request = urllib.request.Request(url, method=method, data=None if body is None else json.dumps(body).encode())
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    # The HTTPS server's certificate is self-signed; wrk does not verify either.
    context = ssl._create_unverified_context() if url.startswith("https://") else None
    with urllib.request.urlopen(request, timeout=600, context=context) as answer:
        return json.load(answer)


class Server:
    def __init__(self, workdir, config, name="openidcs.toml"):
        self.workdir = workdir
        self.config = os.path.join(workdir, name)
        with open(self.config, "w") as f:
            f.write(config)
        self.process = None
        self.token = None

    def start(self):
        began = time.monotonic()
        self.process = subprocess.Popen([BIN, "serve", "--config", self.config], stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, text=True)
        for line in self.process.stdout:
            if "store it now): " in line:
                self.token = line.split("store it now): ")[1].strip()
            match = re.match(r"openidcs listening on (\S+)", line)
            if match:
                self.base = match.group(1)
                break
        while True:
            try:
                get(self.base + "/api/system/statis", self.token)
                return (time.monotonic() - began) * 1000
            except Exception:
                time.sleep(0.002)

    def stop(self):
        if self.process:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=30)
            self.process = None


def driver_xml(path, count):
    with open(path, "w") as f:
        f.write("<node>\n")
        for i in range(count):
            f.write(f"<domain type='test'><name>bench-{i:05d}</name><memory>65536</memory><vcpu>1</vcpu>"
                    "<os><type>hvm</type></os></domain>\n")
        f.write("</node>\n")


def main():
    for tool in ["wrk"]:
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing (make bench installs it)")
    results, notes = [], []
    work = tempfile.mkdtemp(prefix="openidcs-bench-")
    hello = subprocess.Popen([HELLO, "127.0.0.1:18090"], stdout=subprocess.PIPE, text=True)
    hello.stdout.readline()
    try:
        ceiling = {}
        for c in CONNECTIONS:
            ceiling[c] = wrk("http://127.0.0.1:18090/hello", c)
            results.append(("(a) bare axum hello", c, ceiling[c]))
        hosts = ""
        for n in (1000, 10000):
            driver_xml(os.path.join(work, f"node{n}.xml"), n)
            hosts += (f'[[host]]\nname = "bench{n}"\ntype = "libvirt"\n[host.config]\n'
                      f'server_addr = "test://{work}/node{n}.xml"\nfilter_name = "bench-"\n\n')
        config = (f'[server]\nlisten = "127.0.0.1:18091"\ndata_dir = "data"\nplain_http = true\n[poller]\ninterval_s = 3600\n'
                  # The generated hosts are libvirt test-driver files.
                  f'[libvirt]\ntest_files = true\n'
                  f'[[plugin]]\nname = "libvirt"\npath = "{PLUGIN}"\ngrants = ["libvirt", "nat", "proxy", "log"]\n\n{hosts}')
        server = Server(work, config)
        cold = server.start()
        idle = rss_mb(server.process.pid)
        server.stop()
        warm = server.start()
        idle_warm = rss_mb(server.process.pid)
        token = server.token or get_token(work)
        server.token = token
        for c in CONNECTIONS:
            results.append(("(b) GET /api/system/statis", c, wrk(server.base + "/api/system/statis", c, token)))
        rebuilt = {}
        for n in (1000, 10000):
            began = time.monotonic()
            scan = get(f"{server.base}/api/client/scaner/bench{n}", token, "POST", {"prefix": "bench-"})
            notes.append(f"scaner imported {scan['data']['added']} of {n} domains in {time.monotonic() - began:.1f} s")
            for c in CONNECTIONS:
                results.append((f"(c) GET /api/client/listup/bench{n} ({n} VMs)", c,
                                wrk(f"{server.base}/api/client/listup/bench{n}", c, token)))
            rebuilt[n] = listup_after_a_write(server, token, f"bench{n}", "bench-00000")
        for c in CONNECTIONS:
            results.append(("(c) GET /api/server/listup (2 hosts, 11,000 VMs)", c,
                            wrk(server.base + "/api/server/listup", c, token)))
        loaded = rss_mb(server.process.pid)
        server.stop()
        # (b) over HTTPS, as billing modules call it, against plain HTTP on
        # a copy of the same data (the self-signed certificate the server
        # makes, keep-alive): both servers run at once and are measured in
        # turns, three times each, so that the ratio compares the same moment
        # of this shared machine; the medians are reported.
        shutil.copytree(os.path.join(work, "data"), os.path.join(work, "data-tls"))
        server.start()
        tls = Server(work, config.replace("plain_http = true\n", "").replace("18091", "18093")
                     .replace('data_dir = "data"', 'data_dir = "data-tls"'), "openidcs-tls.toml")
        # The same data: the token of the first start (it is printed only then).
        tls.token = token
        tls.start()
        median = lambda runs: sorted(runs, key=lambda run: run["rps"])[len(runs) // 2]
        for c in CONNECTIONS:
            plain_runs, secure_runs = [], []
            for _ in range(3):
                plain_runs.append(wrk(server.base + "/api/system/statis", c, token))
                secure_runs.append(wrk(tls.base + "/api/system/statis", c, token))
            plain, secure = median(plain_runs), median(secure_runs)
            results.append(("(b) GET /api/system/statis over HTTPS", c, secure))
            notes.append(f"(b) statis over HTTPS at {c} connections: {secure['rps'] / plain['rps']:.0%} "
                         f"of plain HTTP's req/s on the same data, measured in turns (medians of 3: "
                         f"{secure['rps']:.0f} and {plain['rps']:.0f}; target: at least 80%)")
        tls.stop()
        server.stop()
    finally:
        hello.send_signal(signal.SIGTERM)
        hello.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)
    for n, ms in rebuilt.items():
        notes.append(f"(c) listup of {n} VMs right after a power action (a fresh answer, not the "
                     f"reused one): median {ms:.0f} ms of 6")
    write(results, ceiling, cold, warm, idle_warm, loaded, notes, engine_calls(), console_bench(),
          provision_bench())


def engine_calls():
    """(d): criterion's median estimate of each engine-call benchmark."""
    out = subprocess.run(
        # The Makefile's package selection, so that cargo resolves the same
        # features as for `make build` and reuses wasmtime instead of
        # compiling it a second time.
        ["cargo", "bench", "-q", *os.environ.get("HOST_PACKAGES", "-p openidcs").split(),
         "--bench", "engine_call", "--",
         "--warm-up-time", "1", "--measurement-time", "4"],
        cwd=ROOT, capture_output=True, text=True, check=True).stdout
    figures, name = [], None
    for line in out.splitlines():
        if line.startswith("engine call/"):
            name = line.split("/", 1)[1].strip()
        match = re.search(r"time:\s+\[\S+ \S+ ([\d.]+) (ns|µs|us|ms)", line)
        if match and name:
            value, unit = float(match.group(1)), match.group(2)
            micros = value / 1000 if unit == "ns" else value * 1000 if unit == "ms" else value
            figures.append((name, micros))
            name = None
    return figures


def listup_after_a_write(server, token, host, vm):
    """Milliseconds of one listup right after a power action, which makes
    the server build a new answer (the wrk points above mostly reuse one);
    the median of six. The body is read, not parsed."""
    times = []
    for action in ["pause", "resume"] * 3:
        get(f"{server.base}/api/client/powers/{host}/{vm}", token, "POST", {"action": action})
        request = urllib.request.Request(f"{server.base}/api/client/listup/{host}")
        request.add_header("Authorization", f"Bearer {token}")
        began = time.monotonic()
        with urllib.request.urlopen(request, timeout=600) as answer:
            answer.read()
        times.append((time.monotonic() - began) * 1000)
    return sorted(times)[len(times) // 2]


def cpu_seconds(pid):
    """utime + stime of a process, in seconds."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


READING = "## Reading the figures"
CONSOLE_SESSIONS, CONSOLE_VMS, CONSOLE_SECONDS, CONSOLE_FPS = 20, 4, 20, 10


def console_bench():
    """(g): CONSOLE_SESSIONS consoles over CONSOLE_VMS real VMs, each asking
    for a full screen CONSOLE_FPS times a second; None when not root."""
    if os.geteuid() != 0:
        print("console bench skipped: it needs root (qemu:///system and KVM)")
        return None
    subprocess.run([DAEMONS, "start"], check=True)
    work = tempfile.mkdtemp(prefix="openidcs-bench-console-")
    vms = [f"oidcs-bench-c{i}" for i in range(1, CONSOLE_VMS + 1)]
    config = ('[server]\nlisten = "127.0.0.1:18092"\ndata_dir = "data"\nplain_http = true\n[poller]\ninterval_s = 3600\n'
              f'[console]\nmax_per_vm = {CONSOLE_SESSIONS}\nmax_total = {CONSOLE_SESSIONS}\n'
              f'[[plugin]]\nname = "libvirt"\npath = "{PLUGIN}"\ngrants = ["libvirt", "nat", "proxy", "log"]\n'
              'timeout_ms = 60000\n')
    server = Server(work, config)
    try:
        server.start()
        token = server.token
        get(server.base + "/api/server/create", token, "POST", {
            "name": "kvm", "type": "libvirt", "config": {
                "server_addr": "qemu:///system", "filter_name": "oidcs-bench-",
                "system_path": "/var/lib/libvirt/images"}})
        for vm in vms:
            get(f"{server.base}/api/client/create/kvm", token, "POST",
                {"vm_uuid": vm, "cpu_num": 1, "mem_num": 64, "hdd_num": 0})
            get(f"{server.base}/api/client/powers/kvm/{vm}", token, "POST", {"action": "start"})
        time.sleep(3)  # SeaBIOS draws its screen
        pid = server.process.pid
        before_rss, before_cpu, began = rss_mb(pid), cpu_seconds(pid), time.monotonic()
        load = subprocess.Popen([CONSOLE_LOAD, server.base, token, "kvm", ",".join(vms),
                                 str(CONSOLE_SESSIONS), str(CONSOLE_SECONDS), str(CONSOLE_FPS)],
                                stdout=subprocess.PIPE, text=True)
        peak_rss, during = before_rss, []
        while load.poll() is None:
            time.sleep(0.25)
            peak_rss = max(peak_rss, rss_mb(pid))
            during.append(rss_mb(pid))
        out = load.stdout.read()
        if load.returncode != 0:
            raise SystemExit(f"console-load failed ({load.returncode}): {out}")
        cpu = (cpu_seconds(pid) - before_cpu) / (time.monotonic() - began)
        moved = json.loads(out.strip().splitlines()[-1])
        counters = get(server.base + "/api/system/consoles", token)["data"]
        return {"moved": moved, "cpu": cpu, "idle_rss": before_rss, "peak_rss": peak_rss,
                "median_rss": sorted(during)[len(during) // 2] if during else before_rss,
                "counters": counters}
    finally:
        for vm in vms:
            try:
                get(f"{server.base}/api/client/delete/kvm/{vm}", server.token, "DELETE")
            except Exception:
                subprocess.run(["virsh", "-c", "qemu:///system", "destroy", vm], capture_output=True)
                subprocess.run(["virsh", "-c", "qemu:///system", "undefine", vm], capture_output=True)
        server.stop()
        subprocess.run([DAEMONS, "stop"], check=False)
        shutil.rmtree(work, ignore_errors=True)


PROVISION_RUNS = 3


def provision_bench():
    """(h): create → SSH answering and reinstall → SSH answering, PROVISION_RUNS
    times each, by the customer-path test (real VMs from the Debian test image
    on qemu:///system); None when not root."""
    if os.geteuid() != 0:
        print("provisioning bench skipped: it needs root (qemu:///system)")
        return None
    subprocess.run([DAEMONS, "start"], check=True)
    try:
        out = subprocess.run(
            ["cargo", "test", "-q", "--release", "-p", "openidcs-tests", "--test", "customer_path",
             "--", "--nocapture"],
            cwd=ROOT, capture_output=True, text=True, check=True,
            env={**os.environ, "OPENIDCS_PROVISION_RUNS": str(PROVISION_RUNS)}).stdout
    finally:
        subprocess.run([DAEMONS, "stop"], check=False)
    line = next((line for line in out.splitlines() if line.startswith("PROVISION ")), None)
    if line is None:
        print(f"provisioning bench: the test printed no figures (skipped?):\n{out}")
        return None
    return json.loads(line[len("PROVISION "):])


def median(values):
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def get_token(work):
    out = subprocess.run([BIN, "token", "reset", "--config", os.path.join(work, "openidcs.toml")],
                         capture_output=True, text=True, check=True).stdout
    return out.strip()


def write(results, ceiling, cold, warm, idle, loaded, notes, calls, console, provision):
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    lines = [
        "# Benchmarks", "",
        f"Measured by `make bench` on {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, {cpu}, "
        f"{platform.system()} {platform.release()}; wrk, {DURATION} per point, loopback.", "",
        "| what | conns | req/s | p50 ms | p99 ms | req/s vs (a) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, c, r in results:
        ratio = r["rps"] / ceiling[c]["rps"] if ceiling.get(c) else 0
        lines.append(f"| {name} | {c} | {r['rps']:.0f} | {r['p50']:.3f} | {r['p99']:.3f} | {ratio:.0%} |")
    lines += ["", "| start-up and memory | figure |", "|---|---:|",
              f"| (e) start to first 200, cold (compiles the plugin) | {cold:.0f} ms |",
              f"| (e) start to first 200, warm (precompiled cache) | {warm:.0f} ms |",
              f"| (f) idle RSS after start | {idle:.1f} MB |",
              f"| (f) RSS after the listup runs | {loaded:.1f} MB |", ""]
    lines += ["| (d) engine call (criterion, median) | µs |", "|---|---:|"]
    lines += [f"| {name} | {micros:.1f} |" for name, micros in calls]
    lines += [""]
    if console:
        moved = console["moved"]
        lines += [f"| (g) {moved['sessions']} web consoles streaming at once | figure |", "|---|---:|",
                  f"| real QEMU VMs (qemu:///system, KVM), sessions per VM | {CONSOLE_VMS}, "
                  f"{CONSOLE_SESSIONS // CONSOLE_VMS} |",
                  f"| full-screen raw frames asked per session | {CONSOLE_FPS}/s for {CONSOLE_SECONDS} s |",
                  f"| frames delivered, all sessions | {moved['frames_per_s']:.0f}/s |",
                  f"| bytes through the proxy | {moved['mb_per_s']:.1f} MB/s |",
                  f"| server CPU while streaming (1.0 = one core) | {console['cpu']:.2f} |",
                  f"| server RSS before, median and peak while streaming | {console['idle_rss']:.1f} / "
                  f"{console['median_rss']:.1f} / {console['peak_rss']:.1f} MB |",
                  f"| session set-up (vncons, session, websocket, RFB), median / max | "
                  f"{moved['setup_ms_median']:.0f} / {moved['setup_ms_max']:.0f} ms |", ""]
    else:
        lines += ["(g) web consoles: not measured (needs root for qemu:///system and KVM).", ""]
    if provision:
        creates, reinstalls = provision["create_to_ssh_s"], provision["reinstall_to_ssh_s"]
        lines += [f"| (h) provisioning, median of {len(creates)} (runs) | seconds |", "|---|---:|",
                  f"| create → SSH answering (linked clone, cloud-init, {provision['virt']}) | "
                  f"{median(creates):.1f} ({', '.join(f'{t:.1f}' for t in creates)}) |",
                  f"| reinstall → SSH answering | "
                  f"{median(reinstalls):.1f} ({', '.join(f'{t:.1f}' for t in reinstalls)}) |", ""]
    else:
        lines += ["(h) provisioning: not measured (needs root for qemu:///system).", ""]
    lines += [f"- {note}" for note in notes]
    text = "\n".join(lines) + "\n"
    path = os.path.join(ROOT, "docs/benchmarks.md")
    # The hand-written reading of the figures (from its heading on) is kept.
    if os.path.exists(path):
        with open(path) as f:
            previous = f.read()
        if READING in previous:
            text += "\n" + previous[previous.index(READING):]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
