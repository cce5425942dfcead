"""`lava-dispatch validate` and `run` as real processes, on hostile files.

Each test starts the installed console script (with this checkout first on
PYTHONPATH) and checks its exit code and stderr: a rejected job exits 1
with its problems, a usage mistake exits 2, and nothing ever prints a
traceback, hangs or crashes the process.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import textwrap

import pytest
from conftest import DEVICES, ROOT

MEMORY_LIMIT = 1 << 30  # address space of each run: a blow-up fails fast instead of swapping
JOB = textwrap.dedent("""\
    job_name: cli
    device_type: local-shell
    timeouts: {job: {minutes: 1}}
    actions:
      - boot: {method: minimal}
      - test:
          definitions:
            - from: inline
              name: smoke
              path: inline/smoke.yaml
              parameters: {GREETING: hello}
              repository:
                metadata: {name: smoke}
                run: {steps: ['lava-test-case greeting --shell test "$GREETING" = hello']}
    """)


def lava_dispatch(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    script = shutil.which("lava-dispatch")
    command = [script, *argv] if script else [sys.executable, "-m", "tasks.cli", *argv]
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=ROOT, env=environment,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT)))


def rejected(result: subprocess.CompletedProcess, code: int = 1) -> str:
    assert result.returncode == code, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr and "Bug" not in result.stderr, result.stderr[-2000:]
    return result.stderr


def test_the_sample_job_is_valid_as_a_process(tmp_path):
    """The baseline the hostile variants below start from."""
    path = tmp_path / "job.yaml"
    path.write_text(JOB)
    result = lava_dispatch("validate", str(path), "--device", str(DEVICES / "local01.yaml"))
    assert result.returncode == 0, result.stderr
    assert "lava-test-shell" in result.stdout


def test_billion_laughs_is_refused_without_expanding_it(tmp_path):
    levels = "".join(f"  l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]\n" for i in range(1, 10))
    path = tmp_path / "laughs.yaml"
    metadata = "metadata:\n  l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + levels
    path.write_text(JOB.replace("{GREETING: hello}", "{GREETING: *l9}").replace("actions:\n", metadata + "actions:\n"))
    err = rejected(lava_dispatch("validate", str(path), "--device", str(DEVICES / "local01.yaml")))
    assert "metadata.l3[7]: aliases expand to more than 10000 nodes" in err, err


def test_nesting_that_crashed_libyaml_is_a_problem(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("job_name: deep\nmetadata: " + "[" * 200_000 + "\n")
    err = rejected(lava_dispatch("validate", str(path)))
    assert "nested deeper than 100 levels (line 2)" in err, err


def test_duplicate_keys_are_reported_one_per_line(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text(JOB.replace("job_name: cli\n", "job_name: cli\njob_name: again\n").replace(
        "- boot: {method: minimal}", "- boot: {method: minimal, method: qemu}"))
    err = rejected(lava_dispatch("validate", str(path)))
    assert err.splitlines()[1:] == ["  (job): duplicate key 'job_name' (line 2; first on line 1): LAVA would keep the last value; give the key once",
                                    "  actions[0].boot: duplicate key 'method' (line 6; first on line 6): LAVA would keep the last value; give the key once"], err


def test_a_fifo_as_the_job_file_is_refused_at_once(tmp_path):
    fifo = tmp_path / "job.fifo"
    os.mkfifo(fifo)  # nobody ever writes: reading it would wait forever
    err = rejected(lava_dispatch("validate", str(fifo)), code=2)
    assert f"job file {str(fifo)!r} is not a regular file" in err, err


@pytest.mark.parametrize("path", ["/dev/zero", "/proc/self"], ids=["char-device", "directory"])
def test_a_job_file_that_is_not_a_regular_file_is_refused(path):
    assert "is not a regular file" in rejected(lava_dispatch("validate", path), code=2)


def test_a_job_larger_than_the_limit_is_refused_and_the_limit_is_the_admins(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text(JOB + "metadata: {padding: '" + "x" * 2000 + "'}\n")
    err = rejected(lava_dispatch("validate", str(path), env={"LAVA_DISPATCH_MAX_JOB_BYTES": "1000"}))
    assert "(job): the file is larger than the limit of 1000 bytes (LAVA_DISPATCH_MAX_JOB_BYTES)" in err, err
    assert lava_dispatch("validate", str(path)).returncode == 0  # the default, 1 MiB, takes it
    err = rejected(lava_dispatch("validate", str(path), env={"LAVA_DISPATCH_MAX_JOB_BYTES": "lots"}), code=2)
    assert "LAVA_DISPATCH_MAX_JOB_BYTES='lots'" in err, err


def test_run_refuses_an_output_dir_that_is_a_file_before_anything_runs(tmp_path):
    job, taken = tmp_path / "job.yaml", tmp_path / "taken"
    job.write_text(JOB)
    taken.write_text("not a directory")
    for output_dir in (taken, taken / "below"):
        err = rejected(lava_dispatch("run", str(job), "--device", str(DEVICES / "local01.yaml"),
                                     "--output-dir", str(output_dir)), code=2)
        assert f"--output-dir {str(output_dir)!r}: {str(taken)!r} is not a directory" in err, err
    assert taken.read_text() == "not a directory"


def test_run_rejects_a_parameter_the_shell_cannot_export(tmp_path):
    """MY-VAR used to pass validate; run.sh then aborted and the job was Complete with no results."""
    job, output = tmp_path / "job.yaml", tmp_path / "out"
    job.write_text(JOB.replace("GREETING", "MY-VAR"))
    err = rejected(lava_dispatch("run", str(job), "--device", str(DEVICES / "local01.yaml"),
                                 "--output-dir", str(output)), code=2)
    assert "actions[1].test.definitions[0].parameters.MY-VAR: invalid key: 'MY-VAR' is not a shell variable" in err
    assert not output.exists()


def test_a_malformed_device_file_is_a_problem_not_a_traceback(tmp_path):
    job, device = tmp_path / "job.yaml", tmp_path / "board.yaml"
    job.write_text(JOB)
    device.write_text((DEVICES / "local01.yaml").read_text().replace(
        "        parameters:\n          overlay: local\n", "        parameters: overlay-local\n"))
    err = rejected(lava_dispatch("validate", str(job), "--device", str(device)))
    assert "board.yaml: actions.boot.methods.minimal.parameters: expected a mapping, got 'overlay-local'" in err, err
