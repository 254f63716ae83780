#!/usr/bin/env bash
# Start (or stop) virtlogd and libvirtd for the real-VM tests, as root.
# `start` does nothing when a qemu:///system daemon already answers; `stop`
# stops only the daemons that `start` started (their pids are recorded).
set -euo pipefail
cd "$(dirname "$0")/../.."
record=target/libvirt-daemons.pids
answers() { virsh -c qemu:///system version >/dev/null 2>&1; }

case "${1:-}" in
start)
  if [ "$(id -u)" != 0 ]; then
    echo "libvirt-daemons: not root; the qemu:///system tests will skip"
    exit 0
  fi
  if answers; then
    echo "libvirt-daemons: qemu:///system already answers; using it"
    exit 0
  fi
  # Debian's udev rule gives /dev/kvm to group kvm (0660); containers without
  # udev leave it root-only, and QEMU (user libvirt-qemu, group kvm) then
  # cannot use KVM. Apply the same rule.
  if [ -c /dev/kvm ] && getent group kvm >/dev/null; then
    chgrp kvm /dev/kvm && chmod 0660 /dev/kvm
  fi
  mkdir -p /var/log/libvirt /var/run/libvirt /var/lib/libvirt target
  virtlogd -d
  libvirtd -d
  for _ in $(seq 1 50); do answers && break; sleep 0.2; done
  answers || { echo "libvirt-daemons: libvirtd did not come up"; exit 1; }
  # One pid per line (the pid files end without a newline).
  { for pidfile in /run/virtlogd.pid /run/libvirtd.pid; do
      [ -f "$pidfile" ] && { tr -d '[:space:]' < "$pidfile"; echo; }
    done; } > "$record"
  [ -s "$record" ] || pgrep -x 'libvirtd|virtlogd' > "$record"
  echo "libvirt-daemons: started virtlogd and libvirtd (pids $(tr '\n' ' ' < "$record"))"
  ;;
stop)
  if [ -f "$record" ]; then
    while read -r pid; do kill "$pid" 2>/dev/null || true; done < "$record"
    rm -f "$record"
    echo "libvirt-daemons: stopped"
  fi
  ;;
*)
  echo "usage: $0 start|stop" >&2
  exit 2
  ;;
esac
