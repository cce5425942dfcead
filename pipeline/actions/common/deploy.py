"""What every deploy method shares: its model's files, URLs and Deployment, and its top action."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.action import Action
from pipeline.blocks import ActionBase
from pipeline.context import JobContext
from pipeline.deployment import Deployment
from pipeline.fields import ImageSpec
from pipeline.registry import known_action


class DeployBase(ActionBase):
    """Keys every deploy accepts."""

    if TYPE_CHECKING:
        to: str  # each method's model narrows it to its own names (a Literal)

    def files(self) -> dict[str, tuple[str, ImageSpec]]:
        """label -> (its key under the block, what to download): the one place a deploy's files are named."""
        return {}

    def urls(self, place: str) -> list[tuple[str, str]]:
        return [(f"{place}.{where}", spec.url) for where, spec in self.files().values()]

    def deployment(self, place: str) -> Deployment:
        files = {label: spec for label, (_, spec) in self.files().items()}
        ramdisk = next((label for label, spec in files.items()
                        if spec.format == "cpio.newc" and (spec.overlays or {}).get("lava")), None)
        return Deployment(self.to, place, image_args={label: spec.image_arg for label, spec in files.items()},
                          overlay_ramdisk=ramdisk)


def unsupported_overlays(place: str, files: dict[str, tuple[str, ImageSpec]]) -> list[str]:
    """Images' ``overlays`` this dispatcher cannot insert: only the LAVA overlay appended to a cpio ramdisk."""
    problems = []
    for where, spec in files.values():
        for name in spec.overlays or {}:
            if name != "lava" or spec.format != "cpio.newc":
                problems.append(f"{place}.{where.rsplit('.', 1)[0]}.overlays.{name}: inserting files into the "
                                f"{spec.format or 'disk'} image is not supported by this dispatcher (only the "
                                "lava overlay appended to a cpio.newc ramdisk)")
    return problems


class DeployAction(Action):
    """The top action of a deploy: it starts, in the context, the Deployment its steps fill."""

    def __init__(self, params: DeployBase, place: str):
        super().__init__(params)
        self.declared = params.deployment(place)

    def run(self, ctx: JobContext) -> None:
        ctx.deployment = self.declared.fresh()
        super().run(ctx)


@known_action
class DeployDeviceEnv(Action):
    """The job's ``environment:`` for the board's shell (export-device-env exports it after each boot)."""

    name = "deploy-device-env"
    description = "take the job's environment for the board's shell"
    summary = "device environment"

    def run(self, ctx: JobContext) -> None:
        environment = ctx.job.header.environment or {}
        ctx.environment.update({str(key): str(value) for key, value in environment.items()})
        if environment:
            ctx.logger.info(f"environment for the board: {', '.join(sorted(map(str, environment)))}")
