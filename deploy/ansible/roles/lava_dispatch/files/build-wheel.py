"""build-wheel.py SOURCE OUTDIR: the lava-dispatch wheel of the source tree SOURCE, into OUTDIR.

Prints the wheel's path. The wheel is built with ``pip wheel --no-deps`` from a copy of the tree's
files (in a git work tree: the tracked and the untracked, not ignored ones), so nothing stale
(``build/``, an older wheel, a local virtualenv) gets in, with SOURCE_DATE_EPOCH fixed: the same
sources give the same wheel, byte for byte, and a host gets a new one only when the code changed.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

SKIP = {".git", "build", "dist", ".venv", "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"}


def files(source: Path) -> list[str]:
    try:
        listed = subprocess.run(["git", "-C", str(source), "ls-files", "-z", "--cached", "--others",
                                 "--exclude-standard"], check=True, capture_output=True).stdout
        return [name for name in listed.decode().split("\0") if name and (source / name).is_file()]
    except (OSError, subprocess.CalledProcessError):
        found = []
        for root, dirs, names in os.walk(source):
            dirs[:] = [d for d in dirs if d not in SKIP and not d.endswith(".egg-info")]
            found += [os.path.relpath(os.path.join(root, name), source) for name in names]
        return found


def main() -> None:
    source, out = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
    out.mkdir(parents=True, exist_ok=True)
    project = tomllib.loads((source / "pyproject.toml").read_text())["project"]
    stem = f"{project['name'].replace('-', '_')}-{project['version']}-"
    with tempfile.TemporaryDirectory(prefix="lava-dispatch-wheel-") as copy:
        for name in files(source):
            target = Path(copy, name)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / name, target)
        for old in out.glob(f"{stem}*.whl"):
            old.unlink()
        env = {**os.environ, "SOURCE_DATE_EPOCH": os.environ.get("SOURCE_DATE_EPOCH", "315532800")}
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-cache-dir", copy,
                        "-w", str(out)], check=True, env=env, stdout=sys.stderr)
    built = sorted(out.glob(f"{stem}*.whl"))
    if len(built) != 1:
        sys.exit(f"build-wheel: expected one {stem}*.whl in {out}, found {len(built)}")
    print(built[0])


if __name__ == "__main__":
    main()
