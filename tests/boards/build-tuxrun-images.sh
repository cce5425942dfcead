#!/bin/bash
# The images of the tuxrun boot tests (tests/test_lava_run.py): for x86_64
# and arm64, the boards' Debian kernel and a busybox rootfs.cpio.gz whose
# /init behaves like the root filesystems tuxrun boots: a login prompt that
# takes a user name only, then a shell prompt followed by an escape sequence
# (no newline). The busybox tree is the boards' initramfs
# (build-images.sh, from Debian's busybox-static), given this /init.
# Output: ${LAVA_DISPATCH_TUXRUN_IMAGES:-$HOME/.cache/lava-dispatch/tuxrun-images};
# the last line printed is that directory. Rebuilt only when this script or
# the boards' images changed.
# Also x86_64/lava-initrd.cpio.gz, for running one job on LAVA 2023.01 and
# on our engine (tests/test_lava_2023.py): no login, the boards' prompt, and
# the test overlay found either way: LAVA's qcow2 guest disk (IDE, mounted
# by LAVA through /dev/disk/by-uuid, which this init creates) or our raw tar
# drive (virtio).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=${LAVA_DISPATCH_TUXRUN_IMAGES:-$HOME/.cache/lava-dispatch/tuxrun-images}
IMAGES=$(bash "$HERE/build-images.sh" | tail -1)
STAMP=$( (cat "${BASH_SOURCE[0]}" "$IMAGES/manifest.txt") | sha256sum | cut -d' ' -f1)
if [ -f "$OUT/.stamp" ] && [ "$(cat "$OUT/.stamp")" = "$STAMP" ]; then
	echo "tuxrun images up to date in $OUT"
	echo "$OUT"
	exit 0
fi
mkdir -p "$(dirname "$OUT")"
exec 9>"$OUT.lock"
flock 9
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/tuxrun-images.XXXXXX")
trap 'rm -rf "$SCRATCH"' EXIT

cat >"$SCRATCH/init" <<'INIT'
#!/bin/sh
# A tuxrun-like root filesystem: log in as root (no password), then a prompt
# that ends with an escape sequence, as bash's bracketed-paste mode sends.
PATH=/sbin:/usr/sbin:/bin:/usr/bin
HOME=/root
export PATH HOME
mkdir -p /proc /sys /dev /tmp /root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
hostname tuxrun
echo "tuxrun: init done"
while true; do
	printf '\ntuxrun login: '
	read -r user || continue
	[ "$user" = root ] && break
	echo "Login incorrect"
done
PS1="root@tuxrun:~# $(printf '\033[?2004h')"
export PS1
cd /root
while true; do setsid cttyhack sh; done
INIT

cat >"$SCRATCH/lava-init" <<'INIT'
#!/bin/sh
PATH=/sbin:/usr/sbin:/bin:/usr/bin
HOME=/root
export PATH HOME
mkdir -p /proc /sys /dev /tmp /root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
hostname lava-board
for m in virtio_pci virtio_blk ata_piix sd_mod ext4; do modprobe "$m" 2>/dev/null; done
# Wait (up to 10 s) for the job's disk: LAVA's IDE guest disk or our virtio overlay drive.
i=0
while [ $i -lt 100 ] && ! [ -b /dev/sda ] && ! [ -b /dev/vda ]; do
	sleep 0.1
	i=$((i + 1))
done
# /dev/disk/by-uuid for an ext2/3/4 disk (no blkid applet here: the UUID is read from the superblock).
mkdir -p /dev/disk/by-uuid
for dev in /dev/sd? /dev/vd?; do
	[ -b "$dev" ] || continue
	[ "$(od -An -tx1 -j1080 -N2 "$dev" 2>/dev/null | tr -d ' \n')" = 53ef ] || continue
	u=$(od -An -tx1 -j1128 -N16 "$dev" | tr -d ' \n')
	uuid=$(echo "$u" | sed 's/^\(........\)\(....\)\(....\)\(....\)\(............\)$/\1-\2-\3-\4-\5/')
	ln -sf "$dev" "/dev/disk/by-uuid/$uuid"
done
echo "lava-board: init done"
PS1='root@lava-board:~# '
export PS1
cd /root
while true; do setsid cttyhack sh; done
INIT

for arch in x86_64 arm64; do
	tree=$SCRATCH/$arch
	mkdir -p "$tree" "$SCRATCH/out/$arch"
	(cd "$tree" && gzip -dc "$IMAGES/$arch/initrd.cpio.gz" | cpio -idm --quiet)
	install -m 0755 "$SCRATCH/init" "$tree/init"
	(cd "$tree" && find . | LC_ALL=C sort | cpio -o -H newc --quiet) | gzip -9 >"$SCRATCH/out/$arch/rootfs.cpio.gz"
done
tree=$SCRATCH/x86_64
install -m 0755 "$SCRATCH/lava-init" "$tree/init"
(cd "$tree" && find . | LC_ALL=C sort | cpio -o -H newc --quiet) | gzip -9 >"$SCRATCH/out/x86_64/lava-initrd.cpio.gz"
cp "$IMAGES/x86_64/bzImage" "$SCRATCH/out/x86_64/bzImage"
cp "$IMAGES/arm64/Image" "$SCRATCH/out/arm64/Image"
echo "$STAMP" >"$SCRATCH/out/.stamp"
rm -rf "$OUT.old"
[ -d "$OUT" ] && mv "$OUT" "$OUT.old"
mv "$SCRATCH/out" "$OUT"
rm -rf "$OUT.old"
echo "tuxrun images built in $OUT"
echo "$OUT"
