#!/usr/bin/env python3
"""Extract the uncompressed ELF vmlinux from an x86 bzImage.

Usage: extract-vmlinux.py BZIMAGE OUTPUT

Reads the payload offset and length from the bzImage setup header and
decompresses it (xz, lzma, gzip and bzip2 with Python's standard library;
lz4 and zstd with the lz4/zstd command line tools). Debian's 6.1 cloud
kernels are lz4-compressed.
"""
import bz2
import gzip
import io
import lzma
import struct
import subprocess
import sys


def decompress(payload: bytes) -> bytes:
    if payload.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(payload)
    if payload.startswith(b"\x5d\x00\x00"):
        return lzma.LZMADecompressor(format=lzma.FORMAT_ALONE).decompress(payload)
    if payload.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=io.BytesIO(payload)).read()
    if payload.startswith(b"BZh"):
        return bz2.BZ2Decompressor().decompress(payload)
    if payload.startswith(b"\x02\x21\x4c\x18"):
        cmd = ["lz4", "-dc"]
    elif payload.startswith(b"\x28\xb5\x2f\xfd"):
        cmd = ["zstd", "-dc"]
    else:
        raise SystemExit(f"unknown compression, magic {payload[:4].hex()}")
    # The kernel appends the uncompressed size (4 bytes) to the stream; the
    # tools complain about it as trailing garbage but the output is complete,
    # so the exit code is ignored and the size is checked below instead.
    return subprocess.run(cmd, input=payload, capture_output=True).stdout


def main() -> None:
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    data = open(sys.argv[1], "rb").read()
    if data[0x202:0x206] != b"HdrS":
        raise SystemExit(f"{sys.argv[1]}: not a bzImage")
    setup_sects = data[0x1F1] or 4
    start = (setup_sects + 1) * 512
    offset, length = struct.unpack_from("<II", data, 0x248)
    payload = data[start + offset : start + offset + length]
    out = decompress(payload)
    expected = struct.unpack("<I", payload[-4:])[0]
    if not out.startswith(b"\x7fELF"):
        raise SystemExit("decompressed payload is not an ELF file")
    if len(out) != expected:
        raise SystemExit(f"decompressed {len(out)} bytes, expected {expected}")
    with open(sys.argv[2], "wb") as f:
        f.write(out)


if __name__ == "__main__":
    main()
