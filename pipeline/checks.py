"""Small checks shared by the job, device and test definition validators.

Each ``*_problem`` check takes a value from a file and returns what is
wrong with it (None when nothing is), so that callers put it after the
value's place; none raises on any input. The ``as_*`` converters raise
ValueError with that text, for typed models.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Any

# What `export NAME=...` accepts: anything else makes the shell script abort.
SHELL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
MAX_PATH_BYTES = 4096  # PATH_MAX
MAX_NAME_BYTES = 255  # NAME_MAX


def shown(value: Any, limit: int = 60) -> str:
    """A value as a message quotes it: repr, shortened; a mapping or a list by its kind."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (list, tuple, set)):
        return "a list"
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return "a very large number"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def key_text(key: Any) -> str:
    """A key as a place names it: as written when it is a plain word, quoted when it holds a space, ':' or a control."""
    if isinstance(key, str) and key and key.isprintable() and not any(c.isspace() or c in ":[]'\"" for c in key):
        return key if len(key) <= 64 else key[:60] + "..."
    return shown(key)


def regex_problem(pattern: Any) -> str | None:
    """Why ``pattern`` is not a regular expression Python compiles (prompts, parse patterns)."""
    if not isinstance(pattern, str):
        return f"expected a regular expression (a string), got {shown(pattern)}"
    try:
        re.compile(pattern)
    except re.error as exc:
        return f"{shown(pattern)} is not a valid regular expression: {exc}"
    except (RecursionError, OverflowError, ValueError) as exc:  # nesting or a repeat count too large
        return f"{shown(pattern)} is not a usable regular expression: {exc}"
    return None


def shell_name_problem(name: Any) -> str | None:
    if isinstance(name, str) and SHELL_NAME.match(name):
        return None
    return (f"{shown(name)} is not a shell variable name (letters, digits and '_', not starting with a digit): "
            "it is exported to the test shell")


def relative_path_problem(path: Any) -> str | None:
    """Why ``path`` cannot name a file inside a repository or directory."""
    if not isinstance(path, str):
        return f"expected a relative path (a string), got {shown(path)}"
    if "\x00" in path:
        return f"{shown(path)}: a path cannot hold a NUL character"
    encoded = path.encode("utf-8", "surrogatepass")
    if len(encoded) > MAX_PATH_BYTES:
        return f"the path is {len(encoded)} bytes long, more than {MAX_PATH_BYTES}"
    parts = PurePosixPath(path).parts
    if path.startswith("/") or ".." in parts:
        return f"{shown(path)} must be a relative path inside the repository (no leading '/', no '..')"
    if not parts or parts == (".",):
        return f"{shown(path)} does not name a file"
    for part in parts:
        if len(part.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
            return f"a component of the path is longer than {MAX_NAME_BYTES} bytes"
    return None


# Converters for typed models (pipeline.schema's BeforeValidator): ValueError is the problem reported.


def as_shell_name(value: Any) -> Any:
    problem = shell_name_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def as_regex(value: Any) -> Any:
    problem = regex_problem(value) if isinstance(value, str) else None  # another type: the str node says so
    if problem:
        raise ValueError(problem)
    return value
