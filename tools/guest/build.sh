#!/bin/sh
# Builds snapdeploy's demo guest from Debian packages only (linux-image-cloud-amd64 and
# busybox-static; `make install` installs both): the cloud kernel and its initrd for a direct
# kernel boot, and a 32 MiB qcow2 root disk holding an ext4 file system of 24 MiB with busybox
# as the whole userland and tools/guest/init as /sbin/init.
#
#   tools/guest/build.sh OUTPUT_DIR
#
# OUTPUT_DIR gets vmlinuz, initrd.img and root.qcow2, replaced together once all are built.
# Boot with: root=/dev/vda ro console=ttyS0 (see shared/drivers/libvirt.py, GUEST_CMDLINE).
set -eu

out=${1:?usage: tools/guest/build.sh OUTPUT_DIR}
here=$(cd "$(dirname "$0")" && pwd)

kernel=$(ls /boot/vmlinuz-*-cloud-amd64 2>/dev/null | sort -V | tail -n 1)
[ -n "$kernel" ] || { echo "no cloud kernel in /boot: apt-get install linux-image-cloud-amd64" >&2; exit 1; }
initrd=/boot/initrd.img-${kernel#/boot/vmlinuz-}
[ -f "$initrd" ] || { echo "no $initrd: update-initramfs -c -k ${kernel#/boot/vmlinuz-}" >&2; exit 1; }
busybox=$(command -v busybox) || { echo "no busybox: apt-get install busybox-static" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root/bin" "$root/sbin" "$root/proc" "$root/sys" "$root/dev" "$root/tmp"
cp "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list); do
    [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
done
install -m 0755 "$here/init" "$root/sbin/init"

# The file system ends at 24 MiB; the guest's marker sector lies at 31 MiB.
truncate -s 32M "$work/root.raw"
mke2fs -q -F -t ext4 -L snapdeploy-root -d "$root" "$work/root.raw" 24M
qemu-img convert -f raw -O qcow2 "$work/root.raw" "$work/root.qcow2"

mkdir -p "$work/out"
cp "$kernel" "$work/out/vmlinuz"
cp "$initrd" "$work/out/initrd.img"
mv "$work/root.qcow2" "$work/out/root.qcow2"
rm -rf "$out.tmp"
mkdir -p "$(dirname "$out")"
mv "$work/out" "$out.tmp"
rm -rf "$out"
mv "$out.tmp" "$out"
echo "guest image built in $out"
