"""The job submission: parsing, the typed model, and validation.

Validation happens before anything runs and reports every problem at once,
each with its place in the job (``actions[1].boot.method: ...``). The
models below (typed classes of ``pipeline.schema``) are the schema:
``job_json_schema()`` exports them for editors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Union

from pipeline.checks import as_regex, as_shell_name, key_text, relative_path_problem, shown
from pipeline.notify import Notify
from pipeline.schema import BeforeValidator, Field, Model, ValidationError
from pipeline.testdef import testdef_problems
from pipeline.timeouts import SHORT_FORM, UNIT_SECONDS, parse_duration
from pipeline.yamlload import YamlRejected, format_place
from pipeline.yamlload import load as load_document

OPERATING_SYSTEMS = ("android", "ubuntu", "debian", "oe")
COMPRESSIONS = ("gz", "bz2", "xz")
DEPLOY_TARGETS = ("tmpfs", "tftp", "usb", "sata")
BOOT_METHODS = ("qemu", "u-boot", "minimal")
DEFINITION_SOURCES = ("git", "inline", "url", "tar")
PLANNED_SOURCES = ("bzr", "file")
MULTINODE_REQUESTS = ("lava-sync", "lava-wait", "lava-send", "lava-wait-all", "lava-start")
PRIORITY_NAMES = {"high": 100, "medium": 50, "low": 0}
# Characters that never appear in a URL we accept: they could end a
# bootloader or shell command and start another one.
URL_FORBIDDEN = re.compile(r"[\s;'\"`\\<>|$&(){}\x00-\x1f\x7f]")
URL_SCHEMES = ("http://", "https://", "file://")
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


class ProblemList(Exception):
    """A rejected job: every problem, each naming its place."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


# ---------------------------------------------------------------- field types


def _duration(value: Any) -> float:
    return parse_duration(value)


def _url(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a URL string, got {type(value).__name__}")
    if URL_FORBIDDEN.search(value):
        bad = URL_FORBIDDEN.search(value).group()
        raise ValueError(f"{shown(value, 200)}: character {bad!r} is not allowed in a URL")
    if not value.startswith(URL_SCHEMES):
        raise ValueError(f"{shown(value, 200)}: only http://, https:// and file:// URLs are supported")
    if value.startswith("file://") and ".." in value[len("file://"):].split("/"):
        raise ValueError(f"{shown(value, 200)}: '..' is not allowed in a file:// path")
    return value


def _safe_name(value: Any) -> str:
    if not isinstance(value, str) or not SAFE_NAME.match(value):
        raise ValueError(f"{shown(value)} must be letters, digits, '.', '_', '+' or '-'")
    return value


def _priority(value: Any) -> Any:
    if isinstance(value, str):
        if value not in PRIORITY_NAMES:
            raise ValueError(f"{shown(value)} is not high, medium, low or a number from 0 to 100")
        return PRIORITY_NAMES[value]
    return value


def job_priority(value: Any) -> int:
    """``value`` checked as a job file's ``priority:`` is (high/medium/low or a whole number 0-100).

    For priorities given outside the job file (the CLI, ``tasks.submit``):
    the same rule, from the header's own field, and ValueError saying why.
    """
    errors: list[dict[str, Any]] = []
    spec = next(s for s in JobHeader._plan().specs if s.name == "priority")
    number = spec.node.validate(value, ("priority",), errors)
    if errors:
        raise ValueError("; ".join(f"priority: {error['msg']}" for error in errors))
    return number


def _role_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


# What a job file may hold where a converter takes more than the converted type (for editors).
DURATION_INPUT = {"anyOf": [
    {"type": "object", "properties": {unit: {"type": "number", "minimum": 0} for unit in UNIT_SECONDS},
     "additionalProperties": False, "minProperties": 1},
    {"type": "string", "pattern": SHORT_FORM.pattern}]}


def _or_string(own: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [{"type": "string"}, own]}


Duration = Annotated[float, BeforeValidator(_duration, lambda own: DURATION_INPUT)]
Url = Annotated[str, BeforeValidator(_url)]
SafeName = Annotated[str, BeforeValidator(_safe_name)]
ShellName = Annotated[str, BeforeValidator(as_shell_name)]
Regex = Annotated[str, BeforeValidator(as_regex)]  # compiled at validate time: a bad prompt fails here, not at boot
Os = Literal["android", "ubuntu", "debian", "oe"]
Compression = Literal["gz", "bz2", "xz"]


class Strict(Model, extra="forbid"):
    """A job's mapping: a misspelt key is an error, not silently ignored."""


# ---------------------------------------------------------------- protocols


class MultinodeRole(Strict):
    device_type: SafeName
    count: int = Field(1, ge=1, le=64)
    tags: list[str] = []
    context: dict[str, Any] | None = None
    timeout: Duration | None = None


class MultinodeProtocol(Strict):
    roles: dict[SafeName, MultinodeRole]
    timeout: Duration


class JobProtocols(Strict):
    lava_multinode: MultinodeProtocol | None = Field(None, alias="lava-multinode")


class ProtocolCall(Strict):
    """One call of the Multinode API made by an action (the seed's two forms)."""

    action: str | None = None
    request: Literal["lava-sync", "lava-wait", "lava-send", "lava-wait-all", "lava-start"] | None = None
    api: Literal["lava-sync", "lava-wait", "lava-send", "lava-wait-all", "lava-start"] | None = None
    messageID: str | None = None
    id: str | None = None
    key: str | None = None
    message: dict[str, Any] | None = None
    role: str | None = None
    expect_role: str | None = None
    roles: list[str] | None = None
    timeout: Duration | None = None

    @property
    def call(self) -> str:
        return self.request or self.api or ""

    @property
    def message_id(self) -> str | None:
        return self.messageID or self.id


def _protocol_calls(value: Any) -> Any:
    return [value] if isinstance(value, dict) else value


class ActionProtocols(Strict):
    lava_multinode: Annotated[list[ProtocolCall], BeforeValidator(
        _protocol_calls, lambda own: {"anyOf": [own["items"], own]})] = Field(
        [], alias="lava-multinode"
    )


# ---------------------------------------------------------------- actions


class ActionBase(Strict):
    """Keys every action block accepts."""

    timeout: Duration | None = None
    timeouts: dict[SafeName, Duration] | None = None
    failure_retry: int | None = Field(None, ge=1, le=100)
    repeat: int | None = Field(None, ge=1, le=1000)
    role: Annotated[list[str], BeforeValidator(_role_list, _or_string)] | None = None
    protocols: ActionProtocols | None = None
    # LAVA 2023 keys that change nothing here; accepted so its jobs load.
    namespace: str | None = None
    connection_namespace: str | None = Field(None, alias="connection-namespace")


class ImageSpec(Strict):
    """One downloadable file (LAVA 2023 ``images:`` entries, tftp mappings)."""

    url: Url
    compression: Compression | None = None
    md5sum: str | None = Field(None, pattern=r"^[0-9a-fA-F]{32}$")
    sha256sum: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$")
    image_arg: str | None = None
    format: Literal["cpio.newc", "tar", "ext4", "raw"] | None = None
    overlays: dict[str, Any] | None = None
    type: Literal["zimage", "uimage", "image"] | None = None
    header: Literal["u-boot"] | None = None
    root_partition: int | None = Field(None, ge=0, le=128)
    install_modules: bool | None = None
    install_overlay: bool | None = None


def _image_spec(value: Any) -> Any:
    return {"url": value} if isinstance(value, str) else value


FileRef = Annotated[ImageSpec, BeforeValidator(_image_spec, _or_string)]


class DeployTmpfs(ActionBase):
    to: Literal["tmpfs"]
    image: Url | None = None
    images: dict[SafeName, FileRef] | None = None
    compression: Compression | None = None
    md5sum: str | None = Field(None, pattern=r"^[0-9a-fA-F]{32}$")
    sha256sum: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$")
    os: Os
    root_partition: int | None = Field(None, ge=0, le=128)


class DeployTftp(ActionBase):
    to: Literal["tftp"]
    kernel: FileRef | None = None
    dtb: FileRef | None = None
    ramdisk: FileRef | None = None
    ramdisk_type: Literal["u-boot"] | None = Field(None, alias="ramdisk-type")
    nfsrootfs: FileRef | None = None
    os: Os | None = None


class DeployMedia(ActionBase):
    """usb and sata: an unchanged image written to secondary media."""

    to: Literal["usb", "sata"]
    image: Url
    compression: Compression | None = None
    md5sum: str | None = Field(None, pattern=r"^[0-9a-fA-F]{32}$")
    sha256sum: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$")
    kernel: str
    ramdisk: str | None = None
    dtb: str
    UUID: str = Field(pattern=r"^[0-9A-Fa-f-]{4,64}$")
    boot_part: int = Field(ge=1, le=128)
    os: Os | None = None
    device: str | None = None


DEPLOY_MODELS: dict[str, type[ActionBase]] = {
    "tmpfs": DeployTmpfs,
    "tftp": DeployTftp,
    "usb": DeployMedia,
    "sata": DeployMedia,
}


class AutoLogin(Strict):
    login_prompt: Regex
    username: str
    password_prompt: Regex | None = None
    password: str | None = None
    login_commands: list[str] = []


def _prompt_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class BootBase(ActionBase):
    prompts: Annotated[list[Regex], BeforeValidator(_prompt_list, _or_string)] | None = None
    auto_login: AutoLogin | None = None
    media: str | None = None


class BootQemu(BootBase):
    method: Literal["qemu"]


class BootUBoot(BootBase):
    method: Literal["u-boot"]
    commands: SafeName
    type: Literal["bootz", "bootm", "booti"]


class BootMinimal(BootBase):
    method: Literal["minimal"]
    reset: bool = False


BOOT_MODELS: dict[str, type[ActionBase]] = {"qemu": BootQemu, "u-boot": BootUBoot, "minimal": BootMinimal}


class TestDefinition(Strict):
    __test__ = False  # not a pytest test class
    from_: Literal["git", "inline", "url", "tar"] = Field(alias="from")
    repository: Any
    path: str
    name: SafeName | None = None
    revision: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")
    branch: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")
    parameters: dict[ShellName, Any] | None = None
    params: dict[ShellName, Any] | None = None
    shallow: bool = True
    lava_signal: Literal["stdout", "kmsg"] | None = Field(None, alias="lava-signal")


class TestBlock(ActionBase):
    __test__ = False
    name: SafeName | None = None
    definitions: list[dict[str, Any]] = Field(min_length=1)


class SubmitBlock(Model, extra="allow"):
    """Accepted as written: submit is ignored."""


# ---------------------------------------------------------------- job


class JobTimeouts(Strict):
    job: Duration
    action: Duration | None = None
    connection: Duration | None = None
    actions: dict[SafeName, Duration] = {}
    connections: dict[SafeName, Duration] = {}
    deploy: Duration | None = None
    boot: Duration | None = None
    test: Duration | None = None


class JobHeader(Strict):
    job_name: str = Field(min_length=1, max_length=200)
    device_type: SafeName | None = None
    priority: Annotated[int, BeforeValidator(
        _priority, lambda own: {"anyOf": [own, {"enum": list(PRIORITY_NAMES)}]})] = Field(50, ge=0, le=100)
    timeouts: JobTimeouts
    protocols: JobProtocols | None = None
    actions: list[Any] = Field(min_length=1)
    visibility: Any = None
    context: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    notify: Notify | None = None
    tags: list[str] = []
    secrets: dict[str, str] | None = None


@dataclass
class ActionBlock:
    """One action of the job, after validation."""

    kind: str  # deploy, boot, test, submit
    params: Any  # the validated model (DeployTmpfs, BootQemu, TestBlock, ...)
    place: str  # where it is in the job, e.g. "actions[2].boot"
    raw: dict[str, Any]
    definitions: list[TestDefinition] = field(default_factory=list)

    @property
    def roles(self) -> list[str]:
        return list(self.params.role or []) if hasattr(self.params, "role") else []


@dataclass
class RepeatBlock:
    count: int
    actions: list[ActionBlock]
    place: str


@dataclass
class Job:
    header: JobHeader
    actions: list[ActionBlock | RepeatBlock]
    raw: dict[str, Any]
    text: str

    @property
    def name(self) -> str:
        return self.header.job_name

    @property
    def multinode(self) -> MultinodeProtocol | None:
        return self.header.protocols.lava_multinode if self.header.protocols else None

    def flat_actions(self) -> list[ActionBlock]:
        """Every action block, repeat blocks opened once."""
        out: list[ActionBlock] = []
        for item in self.actions:
            out.extend(item.actions if isinstance(item, RepeatBlock) else [item])
        return out

    def urls(self) -> list[tuple[str, str]]:
        """(place, URL) of every file the job downloads."""
        found = []
        for block in self.flat_actions():
            params = block.params
            if isinstance(params, DeployTmpfs):
                if params.image:
                    found.append((f"{block.place}.image", params.image))
                for key, spec in (params.images or {}).items():
                    found.append((f"{block.place}.images.{key}.url", spec.url))
            elif isinstance(params, DeployTftp):
                for key in ("kernel", "dtb", "ramdisk", "nfsrootfs"):
                    spec = getattr(params, key)
                    if spec:
                        found.append((f"{block.place}.{key}", spec.url))
            elif isinstance(params, DeployMedia):
                found.append((f"{block.place}.image", params.image))
            for index, definition in enumerate(block.definitions):
                if definition.from_ in ("url", "tar"):
                    found.append((f"{block.place}.definitions[{index}].repository", definition.repository))
        return found

    def has_tests(self) -> bool:
        return any(block.kind == "test" for block in self.flat_actions())


# ---------------------------------------------------------------- parsing


def _errors(exc: ValidationError, prefix: str) -> list[str]:
    """One line per problem, each naming its place under prefix."""
    return [f"{format_place(err['loc'], prefix)}: {err['msg']}" for err in exc.errors()]


def load_yaml(text: str, what: str = "job", prefix: str = "") -> Any:
    """Load YAML within bounds (pipeline.yamlload); ProblemList names each problem's place."""
    try:
        return load_document(text, what, prefix)
    except YamlRejected as exc:
        raise ProblemList(exc.problems) from None


def _validate_model(model: type[Model], data: Any, place: str, problems: list[str]) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems.extend(_errors(exc, place))
        return None


def _single_key(item: Any, place: str, allowed: tuple[str, ...], problems: list[str]) -> tuple[str, Any] | None:
    if not isinstance(item, dict) or len(item) != 1:
        problems.append(f"{place}: each action is a mapping with exactly one of {', '.join(allowed)}")
        return None
    kind, body = next(iter(item.items()))
    if kind not in allowed:
        problems.append(f"{place}: {shown(kind)} is not one of {', '.join(allowed)}")
        return None
    return kind, body


def _parse_action(kind: str, body: Any, place: str, problems: list[str], in_repeat: bool) -> ActionBlock | None:
    if kind == "submit":
        params = _validate_model(SubmitBlock, body or {}, place, problems)
        return None if params is None else ActionBlock("submit", params, place, body or {})
    if not isinstance(body, dict):
        problems.append(f"{place}: expected a mapping of parameters")
        return None
    selector, models, choices = {
        "deploy": ("to", DEPLOY_MODELS, DEPLOY_TARGETS),
        "boot": ("method", BOOT_MODELS, BOOT_METHODS),
        "test": (None, None, None),
    }[kind]
    if selector:
        value = body.get(selector)
        if value is None:
            problems.append(f"{place}.{selector}: required but missing (one of {', '.join(choices)})")
            return None
        if not isinstance(value, str) or value not in models:
            problems.append(f"{place}.{selector}: {shown(value)} is not one of {', '.join(choices)}")
            return None
        model = models[value]
    else:
        model = TestBlock
    before = len(problems)
    params = _validate_model(model, body, place, problems)
    if params is None:
        return None
    block = ActionBlock(kind, params, place, body)
    if kind == "test":
        block.definitions = _parse_definitions(params.definitions, place, problems)
    _check_action_rules(block, problems, in_repeat)
    return block if len(problems) == before else None


def _parse_definitions(items: list[dict[str, Any]], place: str, problems: list[str]) -> list[TestDefinition]:
    out = []
    for index, item in enumerate(items):
        where = f"{place}.definitions[{index}]"
        if not isinstance(item, dict):
            problems.append(f"{where}: expected a mapping")
            continue
        source = item.get("from")
        if source is None:
            problems.append(f"{where}.from: required but missing: the repository type is never guessed "
                            f"(one of {', '.join(DEFINITION_SOURCES)})")
            continue
        if source in PLANNED_SOURCES:
            problems.append(f"{where}.from: {shown(source)} is not supported "
                            f"(use one of {', '.join(DEFINITION_SOURCES)})")
            continue
        definition = _validate_model(TestDefinition, item, where, problems)
        if definition is None:
            continue
        if definition.from_ == "inline":
            if not isinstance(definition.repository, dict):
                problems.append(f"{where}.repository: an inline definition is a mapping (metadata, run, ...)")
                continue
            found = testdef_problems(definition.repository, f"{where}.repository")
            if found:
                problems.extend(found)
                continue
        else:
            try:
                _url(definition.repository) if definition.from_ != "git" else _git_location(definition.repository)
            except ValueError as exc:
                problems.append(f"{where}.repository: {exc}")
                continue
        path_problem = relative_path_problem(definition.path)
        if path_problem:
            problems.append(f"{where}.path: {path_problem}")
            continue
        out.append(definition)
    return out


GIT_LOCATION = re.compile(r"^(?:(?:https?|git|ssh|file)://[^\s;'\"`\\<>|$&(){}]+|/[^\s;'\"`\\<>|$&(){}]+)$")


def _git_location(value: Any) -> str:
    if not isinstance(value, str) or not GIT_LOCATION.match(value) or value.startswith("-"):
        raise ValueError(f"{shown(value, 200)} is not a git URL "
                         "(http(s)://, git://, ssh://, file:// or an absolute path)")
    return value


def _check_action_rules(block: ActionBlock, problems: list[str], in_repeat: bool) -> None:
    params = block.params
    if params.failure_retry and params.repeat:
        problems.append(f"{block.place}: failure_retry and repeat cannot be used on the same action")
    if block.kind == "deploy" and params.repeat:
        problems.append(f"{block.place}.repeat: deploy does not support repeat (failure_retry is allowed)")
    if in_repeat and params.repeat:
        problems.append(f"{block.place}.repeat: an action inside a repeat block cannot repeat again")
    if isinstance(params, DeployTmpfs):
        if bool(params.image) == bool(params.images):
            problems.append(f"{block.place}: tmpfs needs exactly one of image (a URL) or images (a mapping)")
    if isinstance(params, DeployTftp):
        if not (params.kernel or params.ramdisk or params.nfsrootfs or params.dtb):
            problems.append(f"{block.place}: tftp needs at least a kernel, ramdisk, dtb or nfsrootfs")
        if params.nfsrootfs:
            spec = params.nfsrootfs
            if spec.compression not in (None, "gz", "bz2"):
                problems.append(f"{block.place}.nfsrootfs.compression: the NFS root must be a gz or bz2 tarball")
            elif spec.compression is None and not re.search(r"\.(tar\.gz|tgz|tar\.bz2|tbz2?)$", spec.url):
                problems.append(f"{block.place}.nfsrootfs: {spec.url!r} must be a gz or bz2 tarball "
                                "(.tar.gz, .tgz, .tar.bz2) or say compression: gz|bz2")
            if params.os is None:
                problems.append(f"{block.place}.os: required with nfsrootfs (one of {', '.join(OPERATING_SYSTEMS)})")
        if params.ramdisk_type and not params.ramdisk:
            problems.append(f"{block.place}.ramdisk-type: given without a ramdisk")


def parse_job(text: str) -> Job:
    """Parse and validate a job; raise ProblemList with every problem found."""
    data = load_yaml(text, "job")
    if not isinstance(data, dict):
        raise ProblemList(["(job): the job must be a YAML mapping with job_name, device_type, timeouts, actions"])
    problems: list[str] = []
    try:
        header = JobHeader.model_validate(data)
    except ValidationError as exc:
        problems.extend(_errors(exc, ""))
        header = None
    blocks: list[ActionBlock | RepeatBlock] = []
    raw_actions = data.get("actions")
    if isinstance(raw_actions, list):
        for index, item in enumerate(raw_actions):
            place = f"actions[{index}]"
            picked = _single_key(item, place, ("deploy", "boot", "test", "repeat", "submit"), problems)
            if picked is None:
                continue
            kind, body = picked
            if kind == "repeat":
                repeat = _parse_repeat(body, f"{place}.repeat", problems)
                if repeat:
                    blocks.append(repeat)
                continue
            block = _parse_action(kind, body, f"{place}.{kind}", problems, in_repeat=False)
            if block:
                blocks.append(block)
    if header is not None:
        if header.protocols and header.protocols.lava_multinode:
            if header.device_type:
                problems.append("device_type: a multinode job gives the device type of each role in "
                                "protocols.lava-multinode.roles, not at the top")
        elif not header.device_type:
            problems.append("device_type: required but missing")
        job = Job(header, blocks, data, text)
        if not problems:
            _check_job_rules(job, problems)
    if problems:
        raise ProblemList(problems)
    return job


def _parse_repeat(body: Any, place: str, problems: list[str]) -> RepeatBlock | None:
    if not isinstance(body, dict):
        problems.append(f"{place}: expected a mapping with count and actions")
        return None
    unknown = sorted(set(body) - {"count", "actions"}, key=str)
    for key in unknown:
        problems.append(f"{place}.{key_text(key)}: unknown key")
    count = body.get("count")
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 1000:
        problems.append(f"{place}.count: a whole number from 1 to 1000 is required")
    inner = body.get("actions")
    if not isinstance(inner, list) or not inner:
        problems.append(f"{place}.actions: a non-empty list of boot and test actions is required")
        return None
    actions = []
    for index, item in enumerate(inner):
        where = f"{place}.actions[{index}]"
        if isinstance(item, dict) and len(item) == 1 and next(iter(item)) in ("deploy", "repeat", "submit"):
            problems.append(f"{where}: only boot and test actions are supported inside repeat blocks")
            continue
        picked = _single_key(item, where, ("boot", "test"), problems)
        if picked:
            block = _parse_action(picked[0], picked[1], f"{where}.{picked[0]}", problems, in_repeat=True)
            if block:
                actions.append(block)
    if unknown or not isinstance(count, int) or len(actions) != len(inner):
        return None
    return RepeatBlock(count, actions, place)


def _check_job_rules(job: Job, problems: list[str]) -> None:
    header = job.header
    job_seconds = header.timeouts.job
    named = dict(header.timeouts.actions)
    for key in ("action", "connection", "deploy", "boot", "test"):
        value = getattr(header.timeouts, key)
        if value is not None and value > job_seconds:
            problems.append(f"timeouts.{key}: {value:g} s exceeds the job timeout of {job_seconds:g} s")
    for name, value in list(named.items()) + list(header.timeouts.connections.items()):
        if value > job_seconds:
            problems.append(f"timeouts.actions.{name}: {value:g} s exceeds the job timeout of {job_seconds:g} s")
    for block in job.flat_actions():
        if block.kind == "submit":
            continue
        params = block.params
        if params.timeout is not None and params.timeout > job_seconds:
            problems.append(f"{block.place}.timeout: {params.timeout:g} s exceeds the job timeout of {job_seconds:g} s")
        for name, value in (params.timeouts or {}).items():
            if value > job_seconds:
                problems.append(f"{block.place}.timeouts.{name}: {value:g} s exceeds the job timeout of {job_seconds:g} s")
    if job.has_tests():
        for block in job.flat_actions():
            params = block.params
            if isinstance(params, DeployTmpfs) and params.image and not params.compression:
                if re.search(r"\.(gz|bz2|xz)$", params.image):
                    problems.append(f"{block.place}.compression: the image looks compressed; with test actions "
                                    "the compression must be given (gz, bz2 or xz)")
    _check_multinode(job, problems)


def _check_multinode(job: Job, problems: list[str]) -> None:
    multinode = job.multinode
    blocks = [b for b in job.flat_actions() if b.kind != "submit"]
    if multinode is None:
        for block in blocks:
            if block.params.role:
                problems.append(f"{block.place}.role: role is only used in a multinode job "
                                "(protocols: lava-multinode: roles)")
            if block.params.protocols and block.params.protocols.lava_multinode:
                problems.append(f"{block.place}.protocols: lava-multinode calls need protocols.lava-multinode "
                                "at the top of the job")
        return
    roles = set(multinode.roles)
    starters: dict[str, set[str]] = {}  # role that is delayed -> roles expected to start it
    for block in blocks:
        place = block.place
        if not block.params.role:
            problems.append(f"{place}.role: every action of a multinode job names its role(s) "
                            f"(one or more of {', '.join(sorted(roles))})")
        for role in block.params.role or []:
            if role not in roles:
                problems.append(f"{place}.role: {role!r} is not a role of this job ({', '.join(sorted(roles))})")
        calls = block.params.protocols.lava_multinode if block.params.protocols else []
        for index, call in enumerate(calls):
            where = f"{place}.protocols.lava-multinode[{index}]" if len(calls) > 1 else f"{place}.protocols.lava-multinode"
            if not call.call:
                problems.append(f"{where}: request (or api) is required: one of {', '.join(MULTINODE_REQUESTS)}")
                continue
            if call.call == "lava-start":
                if not block.params.role:
                    problems.append(f"{where}: lava-start on an action without a role is an error")
                if call.expect_role:
                    if call.expect_role not in roles:
                        problems.append(f"{where}.expect_role: {call.expect_role!r} is not a role of this job")
                    for role in block.params.role or []:
                        if role == call.expect_role:
                            problems.append(f"{where}: role and expect_role are both {role!r}: a role cannot "
                                            "wait for its own lava-start")
                        starters.setdefault(role, set()).add(call.expect_role)
                for role in call.roles or []:
                    if role not in roles:
                        problems.append(f"{where}.roles: {role!r} is not a role of this job")
                if not call.expect_role and not call.roles:
                    problems.append(f"{where}: lava-start needs expect_role (on the delayed role) or roles "
                                    "(on the role that starts them)")
            elif not call.message_id:
                problems.append(f"{where}: {call.call} needs messageID (or id)")
            elif not SAFE_NAME.match(call.message_id):
                problems.append(f"{where}.messageID: {call.message_id!r} must be letters, digits, '.', '_', '-'")
    if starters and set(starters) >= roles:
        problems.append("protocols.lava-multinode: lava-start is specified on every role: no role could start")


# ---------------------------------------------------------------- schema


class _RepeatSchema(Strict):
    count: int = Field(ge=1, le=1000)
    actions: list[dict[str, Any]] = Field(min_length=1)


class _ActionItemSchema(Strict):
    deploy: Union[DeployTmpfs, DeployTftp, DeployMedia] | None = None
    boot: Union[BootQemu, BootUBoot, BootMinimal] | None = None
    test: TestBlock | None = None
    repeat: _RepeatSchema | None = None
    submit: dict[str, Any] | None = None


class _JobSchema(JobHeader):
    actions: list[_ActionItemSchema] = Field(min_length=1)
    definitions_format: TestDefinition | None = Field(None, description="the format of test definitions")


def job_json_schema() -> dict[str, Any]:
    """The job format as JSON Schema, for editors."""
    schema = _JobSchema.model_json_schema()
    schema["title"] = "lava-dispatch job"
    schema["properties"].pop("definitions_format")
    item = schema["$defs"]["_ActionItemSchema"]
    item["minProperties"] = item["maxProperties"] = 1
    return schema
