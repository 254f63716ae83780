#!/usr/bin/env bash
# A throwaway dockerd for the container engine's test (as root):
#   dockerd.sh start NETNS DIR   dockerd inside the network namespace NETNS,
#                                everything (socket, data, pid) under DIR; an
#                                image made from Debian's busybox-static
#                                (`oidcs-busybox:1`, serving /www on :8080) and
#                                the bridge network `oidcs-nat` (10.233.0.0/24)
#   dockerd.sh stop DIR          stop it, unmount and remove DIR
# dockerd touches no iptables (openidcs owns the NAT) and makes no default
# bridge; its containerd runs under namespace `oidcs`. The image's root file
# system is cached in target/oci-image.
set -euo pipefail
cd "$(dirname "$0")/../.."
cache=$PWD/target/oci-image
IMAGE=oidcs-busybox:1

rootfs_tar() {
  [ -s "$cache/rootfs.tar" ] && return 0
  local work
  work=$(mktemp -d)
  # A machine whose package lists were never fetched has to fetch them once.
  (cd "$work" && { apt-get download -q busybox-static >/dev/null 2>&1 \
    || { apt-get update -qq && apt-get download -q busybox-static >/dev/null; }; })
  dpkg -x "$work"/busybox-static_*.deb "$work/pkg"
  local root=$work/rootfs
  mkdir -p "$root"/{bin,etc,root,tmp,www,data,proc,sys,dev}
  cp "$work/pkg/bin/busybox" "$root/bin/busybox"
  for applet in $("$root/bin/busybox" --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
  done
  echo 'root:x:0:0:root:/root:/bin/sh' > "$root/etc/passwd"
  echo 'root:*:19000:0:99999:7:::' > "$root/etc/shadow"
  chmod 0600 "$root/etc/shadow"
  echo 'root:x:0:' > "$root/etc/group"
  echo 'oidcs-container-ok' > "$root/www/index.html"
  mkdir -p "$cache"
  tar -C "$root" -cf "$cache/rootfs.tar.part" .
  mv "$cache/rootfs.tar.part" "$cache/rootfs.tar"
  rm -rf "$work"
}

case "${1:-}" in
start)
  netns=$2 dir=$3
  mkdir -p "$dir"
  rootfs_tar
  docker=(docker -H "unix://$dir/docker.sock")
  nsenter --net="/var/run/netns/$netns" \
    dockerd --data-root "$dir/root" --exec-root "$dir/exec" --pidfile "$dir/docker.pid" \
      -H "unix://$dir/docker.sock" --containerd-namespace oidcs \
      --containerd-plugins-namespace oidcs-plugins \
      --iptables=false --ip6tables=false --ip-masq=false --bridge=none \
      >"$dir/dockerd.log" 2>&1 &
  for _ in $(seq 1 150); do "${docker[@]}" version >/dev/null 2>&1 && break; sleep 0.2; done
  "${docker[@]}" version >/dev/null 2>&1 || { echo "dockerd did not come up:"; tail -20 "$dir/dockerd.log"; exit 1; }
  "${docker[@]}" import --change 'CMD ["/bin/httpd", "-f", "-p", "8080", "-h", "/www"]' \
    "$cache/rootfs.tar" "$IMAGE" >/dev/null
  "${docker[@]}" network create -d bridge --subnet 10.233.0.0/24 --gateway 10.233.0.1 oidcs-nat >/dev/null
  echo "dockerd: up in $netns (pid $(cat "$dir/docker.pid")), image $IMAGE, network oidcs-nat"
  ;;
stop)
  dir=$2
  if [ -s "$dir/docker.pid" ]; then
    pid=$(cat "$dir/docker.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  # Whatever dockerd left mounted under DIR (overlays, its own bind mounts).
  awk -v dir="$dir" 'index($2, dir) == 1 { print $2 }' /proc/mounts | sort -r |
    while read -r mount; do umount -l "$mount" 2>/dev/null || true; done
  rm -rf "$dir"
  ;;
*)
  echo "usage: $0 start NETNS DIR | stop DIR" >&2
  exit 2
  ;;
esac
