"""``overlay-unpack``: the booted board fetches the overlay from the dispatcher and unpacks it.

For a root file system the dispatcher cannot write into (a persistent NFS
root on another server), or when the boot asks for it (LAVA's
``transfer_overlay``). The board downloads the overlay tarball from the
dispatcher's file server with wget and unpacks it in the overlay's
directory; a job's own ``download_command``/``unpack_command`` are accepted
but these commands are used, since the tarball's paths are relative to that
directory.
"""

from __future__ import annotations

import shlex

from pipeline.action import Action
from pipeline.actions.common.overlay import overlay_root
from pipeline.actions.common.shell import board_command
from pipeline.context import JobContext
from pipeline.registry import known_action


@known_action
class OverlayUnpack(Action):
    name = "overlay-unpack"
    description = "the booted board downloads the overlay from the dispatcher and unpacks it"
    summary = "transfer the overlay"
    uses_connection = True

    def run(self, ctx: JobContext) -> None:
        tarball, _ = ctx.overlay_files()
        url = ctx.serve_file(tarball)
        root = shlex.quote(overlay_root(ctx))
        board_command(self, ctx, f"mkdir -p {root} && cd {root} && wget -q -O overlay.tar.gz {shlex.quote(url)} && "
                      "tar -xzf overlay.tar.gz && rm -f overlay.tar.gz", "fetching and unpacking the overlay",
                      self.timeout)
        ctx.logger.info(f"overlay unpacked on the board in {overlay_root(ctx)}")
