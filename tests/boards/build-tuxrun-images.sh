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

for arch in x86_64 arm64; do
	tree=$SCRATCH/$arch
	mkdir -p "$tree" "$SCRATCH/out/$arch"
	(cd "$tree" && gzip -dc "$IMAGES/$arch/initrd.cpio.gz" | cpio -idm --quiet)
	install -m 0755 "$SCRATCH/init" "$tree/init"
	(cd "$tree" && find . | LC_ALL=C sort | cpio -o -H newc --quiet) | gzip -9 >"$SCRATCH/out/$arch/rootfs.cpio.gz"
done
cp "$IMAGES/x86_64/bzImage" "$SCRATCH/out/x86_64/bzImage"
cp "$IMAGES/arm64/Image" "$SCRATCH/out/arm64/Image"
echo "$STAMP" >"$SCRATCH/out/.stamp"
rm -rf "$OUT.old"
[ -d "$OUT" ] && mv "$OUT" "$OUT.old"
mv "$SCRATCH/out" "$OUT"
rm -rf "$OUT.old"
echo "tuxrun images built in $OUT"
echo "$OUT"
