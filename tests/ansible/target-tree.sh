#!/bin/bash
# Build (once) the Debian tree the Ansible test deploys into, and print its path.
#
# A bookworm minbase tree (debootstrap) plus what any Debian server a lab
# deploys to has: python3 (Ansible's modules run with it) and systemd (unit
# directories, `systemctl enable` works offline in a chroot). Nothing the
# roles install is in it: each test run deploys into a fresh copy of it.
# Services are never started by package scripts in the tree (policy-rc.d),
# as in a container image.
#
# The tree is cached in ${LAVA_DISPATCH_CACHE:-~/.cache/lava-dispatch}/ansible-target/,
# keyed by this script's text (the suite, the package list, the mirror):
# change any of them and a new tree is built. Needs root and debootstrap.
set -euo pipefail

SUITE=bookworm
MIRROR=${LAVA_DISPATCH_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${LAVA_DISPATCH_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
INCLUDE=python3,systemd

CACHE=${LAVA_DISPATCH_CACHE:-$HOME/.cache/lava-dispatch}/ansible-target
KEY=$( { cat "$0"; echo "$MIRROR $SECURITY_MIRROR"; } | sha256sum | cut -c1-12)
TREE=$CACHE/$SUITE-$KEY
if [ -e "$TREE/.complete" ]; then
	echo "$TREE"
	exit 0
fi

command -v debootstrap >/dev/null || { echo "target-tree: debootstrap is not installed (apt-get install debootstrap)" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "target-tree: debootstrap needs root" >&2; exit 1; }
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9
if [ -e "$TREE/.complete" ]; then  # built by another run meanwhile
	echo "$TREE"
	exit 0
fi
BUILD=$CACHE/.build-$KEY
rm -rf "$BUILD"
echo "target-tree: debootstrap --variant=minbase --include=$INCLUDE $SUITE (a few minutes, once)" >&2
debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$BUILD" "$MIRROR" >"$CACHE/debootstrap-$KEY.log" 2>&1 || {
	tail -n 20 "$CACHE/debootstrap-$KEY.log" >&2
	exit 1
}
cat >"$BUILD/etc/apt/sources.list" <<SOURCES
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb $SECURITY_MIRROR $SUITE-security main
SOURCES
# As in a container image: no package script starts a service in the tree.
printf '#!/bin/sh\nexit 101\n' >"$BUILD/usr/sbin/policy-rc.d"
chmod 0755 "$BUILD/usr/sbin/policy-rc.d"
echo lab-target >"$BUILD/etc/hostname"
chroot "$BUILD" apt-get clean
touch "$BUILD/.complete"
rm -rf "$TREE"
mv "$BUILD" "$TREE"
echo "$TREE"
