"""Nothing from a test definition writes or reads outside the job's folder; file:// stays in its roots.

Real git repositories with committed symbolic links and real tarballs are
run through ``lava-dispatch run``; a marker file outside the job stands for
the rest of the worker and must be neither changed nor read (its content
never reaches the log or the overlay).
"""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
import textwrap
from pathlib import Path

import pytest
import yaml
from conftest import run_job

from pipeline import safefs
from pipeline.archive import safe_extract
from pipeline.download import file_roots_from_env, local_path
from pipeline.errors import JobError

SECRET = "MARKER-SECRET-4711"
DEFINITION = textwrap.dedent("""\
    metadata: {format: Lava-Test Test Definition 1.0, name: smoke}
    install: {steps: ['echo installing']}
    run: {steps: ['lava-test-case smoke --shell true']}
    """)
PLACE = "actions[1].test.definitions[0]"


@pytest.fixture
def marker(tmp_path) -> Path:
    """An executable file of 'the worker' outside the job, holding a definition that must never be read."""
    outside = tmp_path / "outside"
    outside.mkdir()
    path = outside / "some-tool"
    path.write_text(DEFINITION.replace("true", f"echo {SECRET}"))
    path.chmod(0o755)
    return path


def fingerprint(path: Path) -> tuple[bytes, int, int]:
    info = path.stat()
    return path.read_bytes(), info.st_mode, info.st_mtime_ns


def git_repo(path: Path, files: dict[str, str], links: dict[str, str]) -> Path:
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    for name, target in links.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, path / name)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@e", "-C", str(path)]
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "defs"], check=True)
    return path


def job_with(repository: str, path: str, kind: str = "git") -> str:
    return textwrap.dedent(f"""\
        device_type: local-shell
        job_name: hardening
        timeouts: {{job: {{minutes: 2}}}}
        actions:
          - boot: {{method: minimal}}
          - test:
              definitions:
                - {{repository: '{repository}', from: {kind}, path: {path}, name: smoke}}
        """)


def assert_not_leaked(run, marker: Path, before) -> None:
    assert fingerprint(marker) == before
    assert SECRET not in (run.output_dir / "output.yaml").read_text()
    overlay = run.output_dir / "overlay.tar.gz"
    if overlay.exists():
        with tarfile.open(overlay) as archive:
            for member in archive.getmembers():
                if member.isfile():
                    assert SECRET.encode() not in archive.extractfile(member).read(), member.name


@pytest.mark.parametrize("name", ["run.sh", "uuid", "testdef.yaml", "install.sh"])
def test_a_file_the_dispatcher_writes_is_never_written_through_a_link(tmp_path, marker, name):
    repo = git_repo(tmp_path / "repo", {"smoke.yaml": DEFINITION}, {name: str(marker)})
    before = fingerprint(marker)
    run = run_job(tmp_path, job_with(str(repo), "smoke.yaml"), "local01")
    assert run.code == 1, run.stdout
    result = run.job_result()
    assert result["error_type"] == "Job"
    assert PLACE in result["error_msg"] and f"{name!r} is a symbolic link" in result["error_msg"]
    assert_not_leaked(run, marker, before)


@pytest.mark.parametrize("layout", ["absolute-file", "relative-file", "absolute-directory", "relative-directory"])
def test_a_definition_path_that_leads_out_of_the_repository_is_refused(tmp_path, marker, layout):
    absolute = layout.startswith("absolute")
    if layout.endswith("file"):
        target = str(marker) if absolute else os.path.relpath(marker, tmp_path / "repo")
        repo, path = git_repo(tmp_path / "repo", {"other.yaml": DEFINITION}, {"smoke.yaml": target}), "smoke.yaml"
    else:
        target = str(marker.parent) if absolute else os.path.relpath(marker.parent, tmp_path / "repo")
        repo, path = git_repo(tmp_path / "repo", {"other.yaml": DEFINITION}, {"defs": target}), "defs/some-tool"
    before = fingerprint(marker)
    run = run_job(tmp_path, job_with(str(repo), path), "local01")
    assert run.code == 1, run.stdout
    result = run.job_result()
    assert result["error_type"] == "Job" and f"{PLACE}.path" in result["error_msg"]
    assert ("absolute path" if absolute else "leads out of the directory") in result["error_msg"]
    assert_not_leaked(run, marker, before)


@pytest.mark.parametrize("path", ["smoke.yaml", "alias/smoke.yaml"])
def test_links_inside_the_repository_still_work(tmp_path, path):
    repo = git_repo(tmp_path / "repo", {
        "real/smoke.yaml": DEFINITION.replace("--shell true", "--shell sh ./helper"),
        "real/helper.sh": "echo helper\n",
    }, {"smoke.yaml": "real/smoke.yaml", "helper": "real/helper.sh", "alias": "real"})
    run = run_job(tmp_path, job_with(str(repo), path), "local01")
    assert run.code == 0, run.stdout + run.stderr
    assert run.case("smoke")["result"] == "pass"


def make_tarball(path: Path, members: list[tuple[str, str, str]]) -> Path:
    """members: (name, kind, data or link target); kind is file, dir, sym or hard."""
    with tarfile.open(path, "w:gz") as archive:
        for name, kind, value in members:
            info = tarfile.TarInfo(name)
            info.type = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE,
                         "hard": tarfile.LNKTYPE}[kind]
            data = value.encode() if kind == "file" else b""
            if kind in ("sym", "hard"):
                info.linkname = value
            info.size, info.mode = len(data), 0o755 if kind == "dir" else 0o644
            archive.addfile(info, io.BytesIO(data) if kind == "file" else None)
    return path


def tar_escapes(marker: Path) -> dict[str, tuple[list, str]]:
    return {
        "absolute-symlink": ([("smoke.yaml", "file", DEFINITION), ("tool", "sym", str(marker))],
                             "is an absolute symbolic link"),
        "dotdot-symlink": ([("smoke.yaml", "file", DEFINITION), ("tool", "sym", "../../outside/some-tool")],
                           "points out of the target"),
        "chained-symlinks": ([("sub", "dir", ""), ("sub/up", "sym", ".."), ("tool", "sym", "sub/up/..")],
                             "points out of the target"),
        "hard-link-inside": ([("smoke.yaml", "file", DEFINITION), ("copy.yaml", "hard", "smoke.yaml")],
                             "is a hard link"),
        "hard-link-out": ([("tool", "hard", str(marker))], "is a hard link"),
    }


@pytest.mark.parametrize("kind", ["absolute-symlink", "dotdot-symlink", "chained-symlinks", "hard-link-inside",
                                  "hard-link-out"])
def test_a_definition_tarball_with_links_out_is_refused_before_anything_is_written(tmp_path, marker, kind):
    members, message = tar_escapes(marker)[kind]
    tarball = make_tarball(tmp_path / "defs.tar.gz", members)
    target = tmp_path / "job" / "fetched"
    before = fingerprint(marker)
    with pytest.raises(JobError, match=f"definitions.0..repository: .*{message}"):
        safe_extract(tarball, target, "definitions[0].repository", links_inside=True)
    assert not target.exists() or list(target.iterdir()) == []
    assert fingerprint(marker) == before and marker.stat().st_nlink == 1


def test_a_tar_definition_with_an_absolute_link_fails_the_job(tmp_path, marker):
    tarball = make_tarball(tmp_path / "defs.tar.gz", tar_escapes(marker)["absolute-symlink"][0])
    before = fingerprint(marker)
    run = run_job(tmp_path, job_with(f"file://{tarball}", "smoke.yaml", "tar"), "local01")
    assert run.code == 1
    assert f"{PLACE}.repository: link 'tool'" in run.job_result()["error_msg"]
    assert_not_leaked(run, marker, before)


@pytest.mark.parametrize("tarfile_filters", ["present", "absent"])
def test_the_overlay_is_not_unpacked_through_a_link_the_root_filesystem_left(tmp_path, marker, monkeypatch,
                                                                             tarfile_filters):
    """Also where tarfile has no extraction filters (Python before 3.11.4, Debian 12's own python3)."""
    from pipeline.actions.common.nfsroot import extract_rootfs, overlay_target

    if tarfile_filters == "absent":
        monkeypatch.delattr(tarfile, "data_filter")
    # The job's NFS root holds the overlay's directory with bin/ pointing at the worker's files.
    rootfs = make_tarball(tmp_path / "rootfs.tar.gz", [("lava-7", "dir", ""), ("lava-7/bin", "sym", str(marker.parent))])
    extract_rootfs(rootfs, tmp_path / "root")
    overlay = make_tarball(tmp_path / "overlay.tar.gz", [("bin", "dir", ""), ("bin/some-tool", "file", "#!/bin/sh\n")])
    before = fingerprint(marker)
    with pytest.raises(JobError, match="through the symbolic link 'bin' already in the target"):
        safe_extract(overlay, overlay_target(tmp_path / "root", "/lava-7"), "overlay")
    assert fingerprint(marker) == before
    # What the checks let through is unpacked the same way with or without filters.
    assert safe_extract(overlay, tmp_path / "clean", "overlay") == 2
    assert (tmp_path / "clean" / "bin" / "some-tool").read_text() == "#!/bin/sh\n"


def test_safefs_refuses_links_and_never_writes_through_a_hard_link(tmp_path, marker):
    root = tmp_path / "root"
    (root / "dir").mkdir(parents=True)
    os.symlink(marker.parent, root / "linked-dir")
    os.symlink(marker, root / "linked-file")
    os.link(marker, root / "hard")
    before = fingerprint(marker)
    with pytest.raises(JobError, match=r"there: 'linked-dir/some-tool': 'linked-dir' is a symbolic link"):
        safefs.write_under(root, "linked-dir/some-tool", "x", "there")
    with pytest.raises(JobError, match="'linked-file' is a symbolic link"):
        safefs.write_under(root, "linked-file", "x", "there")
    with pytest.raises(JobError, match="'linked-file' is a symbolic link, not a file"):
        safefs.read_under(root, "linked-file", "there", 1 << 20)
    with pytest.raises(JobError, match="must be a relative path inside"):
        safefs.write_under(root, "../outside/some-tool", "x", "there")
    safefs.write_under(root, "hard", "replaced\n", "there")  # a new file, the marker keeps its bytes
    assert (root / "hard").read_text() == "replaced\n" and fingerprint(marker) == before
    safefs.write_under(root, "dir/new/file", "made\n", "there", make_parents=True)
    assert safefs.read_under(root, "dir/new/file", "there", 100) == b"made\n"
    with pytest.raises(JobError, match="larger than 3 bytes"):
        safefs.read_under(root, "dir/new/file", "there", 3)


# ---------------------------------------------------------------- file:// roots


def test_file_roots_default_to_none_on_a_lab_worker_and_any_on_a_local_run(tmp_path, monkeypatch):
    monkeypatch.delenv("LAVA_DISPATCH_FILE_ROOTS", raising=False)
    assert file_roots_from_env() is None
    assert file_roots_from_env(lab=True) == []
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "kernel").write_text("k")
    with pytest.raises(JobError, match="must be under none"):
        local_path(f"file://{tmp_path}/images/kernel", file_roots_from_env(lab=True))
    monkeypatch.setenv("LAVA_DISPATCH_FILE_ROOTS", f"{tmp_path}/images:/nonexistent")
    assert local_path(f"file://{tmp_path}/images/kernel", file_roots_from_env(lab=True)) == tmp_path / "images/kernel"


def test_a_link_inside_a_root_to_a_file_outside_is_refused(tmp_path, marker):
    root = tmp_path / "images"
    root.mkdir()
    os.symlink(marker, root / "innocent.img")
    with pytest.raises(JobError, match=f"file://{root}/innocent.img: file:// URLs on this worker must be under"):
        local_path(f"file://{root}/innocent.img", [root])


def test_a_local_git_repository_outside_the_roots_is_refused(tmp_path):
    repo = git_repo(tmp_path / "private", {"smoke.yaml": DEFINITION}, {})
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    run = run_job(tmp_path, job_with(str(repo), "smoke.yaml"), "local01",
                  env={"LAVA_DISPATCH_FILE_ROOTS": str(allowed)})
    assert run.code == 1
    assert (f"{PLACE}.repository: local git repositories on this worker must be under {allowed}"
            in run.job_result()["error_msg"])
    assert not any("at commit" in m for m in run.messages())


@pytest.mark.parametrize("content", [
    f"root: [{SECRET}:19000:0:99999:7:::\n",  # a syntax error on a line holding the secret
    f"metadata: !{SECRET} x\n",  # an unknown tag
    f"a: *{SECRET}\n",  # an unknown alias
    f"{SECRET}\n",  # a string, not a mapping
    b"\xff" + SECRET.encode(),  # not UTF-8
])
def test_errors_about_a_fetched_file_never_quote_it(tmp_path, content):
    host_file = tmp_path / "host" / "shadow"
    host_file.parent.mkdir()
    host_file.write_bytes(content if isinstance(content, bytes) else content.encode())
    run = run_job(tmp_path, job_with(f"file://{host_file}", "shadow", "url"), "local01")
    assert run.code == 1
    result = run.job_result()
    assert result["error_type"] == "Job" and PLACE in result["error_msg"]
    assert SECRET not in run.stdout + run.stderr + (run.output_dir / "output.yaml").read_text()


@pytest.mark.lab
def test_a_lab_worker_reads_no_host_file_unless_roots_are_set(tmp_path):
    from lab_helpers import local_job, running_lab, wait_for

    from tasks.records import get_job
    from tasks.scheduler import Lab as Scheduler

    host_file = tmp_path / "defs.yaml"
    host_file.write_text(DEFINITION.replace("true", f"echo {SECRET}"))
    job = yaml.safe_load(local_job("roots"))
    job["actions"][1]["test"]["definitions"] = [{"repository": f"file://{host_file}", "from": "url",
                                                 "path": "defs.yaml", "name": "roots"}]
    job = yaml.safe_dump(job)
    with running_lab("lab-roots-") as lab:
        lab.env.pop("LAVA_DISPATCH_FILE_ROOTS")
        lab.start_worker("roots1")
        job_id = Scheduler(lab.r()).submit(job).job_id
        record = wait_for(lambda: (rec := get_job(lab.r(), job_id))["state"] in ("Complete", "Incomplete") and rec,
                          60, f"job {job_id}")
    assert record["state"] == "Incomplete", record
    assert "file:// URLs on this worker must be under none" in record["error"]
    assert SECRET not in str(record)
