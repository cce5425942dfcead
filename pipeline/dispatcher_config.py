"""A worker's dispatcher configuration, in the form of LAVA's ``dispatcher.yaml``.

LAVA keeps one such file per worker (``/etc/lava-server/dispatcher.d/``) and
gives it to the dispatcher with each job: how the boards reach the worker
(``dispatcher_ip``, and per service ``dispatcher_http_ip``,
``dispatcher_tftp_ip``, ``dispatcher_nfs_ip``, each ``ip`` or ``ip:port``),
where downloads go (``dispatcher_download_dir``), a ``prefix`` for the
job's scratch directories, an HTTP cache (``http_url_format_string``,
``http_cache_fallback_origin_url``, ``http_cache_include_rules``,
``http_cache_exclude_rules``), ``tftp_size_limit``, ``nbd_server_port``,
``test_docker_bind_mounts``, ``rclone_path``/``rclone_config``.

Here it is read from ``--dispatcher FILE`` or ``$LAVA_DISPATCH_DISPATCHER_CONFIG``.
The known keys are checked; other keys are kept (labs add their own). Its
values are variables of the device dictionary's rendering (below the job's
context), and the engine reads the typed object. One key is ours:
``extra_context_variables``, job context variables this worker's templates
accept beyond LAVA's list (LAVA's ``EXTRA_CONTEXT_VARIABLES`` setting).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pipeline.errors import ProblemList, ValidationError
from pipeline.fields import Field, load_yaml, problem_lines
from pipeline.schema import BeforeValidator, Model

ENV_VAR = "LAVA_DISPATCH_DISPATCHER_CONFIG"
PROTOCOLS = ("http", "tftp", "nfs")

_ADDRESS = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.:-]+)$")
_PREFIX = re.compile(r"^[A-Za-z0-9._-]*$")
_VARIABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _address(value: Any) -> str:
    if not isinstance(value, str) or not _ADDRESS.match(value):
        raise ValueError(f"{value!r} is not an address (a host name or IP, optionally :port)")
    return value


def _prefix(value: Any) -> str:
    if not isinstance(value, str) or not _PREFIX.match(value):
        raise ValueError(f"{value!r} is not a directory-name prefix (letters, digits, '.', '_', '-')")
    return value


def _variables(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and _VARIABLE.match(v) for v in value):
        raise ValueError("a list of variable names (letters, digits, '_')")
    return value


Address = Annotated[str, BeforeValidator(_address)]
Prefix = Annotated[str, BeforeValidator(_prefix)]
VariableNames = Annotated[list[str], BeforeValidator(_variables)]


class DispatcherConfig(Model, extra="allow"):
    dispatcher_ip: Address | None = Field(None, description="how the boards reach this worker")
    dispatcher_http_ip: Address | None = None
    dispatcher_tftp_ip: Address | None = None
    dispatcher_nfs_ip: Address | None = None
    dispatcher_download_dir: str | None = None
    prefix: Prefix = ""
    http_url_format_string: str | None = None
    http_cache_fallback_origin_url: bool = False
    http_cache_include_rules: list[str] = []
    http_cache_exclude_rules: list[str] = []
    tftp_size_limit: int | None = Field(None, ge=0)
    nbd_server_port: int | str | None = None
    test_docker_bind_mounts: list[list[str]] = []
    rclone_path: str | None = None
    rclone_config: str | None = None
    extra_context_variables: VariableNames = []

    @classmethod
    def parse(cls, text: str, source: str = "dispatcher config") -> DispatcherConfig:
        data = load_yaml(text, source)
        if data is None:  # an empty file, or only comments (LAVA's example is all comments)
            data = {}
        if not isinstance(data, dict):
            raise ProblemList([f"{source}: the dispatcher configuration must be a YAML mapping"])
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ProblemList(problem_lines(exc, f"{source}:")) from None

    @classmethod
    def load(cls, path: str | Path) -> DispatcherConfig:
        path = Path(path)
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            reason = "does not exist" if isinstance(exc, FileNotFoundError) else f"cannot be read ({exc})"
            raise ProblemList([f"dispatcher config {str(path)!r}: {reason}"]) from None
        return cls.parse(text, path.name)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DispatcherConfig:
        """The file ``$LAVA_DISPATCH_DISPATCHER_CONFIG`` names, or an empty configuration."""
        path = (os.environ if environ is None else environ).get(ENV_VAR)
        return cls.load(path) if path else cls()

    def ip_for(self, protocol: str | None = None) -> str | None:
        """The address the boards use for ``protocol`` (http, tftp, nfs): its own key, else ``dispatcher_ip``.

        None when neither is set (LAVA then takes the address of the
        default route's interface; the engine decides what to do here).
        """
        if protocol is not None:
            if protocol not in PROTOCOLS:
                raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, not {protocol!r}")
            own: str | None = getattr(self, f"dispatcher_{protocol}_ip")
            if own:
                return own
        return self.dispatcher_ip

    def template_variables(self) -> dict[str, Any]:
        """The keys that are set, as variables for the device dictionary's rendering."""
        return {k: v for k, v in self.model_dump().items() if v is not None and k != "extra_context_variables"}
