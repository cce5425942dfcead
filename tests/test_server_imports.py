"""The lab server stays out of the dispatcher's way: ``lava-dispatch run``/``validate`` never load it.

``python -X importtime`` lists every module a process imports; neither
``import tasks.cli`` nor a whole ``validate`` (which builds the parser with
the server's subcommands) may load the server or its web and database
stack. The server's own commands do load it, lazily.
"""

from __future__ import annotations

import os
import subprocess
import sys

from lab_helpers import ROOT

SERVER_STACK = ("server", "fastapi", "starlette", "uvicorn", "sqlalchemy", "alembic", "pydantic", "psycopg")


def imported(*argv: str, env: dict[str, str] | None = None) -> set[str]:
    result = subprocess.run([sys.executable, "-X", "importtime", *argv], capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}, timeout=120)
    modules = set()
    for line in result.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name and name != "package":
                modules.add(name)
    assert modules, result.stderr[-2000:]
    return modules


def top_level(modules: set[str]) -> set[str]:
    return {name.split(".")[0] for name in modules}


def test_import_tasks_cli_loads_no_server_stack():
    assert not top_level(imported("-c", "import tasks.cli")) & set(SERVER_STACK)


def test_validate_and_its_parser_load_no_server_stack():
    job = ROOT / "sample_jobs" / "local-inline.yaml"
    assert not top_level(imported("-m", "tasks.cli", "validate", str(job))) & set(SERVER_STACK)


def test_the_server_commands_load_it_when_they_run(tmp_path):
    modules = top_level(imported("-m", "tasks.cli", "users", "list", env={"LAVA_DISPATCH_LAB_DIR": str(tmp_path),
                                                                         "LAVA_DISPATCH_DATABASE_URL": ""}))
    assert {"server", "sqlalchemy"} <= modules
