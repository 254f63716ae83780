#!/usr/bin/env bash
# Build a small bootable Debian 12 (bookworm) cloud image from Debian packages
# only, for the real-VM tests:
#
#   tests/scripts/debian-image.sh <out_dir>   ->  <out_dir>/debian-12.qcow2
#
# The path of the image is the only line printed on stdout; progress goes to
# stderr. The image is cached: when <out_dir>/debian-12.qcow2 exists and
# <out_dir>/debian-12.qcow2.recipe holds the sha256 of this script, nothing is
# done. Editing this script is what makes it rebuild.
#
# What is in it: linux-image-cloud-amd64, systemd with systemd-networkd and
# systemd-resolved (cloud-init renders network-config v2 with its "networkd"
# renderer: no ifupdown, no netplan), cloud-init (NoCloud only) with
# cloud-guest-utils so growpart/resizefs grow the root file system on first
# boot, openssh-server (root may log in; PasswordAuthentication stays off
# unless cloud-init's `ssh_pwauth: true` turns it on), qemu-guest-agent.
# No sudo, no recommends, no man pages, docs or translations.
#
# Disk layout: 2 GiB virtual size, MBR, one ext4 partition from 1 MiB to the
# end (so growpart can extend it), GRUB (i386-pc, BIOS) in the MBR and the gap
# before the partition. The serial console is ttyS0 (and tty0).
#
# No loop device, nbd or mount is used: mmdebstrap fills a directory, sfdisk
# writes the partition table into a sparse raw file, mke2fs -d writes the ext4
# file system from the directory into the partition (-E offset=), and GRUB's
# boot.img and core.img (grub-mkimage) are written into the file with dd.
# Runs unattended as root; installs its own build tools with apt-get.
#
# Booting it: the cloud kernel has virtio (blk, net, scsi, console) and IDE
# (ata_piix) but no AHCI and no e1000. So give the VM a virtio NIC, and attach
# the NoCloud seed (label cidata/CIDATA, ISO or FAT) as a virtio disk, a
# virtio-scsi cdrom, or an IDE cdrom on the i440fx "pc" machine -- not a SATA
# cdrom on q35 (cloud-init then finds no seed and falls back to DataSourceNone).
set -euo pipefail

log() { echo "debian-image: [$((SECONDS))s] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[ $# -eq 1 ] || { echo "usage: $0 <out_dir>" >&2; exit 2; }

self=$(readlink -f "$0")
mkdir -p "$1"
out_dir=$(cd "$1" && pwd)
image="$out_dir/debian-12.qcow2"
recipe_file="$image.recipe"
recipe=$(sha256sum "$self" | cut -d' ' -f1)

if [ -f "$image" ] && [ -f "$recipe_file" ] && [ "$(cat "$recipe_file")" = "$recipe" ]; then
  log "up to date (recipe $recipe)"
  echo "$image"
  exit 0
fi

[ "$(id -u)" = 0 ] || die "must run as root (mmdebstrap --mode=root, chroot)"

DISK_SIZE_MIB=2048        # virtual size of the image
PART_START_MIB=1          # the partition starts at 1 MiB; GRUB's core.img lives before it
SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
PACKAGES=(
  linux-image-cloud-amd64 initramfs-tools
  systemd-sysv udev dbus systemd-resolved iproute2 netbase
  cloud-init cloud-guest-utils fdisk e2fsprogs
  openssh-server qemu-guest-agent
)

# --- build tools on the host --------------------------------------------------
need_pkgs=()
for p in mmdebstrap e2fsprogs fdisk qemu-utils grub-pc-bin grub-common; do
  dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' \
    || need_pkgs+=("$p")
done
if [ ${#need_pkgs[@]} -gt 0 ]; then
  log "installing build tools: ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends "${need_pkgs[@]}" >&2 \
    || { apt-get update >&2 && apt-get install -y --no-install-recommends "${need_pkgs[@]}" >&2; } \
    || die "could not install ${need_pkgs[*]}"
fi
grub_dir=/usr/lib/grub/i386-pc
[ -f "$grub_dir/boot.img" ] || die "$grub_dir/boot.img missing (grub-pc-bin)"

# --- work dir, removed on any exit ---------------------------------------------
work=$(mktemp -d "$out_dir/.debian-12.build.XXXXXX")
cleanup() {
  local rc=$?
  if [ -n "${work:-}" ] && [ -d "$work" ]; then
    # mmdebstrap unmounts what it mounted, also on failure; make sure, so that
    # rm never descends into a bind-mounted /dev or /proc.
    awk -v w="$work/" 'index($2, w) == 1 { print $2 }' /proc/mounts | sort -r \
      | while read -r m; do umount -l "$m" || true; done
    rm -rf --one-file-system "$work"
  fi
  [ "$rc" = 0 ] || log "FAILED (exit $rc); $image was not written"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

root="$work/root"
uuid=$(cat /proc/sys/kernel/random/uuid)

# --- root file system ---------------------------------------------------------
log "mmdebstrap $SUITE into $root"
customize=$(cat <<'EOF'
set -e
r="$1"
echo debian > "$r/etc/hostname"
printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' > "$r/etc/hosts"
# systemd-resolved's stub; DNS servers come from network-config via networkd
ln -sf ../run/systemd/resolve/stub-resolv.conf "$r/etc/resolv.conf"
# network-config v2 is rendered by cloud-init's networkd renderer
chroot "$r" systemctl enable systemd-networkd.service systemd-resolved.service
# quiet test VMs: no apt timers
chroot "$r" systemctl disable apt-daily.timer apt-daily-upgrade.timer
# cloud-init: NoCloud seeds only (no metadata-server probing)
# and the locale that needs no locale-gen (cloud-init's default en_US.UTF-8
# fails: Debian's locale-gen ignores its argument)
cat > "$r/etc/cloud/cloud.cfg.d/90_openidcs.cfg" <<'CFG'
datasource_list: [ NoCloud, None ]
locale: C.UTF-8
CFG
echo LANG=C.UTF-8 > "$r/etc/default/locale"
# sshd: root may log in; password logins only when cloud-init's ssh_pwauth
# says so (it writes sshd_config.d/50-cloud-init.conf, which is read first)
cat > "$r/etc/ssh/sshd_config.d/60-openidcs.conf" <<'CFG'
PermitRootLogin yes
PasswordAuthentication no
CFG
# per-instance host keys are made by cloud-init on first boot
rm -f "$r"/etc/ssh/ssh_host_*
# every clone gets its own machine-id on first boot
: > "$r/etc/machine-id"
rm -f "$r/var/lib/dbus/machine-id"
EOF
)
mmdebstrap --mode=root --variant=minbase --format=directory \
  --aptopt='APT::Install-Recommends "false"' \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-include=/usr/share/locale/locale.alias' \
  --include="$(IFS=,; echo "${PACKAGES[*]}")" \
  --customize-hook="$customize" \
  "$SUITE" "$root" \
  "deb $MIRROR $SUITE main" \
  "deb $MIRROR $SUITE-updates main" \
  "deb $SECURITY_MIRROR $SUITE-security main" >&2 \
  || die "mmdebstrap failed"
[ -e "$root/vmlinuz" ] && [ -e "$root/initrd.img" ] || die "no /vmlinuz or /initrd.img in the root"

printf 'UUID=%s\t/\text4\terrors=remount-ro\t0\t1\n' "$uuid" > "$root/etc/fstab"

# GRUB: modules and config on the root file system (same GRUB as core.img)
mkdir -p "$root/boot/grub"
cp -r "$grub_dir" "$root/boot/grub/i386-pc"
rm -f "$root/boot/grub/i386-pc/grub-bios-setup" "$root/boot/grub/i386-pc/grub-ntldr-img"
cat > "$root/boot/grub/grub.cfg" <<EOF
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
set default=0
set timeout=1
menuentry 'Debian GNU/Linux 12 (bookworm)' {
  search --no-floppy --fs-uuid --set=root $uuid
  linux /vmlinuz root=UUID=$uuid ro console=tty0 console=ttyS0,115200n8
  initrd /initrd.img
}
EOF

# --- disk ---------------------------------------------------------------------
part_mib=$((DISK_SIZE_MIB - PART_START_MIB))
raw="$work/disk.raw"
log "partition table; ext4 root file system ($part_mib MiB, UUID $uuid)"
truncate -s "${DISK_SIZE_MIB}M" "$raw"
printf 'label: dos\nunit: sectors\nstart=%d, type=83, bootable\n' $((PART_START_MIB * 2048)) \
  | sfdisk --quiet "$raw" >&2 || die "sfdisk failed"
# mke2fs writes the file system straight into the partition (offset), filled
# from the directory (-d). The feature list is spelled out (not taken from the
# host's mke2fs.conf) so that GRUB 2.06 can read it: no orphan_file, no
# metadata_csum_seed.
mke2fs -q -F -t ext4 -L rootfs -U "$uuid" \
  -E offset=$((PART_START_MIB * 1024 * 1024)),nodiscard \
  -O none,has_journal,ext_attr,resize_inode,dir_index,filetype,extent,64bit,flex_bg,sparse_super,large_file,huge_file,dir_nlink,extra_isize,metadata_csum \
  -d "$root" "$raw" "${part_mib}M" >&2 || die "mke2fs -d failed"
rm -rf --one-file-system "$root"

# GRUB's boot code, written the way grub-bios-setup would (it cannot be used
# on a plain file: it insists on probing the host device that holds its -d dir):
# - core.img goes to sectors 1.. (the gap before the partition). grub-mkimage
#   already sets its first blocklist to "start 2, len N-1, segment 0x820", which
#   is right for a contiguous copy at sector 1; no Reed-Solomon codes are added
#   (like grub-bios-setup --no-rs-codes).
# - boot.img's first 440 bytes go to the MBR (disk signature and partition
#   table stay). Its kernel_sector (0x5c) is already 1 and boot_drive (0x64)
#   0xff; the 2-byte jmp at 0x66 is replaced by nops, as grub-bios-setup does
#   for hard disks (use 0x80 when the BIOS passes a bogus drive).
mkdir -p "$work/grub"
cat > "$work/grub/load.cfg" <<EOF
search.fs_uuid $uuid root
set prefix=(\$root)/boot/grub
EOF
grub-mkimage -O i386-pc -d "$grub_dir" -c "$work/grub/load.cfg" -p /boot/grub \
  -o "$work/grub/core.img" biosdisk part_msdos ext2 search_fs_uuid || die "grub-mkimage failed"
core_sectors=$(( ($(stat -c %s "$work/grub/core.img") + 511) / 512 ))
[ "$core_sectors" -lt $((PART_START_MIB * 2048 - 1)) ] || die "core.img ($core_sectors sectors) does not fit before the partition"
[ "$(od -An -tx1 -j $((0x66)) -N1 "$grub_dir/boot.img" | tr -d ' ')" = eb ] \
  || die "unexpected $grub_dir/boot.img (no jmp at 0x66)"
cp "$grub_dir/boot.img" "$work/grub/mbr.img"
printf '\x90\x90' | dd of="$work/grub/mbr.img" bs=1 seek=$((0x66)) conv=notrunc status=none
dd if="$work/grub/core.img" of="$raw" bs=512 seek=1 conv=notrunc status=none
dd if="$work/grub/mbr.img" of="$raw" bs=440 count=1 conv=notrunc status=none
sfdisk --dump "$raw" | grep -q "start= *$((PART_START_MIB * 2048)),.*bootable" || die "partition table damaged"

# --- qcow2 --------------------------------------------------------------------
log "qcow2"
qemu-img convert -f raw -O qcow2 "$raw" "$work/debian-12.qcow2" || die "qemu-img convert failed"
rm -f "$raw"
mv -f "$work/debian-12.qcow2" "$image"
echo "$recipe" > "$recipe_file"
log "built $image ($(du -m "$image" | cut -f1) MiB on disk, ${DISK_SIZE_MIB} MiB virtual)"
echo "$image"
