"""Downloading a deploy's files: http-download / file-download, with retry."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from pipeline.action import Action, RetryAction
from pipeline.context import JobContext
from pipeline.download import download
from pipeline.fields import ImageSpec
from pipeline.registry import known_action

# A name that goes into bootloader commands or a TFTP path: plain characters only.
UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._+-]")


@known_action
class DownloadAction(Action):
    """Fetch one file of the job (http-download or file-download by URL) into the running deployment."""

    name = "http-download"
    description = "download a file of the job"
    aliases = ("file-download",)

    def __init__(self, key: str, spec: ImageSpec, into_tftp: bool = False):
        super().__init__()
        self.key, self.spec, self.into_tftp = key, spec, into_tftp
        if spec.url.startswith("file://"):
            self.name, self.aliases = "file-download", ("http-download",)
        self.summary = f"{key}: {spec.url}"

    def run(self, ctx: JobContext) -> None:
        deployment = ctx.deployed()
        tftp_dir = deployment.tftp_dir if self.into_tftp else None
        base = tftp_dir or ctx.workdir / "downloads"
        filename = Path(self.spec.url.split("?")[0].split("#")[0].rstrip("/")).name or self.key
        if self.spec.compression and filename.endswith(f".{self.spec.compression}"):
            filename = filename[: -len(self.spec.compression) - 1]
        if self.into_tftp:
            # The name goes into bootloader commands: plain characters only.
            filename = UNSAFE_NAME.sub("_", filename).lstrip(".") or self.key
        if filename in (".", ".."):  # a URL ending in /.. names no file: never the directory above
            filename = self.key
        destination = base / self.key / filename
        ctx.logger.info(f"downloading {self.spec.url} as {self.key}")
        path = download(self.spec.url, destination, compression=self.spec.compression, md5sum=self.spec.md5sum,
                        sha256sum=self.spec.sha256sum, roots=ctx.file_roots, timeout=ctx.remaining(),
                        log=lambda message: ctx.logger.info(f"{self.name} {self.key}: {message}"), check=ctx.check)
        deployment.images[self.key] = path
        if tftp_dir is not None:
            path.parent.chmod(0o755)  # a TFTP server often runs as its own user
            path.chmod(0o644)
            deployment.tftp_names[self.key] = str(path.relative_to(ctx.device.tftp_root()))


@known_action
class DownloadRetry(RetryAction):
    name = "download-retry"
    description = "download with retry"

    def __init__(self, key: str, spec: ImageSpec, into_tftp: bool = False, after: Sequence[Action] = ()):
        super().__init__()
        self.summary = f"download {key}"
        self.internal(DownloadAction(key, spec, into_tftp), *after)  # after: what changes the file (its overlays)
