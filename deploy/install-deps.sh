#!/bin/bash
# Install what lava-dispatch needs on a Debian 12 machine: QEMU and the
# board tools from Debian, chromium (the dashboard's browser tests drive it
# with playwright, which downloads no browser of its own), the Python
# package (editable) with its test extras. Safe to run again: it installs only what is missing.
set -euo pipefail

DEBIAN_PACKAGES=(qemu-system-x86 qemu-system-arm qemu-utils u-boot-qemu u-boot-tools busybox-static
	socat telnet cpio kmod mtools fdisk e2fsprogs syslinux syslinux-common git redis-server redis-tools
	nfs-ganesha nfs-ganesha-vfs iproute2 python3-venv debootstrap chromium chromium-driver)

missing=()
for package in "${DEBIAN_PACKAGES[@]}"; do
	dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "install-deps: installing ${missing[*]}" >&2
	SUDO=""
	[ "$(id -u)" -eq 0 ] || SUDO=sudo
	export DEBIAN_FRONTEND=noninteractive
	$SUDO apt-get update -qq || echo "install-deps: apt-get update had errors; trying the install anyway" >&2
	$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c "import tasks.cli, celery, redis, pexpect, flower, prometheus_client, playwright" 2>/dev/null ||
	! command -v lava-dispatch >/dev/null || ! command -v qemu-board >/dev/null || [ "${FORCE_PIP:-}" = 1 ] ||
	[ pyproject.toml -nt "$("$PYTHON" -c "import importlib.metadata as m; print(m.distribution('lava-dispatch')._path)")" ]; then
	echo "install-deps: pip install -e .[test]" >&2
	"$PYTHON" -m pip install -q -e ".[test]"
fi
# An editable install is not byte-compiled: without .pyc files (or with
# PYTHONDONTWRITEBYTECODE set) every command compiles its modules again.
"$PYTHON" -m compileall -q pipeline tasks coordinator server
