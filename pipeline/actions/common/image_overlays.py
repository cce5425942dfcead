"""Files written into a deployed image (``images.X.overlays``): LAVA's ``append-overlays``.

An ``ext4`` image may carry overlays: each a tarball (``format: tar``)
unpacked at its ``path``, or one file (``format: file``) written as
``path``, downloaded by a download-retry inside the image's own. The LAVA
overlay (``lava: true``) goes into a ``cpio.newc`` ramdisk as before; on an
ext4 image it comes on the overlay drive as for any disk. Other image
formats with overlays are refused when the job is validated.
"""

from __future__ import annotations

import tempfile
from pathlib import Path, PurePosixPath
from typing import Literal

from pipeline import ext4_overlay
from pipeline.action import Action
from pipeline.actions.common.download import DownloadRetry
from pipeline.archive import safe_extract
from pipeline.context import JobContext
from pipeline.fields import Compression, Field, ImageSpec, Strict, Url, validate_model
from pipeline.registry import known_action


class ImageOverlay(Strict):
    """One overlay of an image: what to download and where it goes in the image."""

    url: Url
    compression: Compression | None = None
    md5sum: str | None = Field(None, pattern=r"^[0-9a-fA-F]{32}$")
    sha256sum: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$")
    format: Literal["tar", "file"]
    path: str

    def download(self) -> ImageSpec:
        return ImageSpec(url=self.url, compression=self.compression, md5sum=self.md5sum, sha256sum=self.sha256sum)


def image_overlays(spec: ImageSpec) -> dict[str, ImageOverlay]:
    """The image's overlays other than the LAVA overlay (already checked by ``overlay_problems``)."""
    return {str(name): ImageOverlay.model_validate(value) for name, value in (spec.overlays or {}).items()
            if name != "lava"}


def overlay_problems(place: str, files: dict[str, tuple[str, ImageSpec]]) -> list[str]:
    """The problems of the images' ``overlays``: only ext4 images take files, a cpio ramdisk the LAVA overlay."""
    problems: list[str] = []
    for where, spec in files.values():
        base = f"{place}.{where.rsplit('.', 1)[0]}.overlays"
        for name, value in (spec.overlays or {}).items():
            here = f"{base}.{name}"
            if name == "lava":
                if spec.format not in ("cpio.newc", "ext4"):
                    problems.append(f"{here}: the lava overlay goes into a cpio.newc ramdisk (format)")
                continue
            if spec.format != "ext4":
                problems.append(f"{here}: files are inserted into ext4 images only (this image's format is "
                                f"{spec.format or 'not given'})")
                continue
            overlay = validate_model(ImageOverlay, value, here, problems)
            if overlay is not None:
                path = PurePosixPath(overlay.path)
                as_file = overlay.format == "file"
                if not path.is_absolute() or ".." in path.parts or (as_file and overlay.path.endswith("/")):
                    problems.append(f"{here}.path: {overlay.path!r} must be an absolute path without '..'"
                                    + (" naming a file" if as_file else ""))
    return problems


def overlay_urls(place: str, files: dict[str, tuple[str, ImageSpec]]) -> list[tuple[str, str]]:
    found = []
    for where, spec in files.values():
        for name, value in (spec.overlays or {}).items():
            if name != "lava" and isinstance(value, dict) and isinstance(value.get("url"), str):
                found.append((f"{place}.{where.rsplit('.', 1)[0]}.overlays.{name}.url", value["url"]))
    return found


@known_action
class AppendImageOverlays(Action):
    name = "append-overlays"
    description = "write the image's overlays into it (without mounting it)"

    def __init__(self, key: str, overlays: dict[str, ImageOverlay]):
        super().__init__()
        self.key, self.overlays = key, overlays
        self.summary = f"overlays into {key}: {', '.join(overlays)}"

    def run(self, ctx: JobContext) -> None:
        images = ctx.deployed().images
        image = images[self.key]
        lines: list[str] = []
        with tempfile.TemporaryDirectory(prefix="overlays-", dir=ctx.workdir) as scratch:
            for name, overlay in self.overlays.items():
                local = images[f"{self.key}.{name}"]
                if overlay.format == "tar":
                    unpacked = Path(scratch) / name
                    count = safe_extract(local, unpacked, f"{self.key}.overlays.{name}")
                    lines += ext4_overlay.tree_script(unpacked, overlay.path)
                    ctx.logger.info(f"{self.key}: overlay {name}: {count} entries into {overlay.path}")
                else:
                    lines += ext4_overlay.parents(overlay.path) + ext4_overlay.file_script(local, overlay.path)
                    ctx.logger.info(f"{self.key}: overlay {name}: {overlay.path}")
            ext4_overlay.run_script(image, lines, ctx.remaining(), ctx.processes)


def overlay_steps(key: str, spec: ImageSpec) -> list[Action]:
    """What follows an image's download inside its download-retry: its overlays' downloads, then append-overlays."""
    overlays = image_overlays(spec) if spec.format == "ext4" else {}
    if not overlays:
        return []
    return [*(DownloadRetry(f"{key}.{name}", overlay.download()) for name, overlay in overlays.items()),
            AppendImageOverlays(key, overlays)]
