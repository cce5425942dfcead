"""Downloads: http(s) through requests, file:// through the file system.

Decompression happens only when the job asks for it; checksums are
checked when given; progress is logged as percent and MB/s; a size limit
protects the worker's disk.
"""

from __future__ import annotations

import bz2
import hashlib
import lzma
import os
import shutil
import time
import zlib
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import unquote, urlparse


from pipeline.errors import InfrastructureError, JobError

CHUNK = 1024 * 1024
DEFAULT_SIZE_LIMIT = int(os.environ.get("LAVA_DISPATCH_DOWNLOAD_LIMIT", str(8 * 1024**3)))


def file_roots_from_env() -> list[Path] | None:
    """The roots a lab worker may read file:// URLs from (``LAVA_DISPATCH_FILE_ROOTS``, colon separated)."""
    value = os.environ.get("LAVA_DISPATCH_FILE_ROOTS")
    if value is None:
        return None
    return [Path(item).resolve() for item in value.split(":") if item]


def local_path(url: str, roots: list[Path] | None) -> Path:
    """The local file of a file:// URL, refused outside ``roots`` (None: any readable path)."""
    parsed = urlparse(url)
    if parsed.netloc not in ("", "localhost"):
        raise JobError(f"{url}: a file:// URL names a local path (file:///path)")
    path = Path(unquote(parsed.path)).resolve()
    if roots is not None and not any(path == root or root in path.parents for root in roots):
        allowed = ", ".join(str(root) for root in roots) or "none"
        raise JobError(f"{url}: file:// URLs on this worker must be under {allowed}")
    if not path.is_file():
        raise JobError(f"{url}: no such file")
    if not os.access(path, os.R_OK):
        raise JobError(f"{url}: not readable")
    return path


class Decompressor:
    def __init__(self, compression: str | None):
        self.compression = compression
        if compression == "gz":
            self.engine = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif compression == "bz2":
            self.engine = bz2.BZ2Decompressor()
        elif compression == "xz":
            self.engine = lzma.LZMADecompressor()
        else:
            self.engine = None

    def feed(self, data: bytes) -> bytes:
        if self.engine is None:
            return data
        try:
            return self.engine.decompress(data)
        except (OSError, EOFError, zlib.error, lzma.LZMAError) as exc:
            raise JobError(f"the file is not valid {self.compression} data: {exc}") from None

    def finish(self) -> bytes:
        # Only zlib keeps bytes back until the end; bz2 and lzma return them as they go.
        return self.engine.flush() if self.compression == "gz" else b""


def _chunks_from_file(path: Path) -> tuple[int, Iterator[bytes]]:
    size = path.stat().st_size

    def read() -> Iterator[bytes]:
        with open(path, "rb") as handle:
            while chunk := handle.read(CHUNK):
                yield chunk

    return size, read()


def _chunks_from_http(url: str, timeout: float) -> tuple[int, Iterator[bytes]]:
    import requests  # only jobs that download over HTTP pay for importing it

    try:
        response = requests.get(url, stream=True, timeout=(min(timeout, 30), min(timeout, 60)),
                                allow_redirects=True)
    except requests.RequestException as exc:
        raise InfrastructureError(f"{url}: cannot download: {type(exc).__name__}: {exc}") from None
    if response.status_code != 200:
        response.close()
        raise InfrastructureError(f"{url}: HTTP {response.status_code} {response.reason}")
    size = int(response.headers.get("content-length") or 0)

    def read() -> Iterator[bytes]:
        try:
            yield from response.iter_content(CHUNK)
        except requests.RequestException as exc:
            raise InfrastructureError(f"{url}: download interrupted: {exc}") from None
        finally:
            response.close()

    return size, read()


def download(url: str, destination: Path, *, compression: str | None = None, md5sum: str | None = None,
             sha256sum: str | None = None, roots: list[Path] | None = None, timeout: float = 300.0,
             size_limit: int = DEFAULT_SIZE_LIMIT, log: Callable[[str], None] = lambda _: None,
             check: Callable[[], None] = lambda: None) -> Path:
    """Fetch ``url`` to ``destination`` (decompressed if asked); return the path.

    Checksums are of the file as published (before decompression), as in LAVA.
    """
    if url.startswith("file://"):
        source = local_path(url, roots)
        if not (compression or md5sum or sha256sum) and source.stat().st_size <= size_limit:
            return _copy_local(source, destination, log)
        size, chunks = _chunks_from_file(source)
    elif url.startswith(("http://", "https://")):
        size, chunks = _chunks_from_http(url, timeout)
    else:
        raise JobError(f"{url}: unsupported URL scheme")
    if size > size_limit:
        raise JobError(f"{url}: {size} bytes is over the download limit of {size_limit} bytes")
    # Hash only what the job asked to check: sha256 alone costs seconds on a large image.
    md5 = hashlib.md5() if md5sum else None
    sha256 = hashlib.sha256() if sha256sum else None
    decompressor = Decompressor(compression)
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".part")
    started = last_report = time.monotonic()
    received = 0
    next_percent = 0
    with open(partial, "wb") as out:
        for chunk in chunks:
            check()
            received += len(chunk)
            if received > size_limit:
                raise JobError(f"{url}: more than the download limit of {size_limit} bytes")
            if md5:
                md5.update(chunk)
            if sha256:
                sha256.update(chunk)
            out.write(decompressor.feed(chunk))
            now = time.monotonic()
            if size and received * 100 // size >= next_percent and now - last_report > 0.5:
                percent = received * 100 // size
                log(f"progress {percent:3d} % ({received / 1e6:.1f} MB, "
                    f"{received / 1e6 / max(now - started, 1e-6):.1f} MB/s)")
                next_percent = percent + 5
                last_report = now
        out.write(decompressor.finish())
    if md5:
        _verify(url, "md5sum", md5sum, md5.hexdigest(), partial)
    if sha256:
        _verify(url, "sha256sum", sha256sum, sha256.hexdigest(), partial)
    partial.replace(destination)
    elapsed = max(time.monotonic() - started, 1e-6)
    log(f"{received / 1e6:.1f} MB in {elapsed:.2f} s ({received / 1e6 / elapsed:.1f} MB/s)"
        + (f", {compression}-decompressed to {destination.stat().st_size / 1e6:.1f} MB" if compression else ""))
    return destination


def _copy_local(source: Path, destination: Path, log: Callable[[str], None]) -> Path:
    """A local file taken as it is: the kernel copies it (copy_file_range), no Python loop."""
    started = time.monotonic()
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".part")
    shutil.copyfile(source, partial)
    partial.replace(destination)
    size = destination.stat().st_size
    elapsed = max(time.monotonic() - started, 1e-6)
    log(f"{size / 1e6:.1f} MB copied from {source} in {elapsed:.2f} s ({size / 1e6 / elapsed:.1f} MB/s)")
    return destination


def _verify(url: str, kind: str, expected: str | None, actual: str, partial: Path) -> None:
    if expected and expected.lower() != actual:
        partial.unlink(missing_ok=True)
        raise JobError(f"{url}: {kind} mismatch: expected {expected}, got {actual}")
