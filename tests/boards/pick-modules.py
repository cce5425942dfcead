#!/usr/bin/env python3
"""Copy a set of kernel modules, with their dependencies, into a staging tree.

Usage: pick-modules.py KROOT KVER STAGE LIST=MOD,MOD,... [LIST=...]

KROOT/lib/modules/KVER must already have a modules.dep (run depmod -b).
For each LIST, the named modules and their dependencies (from modules.dep)
are copied to STAGE/lib/modules/KVER/ and their paths, relative to that
directory and in load order, are written to STAGE/lib/modules/KVER/LIST.
A LIST named "-" only ships its modules (for modprobe) without an order file.
Modules that are built in or missing are skipped (listed on stderr).
"""
import os
import shutil
import sys


def norm(name: str) -> str:
    base = os.path.basename(name).split(".ko")[0]
    return base.replace("-", "_")


def main() -> None:
    if len(sys.argv) < 5:
        raise SystemExit(__doc__)
    kroot, kver, stage = sys.argv[1:4]
    moddir = os.path.join(kroot, "lib/modules", kver)
    deps: dict[str, list[str]] = {}
    path_of: dict[str, str] = {}
    with open(os.path.join(moddir, "modules.dep")) as f:
        for line in f:
            mod, _, rest = line.partition(":")
            path_of[norm(mod)] = mod
            deps[mod] = rest.split()
    builtin = set()
    try:
        with open(os.path.join(moddir, "modules.builtin")) as f:
            builtin = {norm(line.strip()) for line in f if line.strip()}
    except FileNotFoundError:
        pass

    outdir = os.path.join(stage, "lib/modules", kver)
    os.makedirs(outdir, exist_ok=True)
    shipped: list[str] = []
    for spec in sys.argv[4:]:
        listname, _, names = spec.partition("=")
        order: list[str] = []
        for name in filter(None, names.split(",")):
            key = norm(name)
            if key not in path_of:
                why = "built in" if key in builtin else "not found"
                print(f"pick-modules: {kver}: {name} {why}, skipped", file=sys.stderr)
                continue
            mod = path_of[key]
            # modules.dep lists dependencies so that the last one is loaded first.
            for p in list(reversed(deps[mod])) + [mod]:
                if p not in order:
                    order.append(p)
        for p in order:
            if p not in shipped:
                shipped.append(p)
            dst = os.path.join(outdir, p)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copy2(os.path.join(moddir, p), dst)
        if listname != "-":
            with open(os.path.join(outdir, listname), "w") as f:
                f.write("".join(p + "\n" for p in order))
    for extra in ("modules.builtin", "modules.builtin.modinfo"):
        src = os.path.join(moddir, extra)
        if os.path.exists(src):
            shutil.copy2(src, os.path.join(outdir, extra))
    with open(os.path.join(outdir, "modules.order"), "w") as f:
        f.write("".join(p + "\n" for p in shipped))


if __name__ == "__main__":
    main()
