"""The methods this dispatcher ships with: the one place that imports pipeline.actions.

``load_builtin()`` imports each method module once; their decorators fill
the registry (pipeline.registry). The order of the list is the order of the
choices in messages (``'ubot' is not one of qemu, qemu-nfs, u-boot, minimal``) and of
strategies of equal priority. A new method is one more line here (see
docs/engine.md).
"""

from __future__ import annotations

from functools import cache

from pipeline.registry import REGISTRY, Registry


@cache
def load_builtin() -> Registry:
    """The engine's registry with every built-in method registered (imported on the first call)."""
    from pipeline.actions.deploy import tmpfs, tftp, media, nfs  # noqa: F401, I001 - in this order
    from pipeline.actions.boot import qemu, qemu_nfs, uboot, minimal  # noqa: F401, I001
    from pipeline.actions.test import shell  # noqa: F401
    from pipeline.actions.command import user  # noqa: F401
    from pipeline.actions.submit import ignored  # noqa: F401
    from pipeline.actions.common import finalize  # noqa: F401

    return REGISTRY
