"""Actions that prepare the LAVA overlay (test definitions + on-target scripts), and apply it locally.

Every deploy that test actions follow prepares the overlay (``overlay_action``);
each method then applies it its own way (into a ramdisk, an NFS root, a
drive, a local directory).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

import yaml

from pipeline import limits, overlay, safefs
from pipeline.action import Action
from pipeline.archive import safe_extract
from pipeline.blocks import ActionBlock
from pipeline.context import JobContext
from pipeline.download import confined, download
from pipeline.errors import Bug, InfrastructureError, JobError
from pipeline.limits import Bound
from pipeline.processes import run_command
from pipeline.registry import known_action
from pipeline.testdef import TestDefinition


def overlay_root(ctx: JobContext) -> str:
    """Where the overlay lives on the board."""
    template = str(ctx.device.parameters.get("lava_test_results_dir") or "/lava-{job_id}")
    return overlay.results_dir(template, ctx.job_id).replace("{workdir}", str(ctx.workdir))


def staging_dir(ctx: JobContext) -> Path:
    """The overlay's files on the dispatcher: the contents of overlay_root() on the board.

    The tarball holds paths relative to that root; each way of applying it
    (ramdisk, NFS root, drive, local directory) puts them under the root.
    """
    return ctx.workdir / "overlay"


def stage_dir(ctx: JobContext, stage: int) -> Path:
    return staging_dir(ctx) / str(stage)


class RepoAction(Action):
    """Fetch one test definition into ``<stage>/fetched/<n>``."""

    def __init__(self, stage: int, index: int, definition: TestDefinition, place: str):
        super().__init__()
        self.stage, self.index, self.definition, self.place = stage, index, definition, place
        self.summary = f"{self.definition.from_} test definition {definition.name or definition.path}"

    def target(self, ctx: JobContext) -> Path:
        return stage_dir(ctx, self.stage) / "fetched" / str(self.index)

    def run(self, ctx: JobContext) -> None:
        target = self.target(ctx)
        target.mkdir(parents=True, exist_ok=True)
        self.fetch(ctx, target)
        found = overlay.locate_testdef(target, self.definition.path, self.place)
        if not (target / found).is_file() or (target / found).is_symlink():
            where = self.definition.repository if isinstance(self.definition.repository, str) else "the definition"
            raise JobError(f"{self.place}.path: {self.definition.path!r} is not a file in {where}")

    def fetch(self, ctx: JobContext, target: Path) -> None:
        raise NotImplementedError


@known_action
class GitRepoAction(RepoAction):
    name = "git-repo-action"
    description = "clone a git repository holding test definitions"

    def fetch(self, ctx: JobContext, target: Path) -> None:
        definition = self.definition
        # Only the protocols a lab expects; a local repository only where the worker allows host files.
        protocols = "http:https:git:ssh"
        argv = ["git", "clone", "--quiet"]
        if definition.repository.startswith(("/", "file://")):
            local = urlparse(definition.repository).path if definition.repository.startswith("file:") else \
                definition.repository
            confined(unquote(local), ctx.file_roots, f"{self.place}.repository", "local git repositories")
            protocols += ":file"
            argv.append("--no-local")  # the transport, not hard links to the source's objects
        if definition.branch:
            argv += ["--branch", definition.branch]
        if definition.shallow and not definition.revision:
            argv += ["--depth", "1"]
        clone = target.with_name(f"{target.name}.git")  # beside the target: no name of the repository clashes
        shutil.rmtree(clone, ignore_errors=True)  # left by an earlier attempt
        argv += ["--", definition.repository, str(clone)]
        env = {"GIT_TERMINAL_PROMPT": "0", "PATH": "/usr/bin:/bin:/usr/local/bin", "HOME": str(ctx.workdir),
               "GIT_ALLOW_PROTOCOL": protocols}
        ctx.logger.info(f"git clone {definition.repository}")
        try:
            run_command(argv, ctx.remaining(), "git clone", env=env, registry=ctx.processes)
            if definition.revision:
                run_command(["git", "-C", str(clone), "checkout", "--quiet", definition.revision, "--"],
                            ctx.remaining(), "git checkout", env=env, registry=ctx.processes)
            commit = run_command(["git", "-C", str(clone), "rev-parse", "HEAD"], ctx.remaining(),
                                 "git rev-parse", env=env).strip()
        except InfrastructureError as exc:
            # An unreachable repository or a missing revision is the job's to fix.
            raise JobError(f"{self.place}.repository: {exc}") from None
        ctx.logger.info(f"{definition.repository} at commit {commit}")
        shutil.rmtree(clone / ".git")
        size, entries = safefs.tree_size(clone)
        limits.testdef_files().check(entries, f"{self.place}.repository", "holds", "entries")
        limits.testdef_bytes().check(size, f"{self.place}.repository", "holds")
        # The definition's own files (scripts beside the YAML) come along.
        for item in clone.iterdir():
            item.rename(target / item.name)
        clone.rmdir()
        if not os.path.lexists(target / "commit"):  # a file of the repository's own keeps its name
            safefs.write_under(target, "commit", commit, self.place)


@known_action
class InlineRepoAction(RepoAction):
    name = "inline-repo-action"
    description = "write an inline test definition"

    def fetch(self, ctx: JobContext, target: Path) -> None:
        safefs.write_under(target, self.definition.path, yaml.safe_dump(self.definition.repository, sort_keys=False),
                           f"{self.place}.path", make_parents=True)


@known_action
class UrlRepoAction(RepoAction):
    name = "url-repo-action"
    description = "download a test definition file"

    def fetch(self, ctx: JobContext, target: Path) -> None:
        bound = Bound(limits.TESTDEF_FILE_BYTES)
        download(self.definition.repository, target / self.definition.path, roots=ctx.file_roots,
                 timeout=ctx.remaining(), size_limit=bound, output_limit=bound, log=ctx.logger.debug,
                 check=ctx.check)


@known_action
class TarRepoAction(RepoAction):
    name = "tar-repo-action"
    description = "download and unpack a tarball of test definitions"

    def fetch(self, ctx: JobContext, target: Path) -> None:
        tarball = target.parent / f"{self.index}.tar"
        size = limits.testdef_bytes()
        download(self.definition.repository, tarball, roots=ctx.file_roots, timeout=ctx.remaining(),
                 size_limit=size, output_limit=size, log=ctx.logger.debug, check=ctx.check)
        try:
            safe_extract(tarball, target, f"{self.place}.repository", size=size, files=limits.testdef_files(),
                         links_inside=True)
        finally:
            tarball.unlink()


REPO_ACTIONS = {"git": GitRepoAction, "inline": InlineRepoAction, "url": UrlRepoAction, "tar": TarRepoAction}


class DefinitionLayout:
    """What the three layout steps of one definition share: its fetch, then its placement."""

    def __init__(self, repo: RepoAction, os_name: str | None):
        self.repo, self.os_name = repo, os_name
        self.placed: overlay.Placement | None = None

    def placement(self) -> overlay.Placement:
        if self.placed is None:
            raise Bug(f"{self.repo.place}: test-overlay has not laid out this definition")
        return self.placed


class LayoutStep(Action):
    """One of the three layout steps of a definition."""

    def __init__(self, layout: DefinitionLayout):
        super().__init__()
        self.layout = layout


@known_action
class TestOverlayAction(LayoutStep):
    """Check a fetched definition and lay out its files."""

    __test__ = False
    name = "test-overlay"
    description = "check a test definition and lay out its files"

    def __init__(self, layout: DefinitionLayout):
        super().__init__(layout)
        self.summary = f"test definition {layout.repo.definition.name or layout.repo.definition.path}"

    def run(self, ctx: JobContext) -> None:
        repo = self.layout.repo
        fetched = repo.target(ctx)
        testdef = overlay.skip_install(overlay.load_testdef(fetched, repo.definition.path, repo.place),
                                       repo.definition.skip_install)
        name = repo.definition.name or str(testdef["metadata"]["name"])
        params = {**(repo.definition.params or {}), **(repo.definition.parameters or {})}
        self.layout.placed = overlay.place_test(stage_dir(ctx, repo.stage), repo.stage, repo.index,
                                                overlay.safe_suite(name), testdef, fetched, params, overlay_root(ctx),
                                                repo.place)


@known_action
class TestInstallOverlayAction(LayoutStep):
    __test__ = False
    name = "test-install-overlay"
    description = "write the install script of a test definition (its deps and install steps)"
    summary = "install script"

    def run(self, ctx: JobContext) -> None:
        overlay.write_install(self.layout.placement(), self.layout.os_name)


@known_action
class TestRunscriptOverlayAction(LayoutStep):
    __test__ = False
    name = "test-runscript-overlay"
    description = "write the run script of a test definition and add it to its stage"
    summary = "run script"

    def run(self, ctx: JobContext) -> None:
        test = overlay.write_run(self.layout.placement())
        placed = [each for each in ctx.stage_tests.get(test.stage, []) if each.index != test.index] + [test]
        ctx.stage_tests[test.stage] = placed
        overlay.write_stage_conf(stage_dir(ctx, test.stage), placed, overlay_root(ctx), test.stage)
        ctx.logger.info(f"stage {test.stage}: " + ", ".join(each.name for each in placed))


@known_action
class LavaMultinodeOverlay(Action):
    name = "lava-multinode-overlay"
    description = "add the multinode API's scripts (lava-send, lava-wait, lava-sync, ...) to the overlay"
    summary = "multinode scripts"

    def run(self, ctx: JobContext) -> None:
        staging = staging_dir(ctx)
        staging.mkdir(parents=True, exist_ok=True)
        overlay.copy_scripts(staging, multinode=True)


@known_action
class CompressOverlay(Action):
    name = "compress-overlay"
    description = "pack the overlay as a tarball kept with the job's output"
    summary = "overlay tarball"

    def run(self, ctx: JobContext) -> None:
        staging = staging_dir(ctx)
        overlay.copy_scripts(staging, multinode=False)
        overlay.write_environment(staging, {"LAVA_JOB_ID": ctx.job_id, "LAVA_BOARD": ctx.board_name,
                                         "LAVA_DEVICE_TYPE": ctx.device.device_type, **ctx.environment})
        # Only the stages' own fetch directories: a definition may hold a "fetched" of its own.
        for fetched in list(staging.glob("*/fetched")):
            if fetched.is_dir() and not fetched.is_symlink():
                shutil.rmtree(fetched)
        ctx.output_dir.mkdir(parents=True, exist_ok=True)
        tarball = ctx.output_dir / "overlay.tar.gz"
        overlay.pack_tarball(staging, tarball)
        ctx.overlay_tarball = tarball
        ctx.overlay_dir = staging
        ctx.logger.info(f"overlay {tarball} ({tarball.stat().st_size} bytes)")


@known_action
class LavaOverlayAction(Action):
    name = "lava-overlay"
    description = "add test definitions and the LAVA API scripts to the deployment"
    summary = "overlay the lava support scripts"

    def __init__(self, stages: list[tuple[int, ActionBlock]], os_name: str | None):
        super().__init__()
        repos: list[RepoAction] = []
        for stage, block in stages:
            for index, definition in enumerate(block.definitions):
                cls = REPO_ACTIONS[definition.from_]
                repos.append(cls(stage, index, definition, f"{block.place}.definitions[{index}]"))
        definitions = TestDefinitionAction()
        definitions.summary = f"{len(repos)} test definition(s)"
        steps: list[Action] = []
        for repo in repos:  # as LAVA: fetch, lay out, install script, run script, for each definition
            layout = DefinitionLayout(repo, os_name)
            steps += [repo, TestOverlayAction(layout), TestInstallOverlayAction(layout),
                      TestRunscriptOverlayAction(layout)]
        definitions.internal(*steps)
        self.stages = stages
        self.internal(LavaMultinodeOverlay(), definitions, CompressOverlay())

    def run(self, ctx: JobContext) -> None:
        for stage, _block in self.stages:  # a stage's tests are the ones this overlay lays out
            ctx.stage_tests[stage] = []
        super().run(ctx)


@known_action
class TestDefinitionAction(Action):
    __test__ = False
    name = "test-definition"
    description = "fetch the test definitions and lay them out"


def overlay_action(plan_stages: list[tuple[int, ActionBlock]], os_name: str | None) -> LavaOverlayAction | None:
    """The lava-overlay action for the test stages a deployment prepares (None without tests)."""
    return LavaOverlayAction(plan_stages, os_name) if plan_stages else None


@known_action
class ApplyOverlayLocal(Action):
    """Extract the overlay into the local board's root directory on the dispatcher."""

    name = "apply-overlay-local"
    description = "unpack the overlay into the local board's directory"
    summary = "overlay into the board directory"

    def run(self, ctx: JobContext) -> None:
        safe_extract(ctx.overlay_files()[0], Path(overlay_root(ctx)), "overlay")
