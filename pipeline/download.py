"""Downloads: http(s) through requests, file:// through the file system.

Decompression happens only when the job asks for it, streamed and bounded
(pipeline/decompress.py); checksums are checked when given; progress is
logged as percent and MB/s; limits on the bytes fetched and on the bytes
written protect the worker's disk (pipeline/limits.py).

Which host files a file:// URL may name is the worker's choice: a lab
worker reads none unless ``LAVA_DISPATCH_FILE_ROOTS`` names directories,
a local ``lava-dispatch run`` reads any file its user can, unless the
same variable narrows it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from pipeline import limits
from pipeline.decompress import CHUNK, decompress_chunks, file_chunks
from pipeline.errors import InfrastructureError, JobError
from pipeline.limits import Bound


def file_roots_from_env(*, lab: bool = False) -> list[Path] | None:
    """The directories file:// URLs and local git repositories may name (None: any readable path).

    ``LAVA_DISPATCH_FILE_ROOTS`` (colon separated) sets them. Unset, a lab
    worker (``lab=True``) may read no host file at all, and a local run any.
    """
    value = os.environ.get("LAVA_DISPATCH_FILE_ROOTS")
    if value is None:
        return [] if lab else None
    return [Path(os.path.realpath(item)) for item in value.split(":") if item]


def confined(path: str, roots: list[Path] | None, what: str, kind: str = "file:// URLs") -> Path:
    """``path`` with its symbolic links resolved, refused unless it is under one of ``roots``."""
    real = Path(os.path.realpath(path))
    if roots is not None and not any(real == root or root in real.parents for root in roots):
        allowed = ", ".join(str(root) for root in roots) or "none (LAVA_DISPATCH_FILE_ROOTS is not set)"
        raise JobError(f"{what}: {kind} on this worker must be under {allowed}")
    return real


def local_path(url: str, roots: list[Path] | None) -> Path:
    """The local file of a file:// URL, refused outside ``roots`` (None: any readable path)."""
    parsed = urlparse(url)
    if parsed.netloc not in ("", "localhost"):
        raise JobError(f"{url}: a file:// URL names a local path (file:///path)")
    path = confined(unquote(parsed.path), roots, url)
    if not path.is_file():
        raise JobError(f"{url}: no such file")
    if not os.access(path, os.R_OK):
        raise JobError(f"{url}: not readable")
    return path


def _chunks_from_file(path: Path) -> tuple[int, Iterator[bytes]]:
    size = path.stat().st_size

    def read() -> Iterator[bytes]:
        with open(path, "rb") as handle:
            yield from file_chunks(handle)

    return size, read()


def _chunks_from_http(url: str, timeout: float) -> tuple[int, Iterator[bytes]]:
    import requests  # only jobs that download over HTTP pay for importing it

    try:
        # identity: the bytes as published, which is what the checksums are of.
        response = requests.get(url, stream=True, timeout=(min(timeout, 30), min(timeout, 60)),
                                allow_redirects=True, headers={"Accept-Encoding": "identity"})
    except requests.RequestException as exc:
        raise InfrastructureError(f"{url}: cannot download: {type(exc).__name__}: {exc}") from None
    if response.status_code != 200:
        response.close()
        raise InfrastructureError(f"{url}: HTTP {response.status_code} {response.reason}")
    length = response.headers.get("content-length") or "0"
    size = int(length) if length.isdigit() else 0

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
             size_limit: Bound | None = None, output_limit: Bound | None = None,
             log: Callable[[str], None] = lambda _: None, check: Callable[[], None] = lambda: None) -> Path:
    """Fetch ``url`` to ``destination`` (decompressed if asked); return the path.

    Checksums are of the file as published (before decompression), as in
    LAVA. ``size_limit`` bounds the bytes fetched (default
    LAVA_DISPATCH_MAX_DOWNLOAD_BYTES), ``output_limit`` the bytes written
    (default LAVA_DISPATCH_MAX_IMAGE_BYTES). On any error nothing is left
    at ``destination`` nor beside it.
    """
    size_limit = size_limit or limits.download_bytes()
    output_limit = output_limit or limits.image_bytes()
    if url.startswith("file://"):
        source = local_path(url, roots)
        size, chunks = _chunks_from_file(source)
        if not (compression or md5sum or sha256sum) and size <= min(size_limit.value, output_limit.value):
            return _copy_local(source, destination, log)
    elif url.startswith(("http://", "https://")):
        size, chunks = _chunks_from_http(url, timeout)
    else:
        raise JobError(f"{url}: unsupported URL scheme")
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".part")
    started = time.monotonic()
    try:
        size_limit.check(size, url, "is")
        received = _fetch(url, chunks, size, partial, compression, md5sum, sha256sum, size_limit, output_limit,
                          log, check)
        partial.replace(destination)
    except BaseException:
        if hasattr(chunks, "close"):
            chunks.close()  # the HTTP response
        partial.unlink(missing_ok=True)
        raise
    elapsed = max(time.monotonic() - started, 1e-6)
    log(f"{received / 1e6:.1f} MB in {elapsed:.2f} s ({received / 1e6 / elapsed:.1f} MB/s)"
        + (f", {compression}-decompressed to {destination.stat().st_size / 1e6:.1f} MB" if compression else ""))
    return destination


def _fetch(url: str, chunks: Iterator[bytes], size: int, partial: Path, compression: str | None,
           md5sum: str | None, sha256sum: str | None, size_limit: Bound, output_limit: Bound,
           log: Callable[[str], None], check: Callable[[], None]) -> int:
    """Write ``chunks`` to ``partial`` (decompressed, bounded, hashed); return the bytes received."""
    # Hash only what the job asked to check: sha256 alone costs seconds on a large image.
    md5 = hashlib.md5() if md5sum else None
    sha256 = hashlib.sha256() if sha256sum else None
    received = 0
    started = last_report = time.monotonic()
    next_percent = 0

    def counted() -> Iterator[bytes]:
        nonlocal received, last_report, next_percent
        for chunk in chunks:
            check()
            received += len(chunk)
            size_limit.check(received, url, "is")
            if md5:
                md5.update(chunk)
            if sha256:
                sha256.update(chunk)
            yield chunk
            now = time.monotonic()
            if size and received * 100 // size >= next_percent and now - last_report > 0.5:
                percent = received * 100 // size
                log(f"progress {percent:3d} % ({received / 1e6:.1f} MB, "
                    f"{received / 1e6 / max(now - started, 1e-6):.1f} MB/s)")
                next_percent = percent + 5
                last_report = now

    with open(partial, "wb") as out:
        for piece in decompress_chunks(counted(), compression, output_limit, url):
            out.write(piece)
    _verify(url, md5sum, md5, sha256sum, sha256)
    return received


def _copy_local(source: Path, destination: Path, log: Callable[[str], None]) -> Path:
    """A local file taken as it is: the kernel copies it (copy_file_range), no Python loop."""
    started = time.monotonic()
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".part")
    try:
        shutil.copyfile(source, partial)
        partial.replace(destination)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    size = destination.stat().st_size
    elapsed = max(time.monotonic() - started, 1e-6)
    log(f"{size / 1e6:.1f} MB copied from {source} in {elapsed:.2f} s ({size / 1e6 / elapsed:.1f} MB/s)")
    return destination


def _verify(url: str, md5sum: str | None, md5: Any, sha256sum: str | None, sha256: Any) -> None:
    for kind, expected, digest in (("md5sum", md5sum, md5), ("sha256sum", sha256sum, sha256)):
        if expected and expected.lower() != digest.hexdigest():
            raise JobError(f"{url}: {kind} mismatch: expected {expected}, got {digest.hexdigest()}")
