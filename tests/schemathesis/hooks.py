"""Schemathesis hooks for tests/schemathesis/run.sh.

1. A valid admin token. The API's own operations replace it (`treset`,
   `tsetup` and their aliases) and schemathesis calls them like any other:
   the new token is read from their answer (or the `tsetup` body); when it
   cannot be known (`treset?async=true`) or a request is refused with
   "invalid token", the next request first gets one from
   `openidcs token reset`, which a running server honours at once.
2. The fixtures the documented examples name: host `local` (enabled, its
   config as at start) and its VM `vm1` with a NIC of MAC 52:54:00:12:34:56.
   Generated requests disable, change or delete them like anything else;
   after every accepted mutation they are put back before the next request,
   so that every operation keeps reaching real objects.
3. `upload` is sent with vm1's upload key.
"""

import atexit
import os
import subprocess
import sys
import threading
import time

import requests
import schemathesis

BASE = os.environ["OPENIDCS_BASE"].rstrip("/")
HOST = "local"
VM = "vm1"
MAC = "52:54:00:12:34:56"
VM_BODY = {
    "vm_uuid": VM,
    "mem_num": 64,
    "hdd_num": 0,
    "nic_all": {"nic0": {"nic_type": "nat", "mac_addr": MAC}},
}
TOKEN_SETTERS = {
    "/api/system/treset",
    "/api/system/resets",
    "/api/token/reset",
    "/api/system/tsetup",
    "/api/token/set",
}

_lock = threading.RLock()
_state = {
    "token": os.environ["OPENIDCS_TOKEN"],
    "stale": False,
    "dirty": True,
    "wait": False,
    "upload_key": "",
    "host_config": None,
}
_stats = {"token resets": 0, "fixture repairs": 0}
atexit.register(lambda: _note(", ".join(f"{count} {what}" for what, count in _stats.items())))


def _note(message):
    print(f"[hooks] {message}", file=sys.stderr)


def _token():
    with _lock:
        if _state["stale"]:
            output = subprocess.run(
                [os.environ["OPENIDCS_BINARY"], "token", "reset", "--config", os.environ["OPENIDCS_CONFIG"]],
                check=True,
                capture_output=True,
                text=True,
                timeout=60,
            )
            _state["token"] = output.stdout.strip().splitlines()[-1]
            _state["stale"] = False
            _stats["token resets"] += 1
        return _state["token"]


def _api(method, path, body=None):
    response = requests.request(
        method,
        BASE + path,
        json=body,
        headers={"Authorization": f"Bearer {_token()}"},
        timeout=120,
    )
    try:
        envelope = response.json()
    except ValueError:
        envelope = {"code": response.status_code, "msg": response.text, "data": None}
    return response.status_code, envelope


def _repair(what, method, path, body=None, accept=(200,)):
    status, envelope = _api(method, path, body)
    _stats["fixture repairs"] += 1
    if status not in accept:
        _note(f"repairing {what}: {method} {path} answered {status} {envelope.get('msg')}")
    return status


def _ensure_fixtures():
    status, envelope = _api("GET", f"/api/server/detail/{HOST}")
    if status == 404:
        config = _state["host_config"] or {"server_addr": "test:///default"}
        _repair("host", "POST", "/api/server/create", {"name": HOST, "type": "libvirt", "config": config})
        _repair("host VMs", "POST", f"/api/client/scaner/{HOST}", {"prefix": ""})
    elif status == 200:
        host = envelope["data"]
        if _state["host_config"] is None:
            _state["host_config"] = host["config"]
        original = _state["host_config"]
        if host["type"] != "libvirt" or any(host["config"].get(key) != value for key, value in original.items()):
            _repair("host config", "PUT", f"/api/server/update/{HOST}", {"type": "libvirt", "config": original})
        if not host["enabled"]:
            _repair("host power", "POST", f"/api/server/powers/{HOST}", {"enable": True})
    else:
        _note(f"host {HOST}: {status} {envelope.get('msg')}")
        return
    status, envelope = _api("GET", f"/api/client/detail/{HOST}/{VM}")
    if status == 404:
        created = _repair("vm", "POST", f"/api/client/create/{HOST}", VM_BODY, accept=(200, 409))
        if created == 409:
            _repair("vm", "POST", f"/api/client/scaner/{HOST}", {"prefix": VM})
        status, envelope = _api("GET", f"/api/client/detail/{HOST}/{VM}")
    if status != 200:
        _note(f"vm {VM}: {status} {envelope.get('msg')}")
        return
    detail = envelope["data"]
    macs = [nic.get("mac_addr", "").lower() for nic in detail["config"].get("nic_all", {}).values()]
    if MAC not in macs:
        # The test driver cannot attach a NIC to a defined domain: make the VM anew.
        _repair("vm NIC", "DELETE", f"/api/client/delete/{HOST}/{VM}")
        _repair("vm NIC", "POST", f"/api/client/create/{HOST}", VM_BODY)
        status, envelope = _api("GET", f"/api/client/detail/{HOST}/{VM}")
        if status != 200:
            _note(f"vm {VM}: {status} {envelope.get('msg')}")
            return
        detail = envelope["data"]
    _state["upload_key"] = detail["upload_key"]


def _touches_fixtures(case):
    """Whether an accepted request of `case` may have changed the fixtures."""
    parameters = case.path_parameters or {}
    if parameters.get("hs_name") != HOST:
        return False
    segments = case.operation.path.split("/")
    if segments[2] == "server":
        return True
    return parameters.get("vm_uuid") == VM or segments[3] == "scaner"


@schemathesis.auth(refresh_interval=None, retry_on=[])
class Credentials:
    def get(self, case, context):
        return _token()

    def set(self, case, data, context):
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {data}"
        if case.operation.path == "/api/client/upload":
            with _lock:
                if _state["dirty"]:
                    _ensure_fixtures()
                    _state["dirty"] = False
                case.headers["X-Upload-Key"] = _state["upload_key"]


@schemathesis.hook
def before_call(context, case, kwargs):
    with _lock:
        if _state["dirty"]:
            if _state["wait"]:
                # An `?async=true` mutation may still be running.
                time.sleep(0.3)
            _ensure_fixtures()
            _state["dirty"] = False
            _state["wait"] = False
        # The token may have changed since the case was prepared.
        headers = kwargs.get("headers")
        if isinstance(headers, dict) and "Authorization" in headers:
            headers["Authorization"] = f"Bearer {_token()}"


@schemathesis.hook
def after_call(context, case, response):
    try:
        envelope = response.json()
    except Exception:
        return
    if not isinstance(envelope, dict):
        return
    path = case.operation.path
    method = case.operation.method.upper()
    with _lock:
        if method != "GET" and response.status_code == 200 and _touches_fixtures(case):
            _state["dirty"] = True
            detached = str((case.query or {}).get("async", "")).lower() == "true"
            _state["wait"] = _state["wait"] or detached
        if path in TOKEN_SETTERS and response.status_code == 200:
            data = envelope.get("data") or {}
            if isinstance(data, dict) and isinstance(data.get("token"), str):
                _state["token"] = data["token"]
            elif path.endswith(("tsetup", "/set")) and isinstance(case.body, dict) and case.body.get("token"):
                # Accepted with ?async=true: the body's token is being set.
                _state["token"] = case.body["token"]
            else:
                _state["stale"] = True
        elif response.status_code == 401 and envelope.get("msg") == "invalid token":
            _state["stale"] = True
