"""What a job's ``image_arg`` may put on QEMU's command line: its own images, nothing of the host.

A job's image_arg (``-drive format=raw,file={rootfs}``, ``-kernel {kernel}
-append "..."``) is parsed with shell rules, then option by option: only
the options below, only the keys listed for ``-drive`` and ``-device``, and
every file is exactly one of the job's images as ``{name}``, which becomes
the downloaded file in the job's directory. Anything naming a host path
(``file=/etc/shadow``, ``-blockdev``, ``-chardev``, a bare argument, which
QEMU would take as a disk) is refused when the job is validated. The
device's own default image_arg is the lab admin's and only substituted.

An image QEMU would open in a format that can name other files (a qcow2
backing file or external data file, vmdk extents, ...) is refused when the
boot starts: those names are host paths too.
"""

from __future__ import annotations

import functools
import re
import shlex
import struct
from pathlib import Path

from pipeline.errors import JobError

PLACEHOLDER = re.compile(r"\{([A-Za-z0-9][A-Za-z0-9._+-]*)\}")
SAFE_WORD = re.compile(r"^[A-Za-z0-9._-]+$")
# Options whose value is one image of the job, exactly "{name}".
FILE_OPTIONS = {"-kernel", "-initrd", "-dtb", "-hda", "-hdb", "-cdrom"}
DISK_OPTIONS = {"-hda", "-hdb", "-cdrom"}  # QEMU guesses their format from the content
OPTIONS = FILE_OPTIONS | {"-append", "-drive", "-device"}
# -drive keys (file: an image of the job; the others: a plain word).
DRIVE_KEYS = {"file", "format", "if", "media", "id", "index", "bus", "unit", "cache", "readonly", "discard"}
DRIVE_FORMATS = {"raw", "qcow2", "ext4"}
# A filesystem image is raw bytes to QEMU, which has no driver of that name: LAVA passes format=ext4 unchanged
# and QEMU refuses it ("Unknown driver 'ext4'"); here it is given as raw.
AS_RAW = {"ext4"}
# -device: storage front-ends for a -drive of the job (no loader, host, vfio or romfile).
DEVICE_DRIVERS = {"virtio-blk-device", "virtio-blk-pci", "virtio-blk", "scsi-hd", "scsi-cd", "ide-hd", "ide-cd",
                  "usb-storage", "virtio-scsi-pci", "virtio-scsi-device", "sd-card"}
DEVICE_KEYS = {"drive", "id", "bus", "bootindex", "serial", "lun", "scsi-id", "channel", "unit"}


def qemu_opts(text: str) -> list[tuple[str, str | None]]:
    """QEMU's ``key=value,key=value`` syntax (``,,`` is a comma inside a value); a bare word has no value."""
    items: list[tuple[str, str | None]] = []
    index = 0
    while index <= len(text):
        end = index
        while end < len(text) and text[end] not in "=,":
            end += 1
        name = text[index:end]
        if end < len(text) and text[end] == "=":
            value: list[str] = []
            end += 1
            while end < len(text):
                if text[end] == ",":
                    if text[end + 1:end + 2] != ",":
                        break
                    end += 1
                value.append(text[end])
                end += 1
            items.append((name, "".join(value)))
        else:
            items.append((name, None))
        index = end + 1
    return items


def _image(what: str, value: str, images: set[str]) -> list[str]:
    match = PLACEHOLDER.fullmatch(value)
    names = ", ".join("{" + name + "}" for name in sorted(images))
    if not match:
        return [f"{what}{value!r}: must be one of the job's images, written {names}"]
    if match.group(1) not in images:
        return [f"{what}{value!r}: this deploy has no image {match.group(1)!r} (it has {names})"]
    return []


def _keys(option: str, value: str, allowed: set[str], images: set[str], implied: str | None = None) -> list[str]:
    problems: list[str] = []
    seen: set[str] = set()
    for position, (key, text) in enumerate(qemu_opts(value)):
        if text is None and position == 0 and implied:
            key, text = implied, key
        if text is None:
            problems.append(f"{option} {value!r}: {key!r} needs a value (key=value)")
            continue
        if key in seen:
            problems.append(f"{option} {value!r}: {key!r} is given twice")
        seen.add(key)
        if key == implied:
            if text not in DEVICE_DRIVERS:
                problems.append(f"{option} {text!r} is not allowed (storage only: {', '.join(sorted(DEVICE_DRIVERS))})")
        elif key not in allowed:
            problems.append(f"{option} key {key!r} is not allowed (only {', '.join(sorted(allowed))})")
        elif key == "file":
            problems += _image(f"{option} file=", text, images)
        elif key == "format" and text not in DRIVE_FORMATS:
            problems.append(f"{option} format={text!r} is not allowed (only {', '.join(sorted(DRIVE_FORMATS))})")
        elif not SAFE_WORD.match(text):
            problems.append(f"{option} {key}={text!r}: letters, digits, '.', '_' and '-' only")
    return problems


def check_image_arg(template: str, images: set[str]) -> list[str]:
    """The problems of a job's image_arg; none when it only adds the job's own ``images``."""
    try:
        parts = shlex.split(template)
    except ValueError as exc:
        return [f"not valid shell quoting: {exc}"]
    problems: list[str] = []
    index = 0
    while index < len(parts):
        option = parts[index]
        if option not in OPTIONS:
            problems.append(f"{option!r} is not allowed (only {', '.join(sorted(OPTIONS))})" if option.startswith("-")
                            else f"{option!r} is not an option (QEMU would take a bare argument as a disk)")
            break  # the rest cannot be read without knowing what this takes
        if index + 1 >= len(parts):
            problems.append(f"{option} needs a value")
            break
        value = parts[index + 1]
        index += 2
        if option in FILE_OPTIONS:
            problems += _image(option + " ", value, images)
        elif option == "-drive":
            problems += _keys(option, value, DRIVE_KEYS, images)
        elif option == "-device":
            problems += _keys(option, value, DEVICE_KEYS, images, implied="driver")
        else:  # -append: the guest's kernel command line
            problems += [f"-append {value!r}: this deploy has no image {name!r}"
                         for name in PLACEHOLDER.findall(value) if name not in images]
    return problems


def substitute(template: str, paths: dict[str, Path]) -> tuple[list[str], list[tuple[Path, str | None]]]:
    """QEMU arguments with ``{name}`` replaced by the image's file, and the disks among them (path, format)."""
    argv: list[str] = []
    disks: list[tuple[Path, str | None]] = []
    previous = ""
    for part in shlex.split(template):
        drive = previous == "-drive"
        if drive:
            part = ",".join("format=raw" if item in {f"format={fmt}" for fmt in AS_RAW} else item
                            for item in part.split(","))
        argv.append(PLACEHOLDER.sub(functools.partial(_path, template, paths, drive=drive), part))
        opts = dict(qemu_opts(part)) if drive else {"file": part} if previous in DISK_OPTIONS else {}
        found = PLACEHOLDER.fullmatch(opts.get("file") or "")
        if found:
            disks.append((paths[found.group(1)], opts.get("format")))
        previous = part
    return argv, disks


def _path(template: str, paths: dict[str, Path], match: re.Match[str], drive: bool) -> str:
    path = paths.get(match.group(1))
    if path is None:
        raise JobError(f"image_arg {template!r}: this deploy has no image {match.group(1)!r}")
    return str(path).replace(",", ",,") if drive else str(path)  # in -drive, a comma would start a new key


def check_disk(path: Path, fmt: str | None) -> None:
    """Refuse a disk whose format (given, or guessed by QEMU) could make QEMU open another file of the host."""
    if fmt == "raw":
        return
    with open(path, "rb") as handle:
        head = handle.read(512)
    if head[:4] == b"QFI\xfb":
        version, backing = struct.unpack(">IQ", head[4:16])
        incompatible = struct.unpack(">Q", head[72:80])[0] if version >= 3 and len(head) >= 80 else 0
        if backing:
            raise JobError(f"{path.name}: a qcow2 image with a backing file (a path on the worker) is refused")
        if incompatible & 4:
            raise JobError(f"{path.name}: a qcow2 image with an external data file (a path on the worker) is refused")
    elif fmt is None and (head[:4] in (b"KDMV", b"COWD", b"QED\0") or head[:8] in (b"vhdxfile", b"conectix")
                          or head.startswith(b"# Disk DescriptorFile")):
        raise JobError(f"{path.name}: QEMU would open this disk as a format that names other files "
                       "(vmdk, qed, vhdx, vpc): give format=raw, or use a raw or qcow2 image")
