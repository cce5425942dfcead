#!/bin/bash
# Build the kernels, initramfs, disk image, device trees and NFS root
# tarballs of the emulated test boards (x86_64, arm64, arm) from Debian
# packages, into ${LAVA_DISPATCH_IMAGES:-$HOME/.cache/lava-dispatch/images}.
#
# No mounts, loop devices or debootstrap: guest packages are fetched with
# `apt-get download` and unpacked with `dpkg -x`. Rebuilds only when this
# script or its helpers changed (sha256 stamp). The last line printed is the
# output directory. See tests/boards/README.md.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
IMAGES=${LAVA_DISPATCH_IMAGES:-$HOME/.cache/lava-dispatch/images}
HELPERS=(build-images.sh init extract-vmlinux.py pick-modules.py)
OUTPUTS=(
	x86_64/vmlinux x86_64/bzImage x86_64/initrd.cpio x86_64/initrd.cpio.gz
	x86_64/disk.img x86_64/disk.img.gz x86_64/rootfs.tar.gz
	arm64/Image arm64/initrd.cpio.gz arm64/initrd.u-boot arm64/virt.dtb
	arm64/rootfs.tar.gz
	arm/zImage arm/uImage arm/initrd.cpio.gz arm/initrd.u-boot arm/virt.dtb
	arm/rootfs.tar.gz
	manifest.txt
)

# Modules carried by every initramfs. BOOT ones are loaded by /init on every
# boot, NFS ones when booting an NFS root; EXTRA ones are only shipped, for
# `modprobe` or the lava_modules= kernel parameter.
BOOT_MODULES=virtio_pci,virtio_mmio,virtio_blk,virtio_net
NFS_MODULES=nfsv4
EXTRA_MODULES=virtio_scsi,virtio_console,virtio_rng,loop,sd_mod,sr_mod,ahci,ata_piix,usb-storage,ehci-pci,ehci-platform,xhci-pci,xhci-plat-hcd,vfat,nls_cp437,nls_ascii,nls_iso8859-1,ext4,isofs

# The QEMU command lines of the ARM boards, as the device configurations use
# them; the device trees are dumped from exactly these.
ARM64_QEMU=(qemu-system-aarch64 -M virt -cpu cortex-a57 -m 512
	-bios /usr/lib/u-boot/qemu_arm64/u-boot.bin -nographic -nodefaults
	-netdev user,id=n0 -device virtio-net-device,netdev=n0)
ARM_QEMU=(qemu-system-arm -M virt -m 512
	-bios /usr/lib/u-boot/qemu_arm/u-boot.bin -nographic -nodefaults
	-netdev user,id=n0 -device virtio-net-device,netdev=n0)

log() { echo "build-images: $*" >&2; }
die() {
	log "error: $*"
	exit 1
}

stamp_of() { (cd "$HERE" && cat "${HELPERS[@]}") | sha256sum | cut -d' ' -f1; }

up_to_date() {
	[ -f "$IMAGES/.stamp" ] || return 1
	[ "$(cat "$IMAGES/.stamp")" = "$STAMP" ] || return 1
	local f
	for f in "${OUTPUTS[@]}"; do
		[ -s "$IMAGES/$f" ] || return 1
	done
}

STAMP=$(stamp_of)
if up_to_date; then
	echo "images up to date in $IMAGES"
	echo "$IMAGES"
	exit 0
fi

PARENT=$(dirname "$IMAGES")
mkdir -p "$PARENT"
# One build at a time; a concurrent build that finished first wins.
exec 9>"$IMAGES.lock"
flock 9
if up_to_date; then
	echo "images up to date in $IMAGES"
	echo "$IMAGES"
	exit 0
fi

START=$(date +%s)
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/lava-images.XXXXXX")
OUT=$(mktemp -d "$IMAGES.new.XXXXXX")
declare -A PIDS=()
cleanup() {
	local p
	# Each board job runs in its own process group (set -m): end it whole.
	for p in "${PIDS[@]}"; do kill -TERM -- "-$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$SCRATCH" "$OUT" "$IMAGES.old.$$"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- host tools
SUDO=
[ "$(id -u)" = 0 ] || SUDO=sudo
apt_install() {
	log "installing host packages: $*"
	if ! $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
		--no-install-recommends "$@" >"$SCRATCH/apt.log" 2>&1; then
		$SUDO apt-get update -q >>"$SCRATCH/apt.log" 2>&1 || true
		$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
			--no-install-recommends "$@" >>"$SCRATCH/apt.log" 2>&1 ||
			{
				cat "$SCRATCH/apt.log" >&2
				die "cannot install $*"
			}
	fi
}
need=()
need_cmd() { command -v "$1" >/dev/null 2>&1 || need+=("$2"); }
need_file() { [ -e "$1" ] || need+=("$2"); }
need_cmd cpio cpio
need_cmd depmod kmod
need_cmd mkimage u-boot-tools
need_cmd qemu-system-aarch64 qemu-system-arm
need_cmd qemu-system-arm qemu-system-arm
need_file /usr/lib/u-boot/qemu_arm64/u-boot.bin u-boot-qemu
need_file /usr/lib/u-boot/qemu_arm/u-boot.bin u-boot-qemu
need_cmd mformat mtools
need_cmd sfdisk fdisk
need_cmd syslinux syslinux
need_file /usr/lib/syslinux/mbr/mbr.bin syslinux-common
need_cmd lz4 lz4
need_cmd python3 python3
need_cmd flock util-linux
if [ ${#need[@]} -gt 0 ]; then
	apt_install $(printf '%s\n' "${need[@]}" | sort -u)
fi

# ------------------------------------------------------- guest packages
# The current kernel ABI package of each flavour, from its metapackage
# (one apt-cache call: each call rebuilds apt's cache, about 2 s).
META=(linux-image-cloud-amd64:amd64 linux-image-arm64:arm64 linux-image-armmp:armhf)
resolve_kernels() {
	apt-cache depends "${META[@]}" 2>/dev/null | awk '
		/^[^ ]/ { pkg = $1; sub(/:amd64$/, "", pkg) }
		$1 ~ /Depends:$/ && $2 ~ /^linux-image-[0-9]/ && !(pkg in seen) { seen[pkg] = 1; print pkg, $2 }'
}
kernel_of() { awk -v m="$1" '$1 == m || $1 == m ":amd64" { print $2; exit }' <<<"$KERNELS"; }
KERNELS=$(resolve_kernels)
if [ "$(wc -l <<<"$KERNELS")" -lt 3 ]; then
	foreign=$(dpkg --print-foreign-architectures)
	for a in arm64 armhf; do
		grep -qx "$a" <<<"$foreign" || $SUDO dpkg --add-architecture "$a"
	done
	log "apt-get update (for the arm64/armhf package lists)"
	$SUDO apt-get update -q >"$SCRATCH/update.log" 2>&1 ||
		log "apt-get update reported errors (carrying on): $(tail -1 "$SCRATCH/update.log")"
	KERNELS=$(resolve_kernels)
fi
K_AMD64=$(kernel_of linux-image-cloud-amd64)
K_ARM64=$(kernel_of linux-image-arm64:arm64)
K_ARMHF=$(kernel_of linux-image-armmp:armhf)
[ -n "$K_AMD64" ] && [ -n "$K_ARM64" ] && [ -n "$K_ARMHF" ] ||
	die "cannot resolve the kernel packages (amd64='$K_AMD64' arm64='$K_ARM64' armhf='$K_ARMHF')"
K_AMD64=${K_AMD64%:amd64}:amd64
K_ARM64=${K_ARM64%:arm64}:arm64
K_ARMHF=${K_ARMHF%:armhf}:armhf
log "kernels: $K_AMD64 $K_ARM64 $K_ARMHF"

DEBS=$SCRATCH/debs
mkdir -p "$DEBS"
APT_DL=(apt-get -q download)
# apt drops privileges to _apt for downloads, which cannot write to a
# private temp dir; as root, download as root instead.
[ "$(id -u)" = 0 ] && APT_DL=(apt-get -q -o APT::Sandbox::User=root download)
pkgs=("$K_AMD64" "$K_ARM64" "$K_ARMHF" busybox-static:amd64 busybox-static:arm64 busybox-static:armhf)
for try in 1 2 3; do
	if (cd "$DEBS" && "${APT_DL[@]}" "${pkgs[@]}") >"$SCRATCH/download.log" 2>&1; then
		break
	fi
	[ $try = 3 ] && {
		cat "$SCRATCH/download.log" >&2
		die "apt-get download failed"
	}
	log "apt-get download failed (try $try), updating the lists and retrying"
	$SUDO apt-get update -q >"$SCRATCH/update.log" 2>&1 || true
done

deb_of() { # PACKAGE ARCH
	local f
	f=$(ls "$DEBS/$1"_*_"$2".deb 2>/dev/null | head -1)
	[ -n "$f" ] || die "no .deb for $1 ($2)"
	echo "$f"
}
unpack() { # PACKAGE ARCH -> prints the unpack dir
	local d=$SCRATCH/x/$1-$2
	mkdir -p "$d"
	dpkg -x "$(deb_of "$1" "$2")" "$d"
	echo "$d"
}

# ------------------------------------------------------- root filesystems
BB_AMD64=$(unpack busybox-static amd64)
# The applet list is the same for all architectures (one source package,
# one configuration); read it from the amd64 binary.
APPLETS=$("$BB_AMD64/bin/busybox" --list-full 2>/dev/null || true)

# make_tree ARCH KROOT KVER BUSYBOX STAGE_NAME DIR
make_tree() {
	local arch=$1 kroot=$2 kver=$3 busybox=$4 stage=$5 dir=$6 a
	mkdir -p "$dir"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,run,mnt,newroot,var/log,tmp,root}
	chmod 1777 "$dir/tmp"
	chmod 0700 "$dir/root"
	install -m 0755 "$busybox" "$dir/bin/busybox"
	while read -r a; do
		case $a in "" | bin/busybox | sbin/init | linuxrc) continue ;; esac
		[ -e "$dir/$a" ] || ln -s /bin/busybox "$dir/$a"
	done <<<"$APPLETS"
	ln -sf busybox "$dir/bin/sh"
	install -m 0755 "$HERE/init" "$dir/init"
	ln -sf /init "$dir/sbin/init"
	cat >"$dir/etc/passwd" <<-'EOF'
		root:x:0:0:root:/root:/bin/sh
		nobody:x:65534:65534:nobody:/nonexistent:/bin/false
	EOF
	cat >"$dir/etc/group" <<-'EOF'
		root:x:0:
		nogroup:x:65534:
	EOF
	cat >"$dir/etc/shadow" <<-'EOF'
		root::0:0:99999:7:::
	EOF
	chmod 0600 "$dir/etc/shadow"
	cat >"$dir/etc/profile" <<-'EOF'
		export PATH=/sbin:/usr/sbin:/bin:/usr/bin
		export HOME=/root
		export PS1='root@lava-board:~# '
	EOF
	echo lava-board >"$dir/etc/hostname"
	printf '127.0.0.1\tlocalhost\n127.0.1.1\tlava-board\n10.0.2.2\tlava-host\n' >"$dir/etc/hosts"
	echo "nameserver 10.0.2.3" >"$dir/etc/resolv.conf"
	cat >"$dir/etc/lava-board-release" <<-EOF
		LAVA_BOARD_STAGE=$stage
		LAVA_BOARD_ARCH=$arch
		LAVA_BOARD_KERNEL=$kver
	EOF
	python3 "$HERE/pick-modules.py" "$kroot" "$kver" "$dir" \
		"lava-boot.modules=$BOOT_MODULES" "lava-nfs.modules=$NFS_MODULES" \
		"-=$EXTRA_MODULES"
	depmod -b "$dir" "$kver"
}

# pack_cpio DIR OUTPUT (uncompressed newc, root-owned, sorted)
pack_cpio() {
	(cd "$1" && find . -mindepth 1 | LC_ALL=C sort |
		cpio --quiet -o -H newc -R 0:0 --reproducible) >"$2"
}
pack_tar() {
	tar -C "$1" --numeric-owner --owner=0 --group=0 --sort=name \
		-cf - . | gzip -n -6 >"$2"
}

# board_fs DEBARCH OUTDIR KERNELPKG: unpacks the kernel, builds the
# initramfs (initrd.cpio, initrd.cpio.gz) and rootfs.tar.gz in $OUT/OUTDIR;
# sets KROOT and KVER.
board_fs() {
	local debarch=$1 outdir=$2 kpkg=${3%%:*} bb
	KROOT=$(unpack "$kpkg" "$debarch")
	KVER=$(ls "$KROOT/lib/modules")
	depmod -b "$KROOT" "$KVER"
	if [ "$debarch" = amd64 ]; then bb=$BB_AMD64; else bb=$(unpack busybox-static "$debarch"); fi
	make_tree "$debarch" "$KROOT" "$KVER" "$bb/bin/busybox" initramfs "$SCRATCH/initramfs-$debarch"
	make_tree "$debarch" "$KROOT" "$KVER" "$bb/bin/busybox" rootfs "$SCRATCH/rootfs-$debarch"
	mkdir -p "$OUT/$outdir"
	pack_cpio "$SCRATCH/initramfs-$debarch" "$OUT/$outdir/initrd.cpio"
	gzip -n -6 <"$OUT/$outdir/initrd.cpio" >"$OUT/$outdir/initrd.cpio.gz"
	pack_tar "$SCRATCH/rootfs-$debarch" "$OUT/$outdir/rootfs.tar.gz"
	echo "$outdir ${3%%:*} $KVER" >"$SCRATCH/version-$outdir"
}

build_x86_64() {
	board_fs amd64 x86_64 "$K_AMD64"
	cp "$KROOT/boot/vmlinuz-$KVER" "$OUT/x86_64/bzImage"
	python3 "$HERE/extract-vmlinux.py" "$OUT/x86_64/bzImage" "$OUT/x86_64/vmlinux"

	# Bootable disk: MBR + syslinux, one FAT16 partition from 1 MiB to 64 MiB.
	local disk=$OUT/x86_64/disk.img sectors
	truncate -s 64M "$disk"
	printf 'label: dos\nstart=2048, type=6, bootable\n' | sfdisk -q "$disk" >/dev/null
	sectors=$(($(stat -c %s "$disk") / 512 - 2048))
	mformat -i "$disk@@1M" -T "$sectors" -H 2048 -h 64 -s 32 -v LAVABOOT ::
	cat >"$SCRATCH/syslinux.cfg" <<-'EOF'
		SERIAL 0 115200
		DEFAULT lava
		PROMPT 0
		TIMEOUT 0
		LABEL lava
		  LINUX /bzImage
		  INITRD /initrd.cpio.gz
		  APPEND console=ttyS0 panic=-1 quiet
	EOF
	mcopy -i "$disk@@1M" "$OUT/x86_64/bzImage" "$OUT/x86_64/initrd.cpio.gz" \
		"$SCRATCH/syslinux.cfg" ::
	syslinux --install --offset $((2048 * 512)) "$disk"
	dd if=/usr/lib/syslinux/mbr/mbr.bin of="$disk" bs=440 count=1 conv=notrunc status=none
	gzip -n -6 <"$disk" >"$disk.gz"
}

build_arm64() {
	board_fs arm64 arm64 "$K_ARM64"
	# vmlinuz is a plain Image on Debian 12; gunzip it where it is gzipped.
	if [ "$(od -An -tx1 -N2 "$KROOT/boot/vmlinuz-$KVER" | tr -d ' ')" = 1f8b ]; then
		gunzip -c "$KROOT/boot/vmlinuz-$KVER" >"$OUT/arm64/Image"
	else
		cp "$KROOT/boot/vmlinuz-$KVER" "$OUT/arm64/Image"
	fi
	rm "$OUT/arm64/initrd.cpio"
	mkimage -A arm64 -O linux -T ramdisk -C none -n "lava-board arm64 initramfs" \
		-d "$OUT/arm64/initrd.cpio.gz" "$OUT/arm64/initrd.u-boot" >/dev/null
	"${ARM64_QEMU[@]}" -machine dumpdtb="$OUT/arm64/virt.dtb" >/dev/null 2>&1 ||
		die "qemu-system-aarch64 could not dump the device tree"
}

build_arm() {
	board_fs armhf arm "$K_ARMHF"
	cp "$KROOT/boot/vmlinuz-$KVER" "$OUT/arm/zImage"
	rm "$OUT/arm/initrd.cpio"
	# RAM of the virt machine starts at 0x40000000: bootm copies the zImage
	# to 0x40008000 (the usual text offset) and the zImage relocates itself
	# out of the way when it decompresses.
	mkimage -A arm -O linux -T kernel -C none -a 0x40008000 -e 0x40008000 \
		-n "lava-board arm $KVER" -d "$OUT/arm/zImage" "$OUT/arm/uImage" >/dev/null
	mkimage -A arm -O linux -T ramdisk -C none -n "lava-board arm initramfs" \
		-d "$OUT/arm/initrd.cpio.gz" "$OUT/arm/initrd.u-boot" >/dev/null
	"${ARM_QEMU[@]}" -machine dumpdtb="$OUT/arm/virt.dtb" >/dev/null 2>&1 ||
		die "qemu-system-arm could not dump the device tree"
}

# The three boards build in parallel (2 cores: unpacking the kernel debs
# dominates), each logging to its own file.
set -m
for b in x86_64 arm64 arm; do
	log "building $b"
	("build_$b") </dev/null >"$SCRATCH/build-$b.log" 2>&1 &
	PIDS[$b]=$!
done
set +m
failed=
for b in x86_64 arm64 arm; do
	if ! wait "${PIDS[$b]}"; then
		log "building $b failed:"
		cat "$SCRATCH/build-$b.log" >&2
		failed=1
	fi
	unset "PIDS[$b]"
done
[ -z "$failed" ] || die "build failed"
grep -h 'pick-modules:' "$SCRATCH"/build-*.log | sort -u >&2 || true

# ---------------------------------------------------------------- finish
{
	cat "$SCRATCH/version-x86_64" "$SCRATCH/version-arm64" "$SCRATCH/version-arm"
	echo "busybox-static busybox-static $(dpkg-deb -f "$(deb_of busybox-static amd64)" Version)"
} >"$OUT/versions.txt"
(cd "$OUT" && for f in "${OUTPUTS[@]}" versions.txt; do
	[ "$f" = manifest.txt ] && continue
	[ -s "$f" ] || die "missing output $f"
	printf '%s %s %s\n' "$f" "$(stat -c %s "$f")" "$(sha256sum <"$f" | cut -d' ' -f1)"
done) >"$OUT/manifest.txt"
echo "$STAMP" >"$OUT/.stamp"
chmod 0755 "$OUT"

# Swap the new tree in: the cache is either the old complete tree, absent
# (rebuilt by the next run), or the new complete tree.
if [ -e "$IMAGES" ]; then
	mv "$IMAGES" "$IMAGES.old.$$"
fi
mv "$OUT" "$IMAGES"
rm -rf "$IMAGES.old.$$"
log "built in $(($(date +%s) - START)) s: $(awk '{print $1 "=" $3}' "$IMAGES/versions.txt" | tr '\n' ' ')"
echo "$IMAGES"
