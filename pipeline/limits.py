"""Size limits on what a job makes the worker fetch and unpack.

Everything a job fetches is hostile input, so each limit bounds bytes on
disk, not what a header claims. The lab admin sets them in the worker's
environment; each is read when used, so a change needs no restart of the
code that reads it. Values are a byte count with an optional K, M, G or T
suffix (powers of 1024): ``LAVA_DISPATCH_MAX_IMAGE_BYTES=16G``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from pipeline.errors import ConfigurationError, JobError

KIB, MIB, GIB = 1024, 1024**2, 1024**3

# name: (default, what it bounds)
LIMITS: dict[str, tuple[int, str]] = {
    "LAVA_DISPATCH_MAX_DOWNLOAD_BYTES": (8 * GIB, "bytes fetched for one URL, as published (compressed)"),
    "LAVA_DISPATCH_MAX_IMAGE_BYTES": (8 * GIB, "bytes one image or NFS root tarball unpacks to"),
    "LAVA_DISPATCH_MAX_ROOTFS_FILES": (1_000_000, "entries of an NFS root tarball"),
    "LAVA_DISPATCH_MAX_TESTDEF_BYTES": (256 * MIB, "bytes of one test definition repository or tarball"),
    "LAVA_DISPATCH_MAX_TESTDEF_FILES": (10_000, "entries of one test definition repository or tarball"),
}
# A test definition file itself (the YAML the dispatcher parses): not settable, no real one comes close.
TESTDEF_FILE_BYTES = 16 * MIB
# A tar metadata member (a long name, a pax header) is read into memory whole: real ones are tiny.
TAR_METADATA_BYTES = 1 * MIB

_VALUE = re.compile(r"^\s*(\d+)\s*([KMGT]?)i?B?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "K": KIB, "M": MIB, "G": GIB, "T": 1024**4}


def limit(name: str) -> int:
    """The limit ``name`` (one of LIMITS) from the environment, else its default."""
    default, _what = LIMITS[name]
    text = os.environ.get(name)
    if text is None or not text.strip():
        return default
    match = _VALUE.match(text)
    if not match or int(match.group(1)) <= 0:
        raise ConfigurationError(f"{name}={text!r}: expected a positive byte count such as 1073741824 or 1G")
    return int(match.group(1)) * _UNITS[match.group(2).upper()]


@dataclass(frozen=True)
class Bound:
    """A limit and the setting that changes it, named when the limit is passed."""

    value: int
    setting: str = ""

    def check(self, amount: int, what: str, doing: str, unit: str = "bytes") -> None:
        """A JobError such as ``URL: unpacks to more than 8589934592 bytes (...)`` once ``amount`` passes the limit."""
        if amount > self.value:
            hint = f" (the limit is set by {self.setting})" if self.setting else ""
            raise JobError(f"{what}: {doing} more than {self.value} {unit}{hint}")


def bound(name: str) -> Bound:
    return Bound(limit(name), name)


def download_bytes() -> Bound:
    return bound("LAVA_DISPATCH_MAX_DOWNLOAD_BYTES")


def image_bytes() -> Bound:
    return bound("LAVA_DISPATCH_MAX_IMAGE_BYTES")


def rootfs_files() -> Bound:
    return bound("LAVA_DISPATCH_MAX_ROOTFS_FILES")


def testdef_bytes() -> Bound:
    return bound("LAVA_DISPATCH_MAX_TESTDEF_BYTES")


def testdef_files() -> Bound:
    return bound("LAVA_DISPATCH_MAX_TESTDEF_FILES")
