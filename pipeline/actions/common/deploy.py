"""What every deploy method shares: its model's files, URLs and Deployment, and its top action."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.action import Action
from pipeline.actions.common.image_overlays import overlay_urls
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
        files = self.files()
        return [(f"{place}.{where}", spec.url) for where, spec in files.values()] + overlay_urls(place, files)

    def deployment(self, place: str) -> Deployment:
        files = {label: spec for label, (_, spec) in self.files().items()}
        ramdisk = next((label for label, spec in files.items()
                        if spec.format == "cpio.newc" and (spec.overlays or {}).get("lava")), None)
        return Deployment(self.to, place, image_args={label: spec.image_arg for label, spec in files.items()},
                          overlay_ramdisk=ramdisk)


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
