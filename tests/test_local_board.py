"""Jobs on the local-shell board: the whole engine, the overlay and its on-target scripts, fast.

Each test runs ``lava-dispatch run`` as a real process and asserts on the
files it writes (results.yaml, output.yaml) and its exit code.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import textwrap

import pytest
import yaml
from conftest import DEVICES, ROOT, cmdline_of, processes_matching, run_job, wait_for

pytestmark = pytest.mark.usefixtures("no_leftovers")


def local_job(steps: list[str], extra_definition: str = "", timeout: str = "action: {seconds: 30}",
              name: str = "basics") -> str:
    """A local-shell job with one inline definition running ``steps``."""
    step_lines = "".join(f"                - {json.dumps(step)}\n" for step in steps)
    return textwrap.dedent("""\
        device_type: local-shell
        job_name: local-test
        timeouts:
          job: {minutes: 2}
          %s
        actions:
          - boot:
              method: minimal
          - test:
              definitions:
                - from: inline
                  name: %s
                  path: inline/%s.yaml
                  repository:
                    metadata:
                      format: Lava-Test Test Definition 1.0
                      name: %s
        %s            run:
                      steps:
        """) % (timeout, name, name, name, extra_definition) + step_lines


def test_pass_fail_and_measurement_cases(tmp_path):
    run = run_job(tmp_path, local_job([
        "lava-test-case echo-works --shell echo hello",
        "lava-test-case false-fails --shell false",
        "lava-test-case speed --result pass --measurement 117.5 --units MB/s",
        "lava-test-case skipped --result skip",
    ]), "local01")
    assert run.code == 0, run.stderr
    assert run.case("echo-works")["result"] == "pass"
    assert run.case("false-fails")["result"] == "fail"
    speed = run.case("speed")
    assert (speed["result"], speed["measurement"], speed["units"]) == ("pass", 117.5, "MB/s")
    assert run.case("skipped")["result"] == "skip"
    assert run.case("echo-works")["suite"] == "0_basics"
    assert run.job_result()["result"] == "pass"  # a failed test case does not fail the job
    assert "job Complete: pass 2, fail 1, skip 1" in run.stdout
    assert {"output.yaml", "results.yaml", "results.xml", "description.yaml", "overlay.tar.gz", "job.yaml",
            "device.yaml"} <= {p.name for p in run.output_dir.iterdir()}


def test_overlay_tarball_is_kept_with_the_scripts_and_definitions(tmp_path):
    run = run_job(tmp_path, local_job(["lava-test-case a --result pass"]), "local01")
    with tarfile.open(run.output_dir / "overlay.tar.gz") as archive:
        names = archive.getnames()
    for script in ("lava-test-runner", "lava-test-case", "lava-test-set", "lava-test-reference", "lava-test-raise",
                   "lava-test-suite-name"):
        assert f"bin/{script}" in names
    assert "environment" in names
    assert "0/lava-test-runner.conf" in names
    assert "0/tests/0_basics/run.sh" in names


def test_sets_references_and_suite_name(tmp_path):
    run = run_job(tmp_path, local_job([
        "lava-test-set start network",
        "lava-test-case ping --result pass",
        "lava-test-set stop",
        "lava-test-reference build-log --result pass --reference http://example.com/log",
        "lava-test-suite-name renamed",
        "lava-test-case after-rename --result pass",
    ]), "local01")
    assert run.code == 0, run.stderr
    assert run.case("ping")["set"] == "network"
    assert run.case("build-log")["reference"] == "http://example.com/log"
    assert run.case("after-rename")["suite"] == "renamed"


def test_lava_test_raise_ends_the_job_incomplete(tmp_path):
    run = run_job(tmp_path, local_job(["lava-test-raise disk-not-found", "lava-test-case never --result pass"]),
                  "local01")
    assert run.code == 1
    job = run.job_result()
    assert (job["result"], job["error_type"]) == ("fail", "Test")
    assert "disk-not-found" in job["error_msg"]


def test_parse_pattern_and_fixupdict(tmp_path):
    extra = ("            parse:\n"
             "              pattern: '^(?P<test_case_id>[a-z-]+): (?P<result>PASS|FAIL|SKIP)'\n"
             "              fixupdict: {PASS: pass, FAIL: fail, SKIP: skip}\n")
    run = run_job(tmp_path, local_job(["printf 'alpha: PASS\\nbeta: FAIL\\ngamma: SKIP\\n'"], extra), "local01")
    assert run.code == 0, run.stderr
    assert [run.case(n)["result"] for n in ("alpha", "beta", "gamma")] == ["pass", "fail", "skip"]


def test_install_steps_and_deps_are_handled(tmp_path):
    extra = "            install:\n              deps: [curl]\n              steps: [touch installed-marker]\n"
    run = run_job(tmp_path, local_job(["lava-test-case marker --shell test -f installed-marker"], extra), "local01")
    assert run.code == 0, run.stderr
    assert run.case("marker")["result"] == "pass"
    assert any("deps not installed on os unknown: curl" in m for m in run.messages())


def test_test_timeout_ends_a_hanging_test(tmp_path):
    # Only the test action has 2 s: a boot slowed down by a loaded machine must not time out instead.
    run = run_job(tmp_path, local_job(["lava-test-case hangs --shell sleep 600"],
                                      timeout="actions: {lava-test-shell: {seconds: 2}}"), "local01")
    assert run.code == 1
    assert "lava-test-shell: timeout. 2 seconds" in run.messages()
    job = run.job_result()
    assert job["error_type"] == "Job" and "timeout" in job["error_msg"]


def test_job_timeout_ends_the_job(tmp_path):
    text = local_job(["sleep 600"], timeout="action: {seconds: 30}").replace("job: {minutes: 2}", "job: {seconds: 2}")
    text = text.replace("action: {seconds: 30}", "action: {seconds: 2}")
    run = run_job(tmp_path, text, "local01")
    assert run.code == 1
    assert "job timeout" in run.job_result()["error_msg"]


def test_git_definition_from_a_local_repository(tmp_path):
    repo = tmp_path / "defs"
    (repo / "smoke").mkdir(parents=True)
    (repo / "smoke" / "smoke.yaml").write_text(textwrap.dedent("""\
        metadata:
          format: Lava-Test Test Definition 1.0
          name: git-smoke
        params:
          GREETING: hello
        run:
          steps:
            - lava-test-case helper-script --shell sh ./smoke/helper.sh
            - lava-test-case param --shell test "$GREETING" = bonjour
        """))
    (repo / "smoke" / "helper.sh").write_text("echo helper ran\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@e", "-C", str(repo)]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "defs"], check=True)
    job = textwrap.dedent(f"""\
        device_type: local-shell
        job_name: git-def
        timeouts: {{job: {{minutes: 2}}}}
        actions:
          - boot: {{method: minimal}}
          - test:
              definitions:
                - repository: {repo}
                  from: git
                  path: smoke/smoke.yaml
                  name: smoke
                  parameters: {{GREETING: bonjour}}
        """)
    run = run_job(tmp_path, job, "local01")
    assert run.code == 0, run.stderr
    assert run.case("helper-script")["result"] == "pass"
    assert run.case("param")["result"] == "pass"  # job parameters override the definition's params
    assert any("at commit" in m for m in run.messages())


def test_bad_git_repository_is_a_job_error(tmp_path):
    job = textwrap.dedent(f"""\
        device_type: local-shell
        job_name: git-bad
        timeouts: {{job: {{minutes: 2}}}}
        actions:
          - boot: {{method: minimal}}
          - test:
              definitions:
                - {{repository: {tmp_path}/missing-repo, from: git, path: a.yaml, name: a}}
        """)
    run = run_job(tmp_path, job, "local01")
    assert run.code == 1
    job_result = run.job_result()
    assert job_result["error_type"] == "Job"
    assert "actions[1].test.definitions[0].repository" in job_result["error_msg"]


def test_url_and_tar_definitions(tmp_path, http_server):
    served = tmp_path / "served"
    served.mkdir()
    definition = ("metadata: {format: Lava-Test Test Definition 1.0, name: fetched}\n"
                  "run: {steps: ['lava-test-case fetched --shell test -f testdef.yaml']}\n")
    (served / "single.yaml").write_text(definition)
    (tmp_path / "tree" / "suite").mkdir(parents=True)
    (tmp_path / "tree" / "suite" / "def.yaml").write_text(definition.replace("fetched", "from-tar"))
    with tarfile.open(served / "defs.tar.gz", "w:gz") as archive:
        archive.add(tmp_path / "tree" / "suite", arcname="suite")
    base = http_server(served)
    job = textwrap.dedent(f"""\
        device_type: local-shell
        job_name: url-tar
        timeouts: {{job: {{minutes: 2}}}}
        actions:
          - boot: {{method: minimal}}
          - test:
              definitions:
                - {{repository: '{base}/single.yaml', from: url, path: single.yaml, name: single}}
                - {{repository: '{base}/defs.tar.gz', from: tar, path: suite/def.yaml, name: tarred}}
        """)
    run = run_job(tmp_path, job, "local01")
    assert run.code == 0, run.stderr
    assert run.case("fetched")["suite"] == "0_single"
    assert run.case("from-tar")["suite"] == "1_tarred"


def test_repeat_block_runs_each_stage_with_its_own_definitions(tmp_path):
    job = textwrap.dedent("""\
        device_type: local-shell
        job_name: repeat
        timeouts: {job: {minutes: 2}}
        actions:
          - repeat:
              count: 2
              actions:
                - boot: {method: minimal}
                - test:
                    definitions:
                      - from: inline
                        name: again
                        path: a.yaml
                        repository:
                          metadata: {format: Lava-Test Test Definition 1.0, name: again}
                          run: {steps: ['lava-test-case round --result pass']}
        """)
    run = run_job(tmp_path, job, "local01")
    assert run.code == 0, run.stderr
    rounds = [r for r in run.results if r["case"] == "round"]
    assert len(rounds) == 2
    assert [r["level"] for r in rounds] == ["2.1", "4.1"]


def test_file_url_outside_the_allowed_roots_is_rejected_before_anything_runs(tmp_path):
    secret = tmp_path / "secret" / "defs.yaml"
    secret.parent.mkdir()
    secret.write_text("metadata: {name: x}\nrun: {steps: [true]}\n")
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    job = textwrap.dedent(f"""\
        device_type: local-shell
        job_name: roots
        timeouts: {{job: {{minutes: 2}}}}
        actions:
          - boot: {{method: minimal}}
          - test:
              definitions:
                - {{repository: 'file://{secret}', from: url, path: defs.yaml, name: x}}
        """)
    run = run_job(tmp_path, job, "local01", env={"LAVA_DISPATCH_FILE_ROOTS": str(allowed)})
    assert run.code == 2
    assert f"file://{secret}: file:// URLs on this worker must be under {allowed}" in run.stderr
    assert not run.output_dir.exists()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_or_ctrl_c_finalizes_and_leaves_nothing(tmp_path, signum):
    job_file = tmp_path / "hang.yaml"
    job_file.write_text(local_job(["lava-test-case hangs --shell sleep 600"]))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    output = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-m", "tasks.cli", "run", str(job_file), "--device",
                                str(DEVICES / "local01.yaml"), "--output-dir", str(output)], cwd=ROOT,
                               env={**os.environ, "TMPDIR": str(scratch)}, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (output / "output.yaml").exists() and "STARTTC hangs" in (output / "output.yaml").read_text()
                 and any(cmdline_of(pid) == "sleep 600" for pid in processes_matching(str(scratch))), 60,
                 "the test's sleep to start")
        process.send_signal(signum)
        stdout, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:  # a failed wait: the run must not outlive the test
            process.kill()
            process.communicate()
    assert process.returncode == 3
    assert "job Canceled" in stdout
    results = yaml.safe_load((output / "results.yaml").read_text())
    assert results[-1]["error_type"] == "Canceled"
    wait_for(lambda: not processes_matching(str(scratch)), 10, "the board shell to end")


def test_pipeline_description_records_durations(tmp_path):
    run = run_job(tmp_path, local_job(["lava-test-case a --result pass"]), "local01")
    description = yaml.safe_load((run.output_dir / "description.yaml").read_text())
    assert description["state"] == "Complete"
    names = [entry["name"] for entry in description["pipeline"]]
    assert names[:2] == ["minimal-boot", "lava-overlay"]
    assert all("duration" in entry for entry in description["pipeline"])


def test_runner_raises_when_a_test_directory_is_missing(tmp_path):
    """A board that cannot see a test's files must not report an empty, passing run."""
    from pipeline.overlay import copy_scripts

    copy_scripts(tmp_path)
    stage = tmp_path / "0"
    stage.mkdir()
    (stage / "lava-test-runner.conf").write_text(f"{stage}/tests/0_gone\n")
    result = subprocess.run(["sh", str(tmp_path / "bin" / "lava-test-runner"), str(stage)], capture_output=True,
                            text=True, timeout=30, input="0badc0de\n")  # the dispatcher types the nonce
    raised = [line for line in result.stdout.splitlines() if line.startswith("<LAVA_SIGNAL_TESTRAISE 0_gone: ")]
    assert len(raised) == 1 and raised[0].endswith("/run.sh is missing on the board>"), result.stdout
    assert result.stdout.rstrip().endswith("<LAVA_TEST_RUNNER EXIT RUNNER=0badc0de>")


def test_lava_test_case_never_changes_the_test_shell(tmp_path):
    """run.sh calls lava-test-case as a function: it must still behave like a command of its own."""
    run = run_job(tmp_path, local_job([
        "lava-test-case exits --shell exit 3",
        "lava-test-case cd-away --shell cd /",
        "lava-test-case cwd-kept --shell test -f run.sh",
        "NAME=keep; lava-test-case bad/name --result pass; lava-test-case bad-result --result maybe",
        "lava-test-case name-kept --shell test \"$NAME\" = keep",
        "printf 'lava-test-case from-a-script --result pass --measurement 3\\n' > s.sh && sh s.sh",
        "command -v lava-test-case >/dev/null && lava-test-case on-path --result pass",
    ]), "local01")
    assert run.code == 0, run.stderr
    # `exit` ends lava-test-case itself (as a command of its own, without a result), never run.sh.
    assert run.case("cd-away")["result"] == "pass"
    assert run.case("cwd-kept")["result"] == "pass"
    assert run.case("name-kept")["result"] == "pass"
    assert run.case("from-a-script")["measurement"] == 3
    assert run.case("on-path")["result"] == "pass"
    assert not [r for r in run.results if r["case"] in ("exits", "bad/name", "bad-result")]
