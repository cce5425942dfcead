"""Bounded decompression and downloads, and job data quoted as shell words in the generated scripts.

The bombs are made small at test time (megabytes of zeros, compressed to
kilobytes) and the limits set low through the environment, as an admin
would set them.
"""

from __future__ import annotations

import bz2
import gzip
import http.server
import io
import lzma
import subprocess
import tarfile
import textwrap
import threading
import tracemalloc
from pathlib import Path

import pytest
from conftest import run_job

from pipeline import limits
from pipeline.archive import safe_extract
from pipeline.download import download
from pipeline.errors import ConfigurationError, JobError
from pipeline.limits import Bound
from pipeline.overlay import check_testdef, write_environment, write_test

MIB = 1024 * 1024
COMPRESS = {"gz": gzip.compress, "bz2": bz2.compress, "xz": lzma.compress}


def files_over(directory: Path, size: int) -> list[Path]:
    return [p for p in directory.rglob("*") if p.is_file() and p.stat().st_size > size]


@pytest.mark.parametrize("kind", ["gz", "bz2", "xz"])
def test_an_image_bomb_stops_at_the_limit_and_leaves_nothing(tmp_path, monkeypatch, kind):
    bomb = tmp_path / f"disk.img.{kind}"
    bomb.write_bytes(COMPRESS[kind](bytes(10 * MIB)))
    assert bomb.stat().st_size < 100 * 1024
    monkeypatch.setenv("LAVA_DISPATCH_MAX_IMAGE_BYTES", "1M")
    downloads = tmp_path / "downloads"
    with pytest.raises(JobError, match=f"file://{bomb}: unpacks to more than 1048576 bytes "
                                       r"\(the limit is set by LAVA_DISPATCH_MAX_IMAGE_BYTES\)"):
        download(f"file://{bomb}", downloads / "image" / "disk.img", compression=kind)
    assert list(downloads.rglob("*")) == [downloads / "image"]  # no image, no partial file


def test_a_small_bz2_never_becomes_one_big_allocation(tmp_path, monkeypatch):
    bomb = tmp_path / "disk.img.bz2"
    bomb.write_bytes(bz2.compress(bytes(32 * MIB)))
    monkeypatch.setenv("LAVA_DISPATCH_MAX_IMAGE_BYTES", "64M")
    tracemalloc.start()
    try:
        path = download(f"file://{bomb}", tmp_path / "out" / "disk.img", compression="bz2")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert path.stat().st_size == 32 * MIB  # within the limit it unpacks whole
    assert peak < 8 * MIB, f"{peak} bytes at once"


def test_concatenated_streams_are_read_through_and_a_truncated_one_is_an_error(tmp_path):
    joined = tmp_path / "joined.gz"
    joined.write_bytes(gzip.compress(b"first\n") + gzip.compress(b"second\n"))
    assert download(f"file://{joined}", tmp_path / "joined", compression="gz").read_bytes() == b"first\nsecond\n"
    cut = tmp_path / "cut.xz"
    cut.write_bytes(lzma.compress(bytes(MIB))[:-40])
    with pytest.raises(JobError, match="the xz data ends early"):
        download(f"file://{cut}", tmp_path / "cut", compression="xz")
    assert not (tmp_path / "cut").exists() and not (tmp_path / "cut.part").exists()


class Unsized(http.server.BaseHTTPRequestHandler):
    """Sends 2 MiB without a Content-Length (HTTP/1.0: the body ends when the connection closes)."""

    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        for _ in range(32):
            self.wfile.write(bytes(64 * 1024))

    def log_message(self, *args):
        pass


def test_the_download_limit_holds_with_and_without_content_length(tmp_path, monkeypatch, http_server):
    served = tmp_path / "served"
    served.mkdir()
    (served / "big.img").write_bytes(bytes(2 * MIB))
    base = http_server(served)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Unsized)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("LAVA_DISPATCH_MAX_DOWNLOAD_BYTES", "1M")
    try:
        for url in (f"{base}/big.img", f"http://127.0.0.1:{server.server_address[1]}/big.img"):
            with pytest.raises(JobError, match=f"{url}: is more than 1048576 bytes "
                                               r"\(the limit is set by LAVA_DISPATCH_MAX_DOWNLOAD_BYTES\)"):
                download(url, tmp_path / "out" / "big.img")
            assert list((tmp_path / "out").iterdir()) == []
    finally:
        server.shutdown()
        server.server_close()


def zero_tarball(path: Path, members: dict[str, int], **options) -> Path:
    with tarfile.open(path, "w:gz", **options) as archive:
        for name, size in members.items():
            info = tarfile.TarInfo(name)
            info.size = size
            archive.addfile(info, io.BytesIO(bytes(size)))
    return path


def test_a_definition_tarball_bomb_is_refused_before_it_is_written(tmp_path):
    tarball = zero_tarball(tmp_path / "defs.tar.gz", {"smoke.yaml": 10, "zeros": 10 * MIB})
    assert tarball.stat().st_size < 100 * 1024
    target = tmp_path / "fetched"
    with pytest.raises(JobError, match="defs: holds more than 1048576 bytes"):
        safe_extract(tarball, target, "defs", size=Bound(MIB), files=Bound(100), links_inside=True)
    assert files_over(tmp_path, 100 * 1024) == []
    many = zero_tarball(tmp_path / "many.tar.gz", {f"f{n}": 0 for n in range(50)})
    with pytest.raises(JobError, match="defs: holds more than 20 entries"):
        safe_extract(many, target, "defs", size=Bound(MIB), files=Bound(20), links_inside=True)
    assert not target.exists()


def test_tar_metadata_too_big_to_be_real_is_refused(tmp_path):
    tarball = zero_tarball(tmp_path / "pax.tar.gz", {"a": 1}, format=tarfile.PAX_FORMAT,
                           pax_headers={"comment": "x" * (2 * MIB)})
    with pytest.raises(JobError, match="rootfs: the tarball holds a metadata header of"):
        safe_extract(tarball, tmp_path / "root", "rootfs")


@pytest.mark.parametrize("options", [["--format=gnu"], ["--format=posix"], ["--format=posix", "--sparse-version=0.1"]])
def test_sparse_files_in_a_root_filesystem_still_unpack(tmp_path, options):
    # Thirty islands of data: more than the old GNU header holds, so its extension headers are read too.
    source = tmp_path / "tree"
    source.mkdir()
    with open(source / "lastlog", "wb") as out:
        for n in range(30):
            out.seek(n * 256 * 1024)
            out.write(f"island {n}".encode())
    tarball = tmp_path / "rootfs.tar.gz"
    subprocess.run(["tar", "--sparse", *options, "-czf", str(tarball), "-C", str(source), "lastlog"], check=True)
    assert safe_extract(tarball, tmp_path / "root", "nfsrootfs") == 1
    assert (tmp_path / "root" / "lastlog").read_bytes() == (source / "lastlog").read_bytes()


def definition_job(repository: str, kind: str) -> str:
    return textwrap.dedent(f"""\
        device_type: local-shell
        job_name: limits
        timeouts: {{job: {{minutes: 2}}}}
        actions:
          - boot: {{method: minimal}}
          - test:
              definitions:
                - {{repository: '{repository}', from: {kind}, path: smoke.yaml, name: smoke}}
        """)


SMOKE = "metadata: {name: smoke}\nrun: {steps: ['lava-test-case smoke --shell true']}\n"


def test_definition_limits_are_set_from_the_environment(tmp_path):
    tarball = zero_tarball(tmp_path / "defs.tar.gz", {"zeros": 4 * MIB})
    run = run_job(tmp_path, definition_job(f"file://{tarball}", "tar"), "local01", name="tar",
                  env={"LAVA_DISPATCH_MAX_TESTDEF_BYTES": "1M"})
    assert run.code == 1
    assert run.job_result()["error_msg"] == (
        "actions[1].test.definitions[0].repository: holds more than 1048576 bytes "
        "(the limit is set by LAVA_DISPATCH_MAX_TESTDEF_BYTES)")
    repo = tmp_path / "repo"
    repo.mkdir()
    for n in range(8):
        (repo / f"f{n}.txt").write_text("x")
    (repo / "smoke.yaml").write_text(SMOKE)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@e", "-C", str(repo)]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "defs"], check=True)
    run = run_job(tmp_path, definition_job(str(repo), "git"), "local01", name="git",
                  env={"LAVA_DISPATCH_MAX_TESTDEF_FILES": "5"})
    assert run.code == 1
    assert "repository: holds more than 5 entries" in run.job_result()["error_msg"]
    run = run_job(tmp_path, definition_job(str(repo), "git"), "local01", name="git-ok")
    assert run.code == 0 and run.case("smoke")["result"] == "pass"


def test_limit_values_take_suffixes_and_a_bad_one_names_its_variable(monkeypatch):
    monkeypatch.setenv("LAVA_DISPATCH_MAX_IMAGE_BYTES", "2G")
    assert limits.image_bytes() == Bound(2 * 1024**3, "LAVA_DISPATCH_MAX_IMAGE_BYTES")
    monkeypatch.setenv("LAVA_DISPATCH_MAX_IMAGE_BYTES", "lots")
    with pytest.raises(ConfigurationError, match="LAVA_DISPATCH_MAX_IMAGE_BYTES='lots': expected a positive"):
        limits.image_bytes()


# ---------------------------------------------------------------- job data in generated scripts


def test_deps_and_params_reach_the_scripts_as_literal_words(tmp_path):
    markers = [tmp_path / f"marker{n}" for n in range(5)]
    deps = [f"$(touch {markers[0]})", f"`touch {markers[1]}`", f"pkg;touch {markers[2]}", "it's"]
    value = f"$(touch {markers[3]}) `touch {markers[4]}` 'single' \"double\" $HOME"
    testdef = {"metadata": {"name": "quoting"}, "params": {"VALUE": value},
               "install": {"deps": deps}, "run": {"steps": ['printf "%s" "$VALUE" > value.out']}}
    check_testdef(testdef, "def")
    board = tmp_path / "board"
    stub = tmp_path / "stub"
    stub.mkdir()
    (stub / "apt-get").write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$ARGV_FILE"\n')
    (stub / "apt-get").chmod(0o755)
    env = {"PATH": f"{stub}:/usr/bin:/bin", "ARGV_FILE": str(tmp_path / "argv"), "HOME": "/home/nobody"}
    nothing = {**env, "PATH": str(tmp_path / "empty")}  # no package manager at all
    shown = {("debian", "nothing"): f"lava: cannot install deps ({' '.join(deps)}): no package manager\n",
             (None, "stub"): "lava: deps not installed on os unknown: " + " ".join(deps) + "\n"}
    for os_name, path in (("debian", "stub"), ("debian", "nothing"), (None, "stub")):
        test = write_test(board / "0", 0, 0, "quoting", testdef, None, {"JOB_VALUE": value}, os_name, str(board))
        for script in ("install.sh", "run.sh"):
            for shell in ("/bin/sh", "/bin/bash"):
                assert subprocess.run([shell, "-n", script], cwd=test.directory).returncode == 0
                result = subprocess.run([shell, script], cwd=test.directory, env=env if path == "stub" else nothing,
                                        capture_output=True, text=True, timeout=30)
                assert result.returncode == 0, result.stderr
                if script == "install.sh" and (os_name, path) in shown:
                    assert result.stdout == shown[os_name, path]
        assert not any(marker.exists() for marker in markers)
        assert (test.directory / "value.out").read_text() == value
    assert (tmp_path / "argv").read_text().splitlines() == ["install", "-y", *deps]
    write_environment(board, {"FROM_PEER": value})
    shown = subprocess.run(["sh", "-c", f'. {board}/environment && printf "%s" "$FROM_PEER"'],
                           capture_output=True, text=True, env=env)
    assert shown.stdout == value and not any(marker.exists() for marker in markers)


@pytest.mark.parametrize("testdef,message", [
    ({"install": {"deps": ["-oDpkg::Pre-Invoke::=touch /tmp/x"]}}, r"def.install.deps\[0\]: not a package name"),
    ({"params": {"NOT-A-NAME": "1"}}, r"def.params.NOT-A-NAME: 'NOT-A-NAME' is not a shell variable name"),
    ({"parameters": {"X; touch y": "1"}}, r"def.parameters.'X; touch y': 'X; touch y' is not a shell variable name"),
])
def test_names_that_are_not_shell_words_are_refused(testdef, message):
    with pytest.raises(JobError, match=message):
        check_testdef({"metadata": {"name": "n"}, "run": {"steps": ["true"]}, **testdef}, "def")


def test_a_job_parameter_name_that_is_not_a_shell_name_is_refused(tmp_path):
    testdef = {"metadata": {"name": "n"}, "run": {"steps": ["true"]}}
    with pytest.raises(JobError, match=r"actions\[1\].test.definitions\[0\].params: 'a-b' is not a shell"):
        write_test(tmp_path / "0", 0, 0, "n", testdef, None, {"a-b": "x"}, None, "/lava",
                   "actions[1].test.definitions[0]")
