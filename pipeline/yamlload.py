"""Loading job and device YAML within bounds.

A job is hostile input, so its YAML is loaded by a SafeLoader whose
composer checks the document while it builds it, before any Python object
exists:

* at most ``LAVA_DISPATCH_MAX_JOB_BYTES`` bytes of text (default 1 MiB);
* at most ``MAX_DEPTH`` nested collections (libyaml's own composer
  recurses in C and crashes the process on a deep enough document);
* aliases may add at most ``MAX_ALIAS_NODES`` nodes and as many characters
  as the text itself: a "billion laughs" is refused instead of being
  expanded later by whatever walks or prints the data;
* an alias may not refer to a collection that contains it (a cycle);
* a key given twice in one mapping is a problem, not silently last-wins;
* a scalar that cannot be converted (``2020-13-45``, ``!!int x``, an
  integer of thousands of digits) is a problem naming its place.

Every problem names its place (``actions[0].deploy: duplicate key 'to'
(line 12; first on line 8)``); the text is parsed by libyaml when PyYAML
has it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent, MappingStartEvent, SequenceStartEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.resolver import Resolver

from pipeline.checks import key_text, shown
from pipeline.errors import YamlRejected

MAX_BYTES_ENV = "LAVA_DISPATCH_MAX_JOB_BYTES"
DEFAULT_MAX_BYTES = 1 << 20
MAX_DEPTH = 100
MAX_ALIAS_NODES = 10_000
# Python refuses to print integers of more than 4300 digits; hex and
# sexagesimal forms can build them from fewer characters.
MAX_INT_BITS = 14_000
_STR_TAG = "tag:yaml.org,2002:str"
_SPECIAL_KEY_TAGS = ("tag:yaml.org,2002:merge", "tag:yaml.org,2002:value")




DUPLICATE_HINT = "LAVA would keep the last value; give the key once"


@dataclass(frozen=True)
class Limits:
    max_bytes: int = DEFAULT_MAX_BYTES
    max_depth: int = MAX_DEPTH
    max_alias_nodes: int = MAX_ALIAS_NODES
    # A rendered LAVA device-type template may repeat a key (LAVA's loader keeps the last one).
    allow_duplicate_keys: bool = False


def max_bytes_from_env() -> int:
    """``LAVA_DISPATCH_MAX_JOB_BYTES`` (the lab admin's setting), or 1 MiB."""
    raw = os.environ.get(MAX_BYTES_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_BYTES
    if not raw.isdigit() or int(raw) < 1:
        raise YamlRejected([f"{MAX_BYTES_ENV}={raw[:40]!r}: the limit must be a positive whole number of bytes"])
    return int(raw)


def format_place(loc: tuple[Any, ...] | list[Any], prefix: str = "", root: str = "(job)") -> str:
    """``actions[2].boot.method`` from a location; list indexes in brackets, long keys shortened."""
    text = prefix
    for part in loc:
        if isinstance(part, int) and not isinstance(part, bool):
            text += f"[{part}]"
        else:
            name = key_text(part)
            text += f".{name}" if text else name
    return (text if len(text) <= 120 else text[:117] + "...") or root


class _BoundedComposer(Composer):
    """PyYAML's composer, checking bounds and duplicate keys as each node is composed."""

    limits: Limits
    if TYPE_CHECKING:  # given by the parser and the constructor it is mixed with (_loader_class)
        def peek_event(self) -> Any: ...

        def construct_object(self, node: Node, deep: bool = False) -> Any: ...

    def _start_checks(self, limits: Limits, what: str) -> None:
        self.limits, self.what = limits, what
        self.path: list[Any] = []  # where the collection being composed is
        self.depth = 0
        self.open_anchors: set[str] = set()
        self.seen_keys: list[dict[Any, int] | None] = []  # per open collection (None for a sequence)
        self.sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (nodes, characters) once aliases are expanded
        self.aliased = [0, 0]  # nodes and characters added by aliases
        self.problems: list[str] = []

    def place(self, extra: tuple[Any, ...] = ()) -> str:
        return format_place([*self.path, *extra], root=f"({self.what})")

    def fail(self, message: str, mark: Any, extra: tuple[Any, ...] = ()) -> NoReturn:
        raise YamlRejected([f"{self.place(extra)}: {message} (line {mark.line + 1})"])

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        event = self.peek_event()
        part: tuple[Any, ...] = ()
        if isinstance(parent, SequenceNode):
            part = (index,)
        elif isinstance(parent, MappingNode):
            part = (index.value if isinstance(index, ScalarNode) else "?",) if index is not None else ()
        if isinstance(event, AliasEvent):
            if event.anchor in self.open_anchors:
                self.fail(f"alias *{event.anchor} is inside the collection it names (a recursive structure)",
                          event.start_mark, part)
            node = self._composed(parent, index)
            nodes, chars = self.sizes[id(node)]
            self.aliased[0] += nodes
            self.aliased[1] += chars
            if self.aliased[0] > self.limits.max_alias_nodes or self.aliased[1] > self.limits.max_bytes:
                self.fail(f"aliases expand to more than {self.limits.max_alias_nodes} nodes or "
                          f"{self.limits.max_bytes} characters", event.start_mark, part)
        elif isinstance(event, (MappingStartEvent, SequenceStartEvent)):
            if self.depth >= self.limits.max_depth:
                self.fail(f"nested deeper than {self.limits.max_depth} levels", event.start_mark, part)
            self.depth += 1
            self.path.extend(part)
            self.seen_keys.append({} if isinstance(event, MappingStartEvent) else None)
            if event.anchor is not None:
                self.open_anchors.add(event.anchor)
            node = self._composed(parent, index)
            self.open_anchors.discard(event.anchor)
            self.seen_keys.pop()
            del self.path[len(self.path) - len(part):]
            self.depth -= 1
            children = [n for pair in node.value for n in pair] if isinstance(node, MappingNode) else node.value
            self.sizes[id(node)] = (1 + sum(self.sizes[id(c)][0] for c in children),
                                    sum(self.sizes[id(c)][1] for c in children))
        else:
            node = self._composed(parent, index)
            self.sizes[id(node)] = (1, len(node.value))
        if isinstance(parent, MappingNode) and index is None:
            self.check_duplicate(node)
        return node

    def _composed(self, parent: Node | None, index: Any) -> Node:
        node = super().compose_node(parent, index)
        if node is None:  # PyYAML composes a node or raises; its stubs allow None
            raise YamlRejected([f"{self.place()}: nothing to compose"])
        return node

    def check_duplicate(self, key: Node) -> None:
        if self.limits.allow_duplicate_keys:
            return
        if not isinstance(key, ScalarNode) or key.tag in _SPECIAL_KEY_TAGS:
            return  # a collection key is refused at construction (unhashable); merges are not duplicates
        seen = self.seen_keys[-1]
        if seen is None:  # a key is composed inside a mapping only
            return
        try:
            value = key.value if key.tag == _STR_TAG else self.construct_object(key)
        except _BadValue as exc:
            raise YamlRejected([_bad_value(self.place(), exc)]) from None
        line = key.start_mark.line + 1
        try:
            first = seen.get(value)
            seen[value] = first or line
        except TypeError:  # an unhashable scalar cannot be a key: construction says so
            return
        if first is not None:
            # LAVA's loader keeps the last value silently; here a key given twice is an ambiguity to resolve.
            self.problems.append(f"{self.place()}: duplicate key {shown(value)} (line {line}; first on line {first}): "
                                 f"{DUPLICATE_HINT}")


class _CheckedConstructor(SafeConstructor):
    """SafeConstructor whose scalar conversions fail as YAML problems, never as ValueError."""

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, TypeError, ArithmeticError) as exc:
            raise _BadValue(node, exc) from None

    def construct_yaml_int(self, node: ScalarNode) -> int:
        value = super().construct_yaml_int(node)
        if value.bit_length() > MAX_INT_BITS:
            raise ValueError("the integer is too large")
        return value


_CheckedConstructor.add_constructor("tag:yaml.org,2002:int",  # type: ignore[type-var]  # stubs: only the base
                                    _CheckedConstructor.construct_yaml_int)


class _BadValue(Exception):
    def __init__(self, node: Node, exc: Exception):
        super().__init__(str(exc))
        self.node, self.exc = node, exc


def _bad_value(place: str, exc: _BadValue) -> str:
    node = exc.node
    reason = " ".join(str(exc.exc).split())
    kind = node.tag.rsplit(":", 1)[-1]
    return f"{place}: cannot read {shown(node.value)} as {kind}: {reason} (line {node.start_mark.line + 1})"


def _loader_class(tokens: type) -> type:
    """A loader: ``tokens`` (libyaml's CParser, or PyYAML's reader/scanner/parser) + the checks."""

    class BoundedLoader(_BoundedComposer, tokens, _CheckedConstructor, Resolver):  # type: ignore[misc]
        def __init__(self, stream: str, limits: Limits, what: str):
            tokens.__init__(self, stream)  # type: ignore[misc]  # the class chosen at import, not known to mypy
            _BoundedComposer.__init__(self)
            _CheckedConstructor.__init__(self)
            Resolver.__init__(self)
            self._start_checks(limits, what)

    return BoundedLoader


class _PureTokens(yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser):
    def __init__(self, stream: str):
        yaml.reader.Reader.__init__(self, stream)
        yaml.scanner.Scanner.__init__(self)
        yaml.parser.Parser.__init__(self)


def _tokens() -> type:
    """libyaml's parser, or PyYAML's own when it is built without it (the same checks, slower)."""
    try:
        from yaml._yaml import CParser
    except ImportError:
        return _PureTokens
    return CParser


LOADER = _loader_class(_tokens())


def _path_to(root: Node, target: Node) -> list[Any]:
    """The location of ``target`` in the document (only looked for when a value is wrong)."""
    stack: list[tuple[Node, list[Any]]] = [(root, [])]
    seen: set[int] = set()
    while stack:
        node, path = stack.pop()
        if node is target:
            return path
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, SequenceNode):
            stack.extend((child, [*path, i]) for i, child in enumerate(node.value))
        elif isinstance(node, MappingNode):
            for key, value in node.value:
                name = key.value if isinstance(key, ScalarNode) else "?"
                stack.extend([(key, [*path, name]), (value, [*path, name])])
    return []


def load(text: str, what: str = "job", prefix: str = "", limits: Limits | None = None) -> Any:
    """The document in ``text``; YamlRejected lists every problem, each with its place."""
    limits = limits or Limits(max_bytes=max_bytes_from_env())
    if not isinstance(text, str):
        raise YamlRejected([f"{prefix}({what}): expected YAML text, got {type(text).__name__}"])
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > limits.max_bytes:
        raise YamlRejected([f"{prefix}({what}): larger than the limit of {limits.max_bytes} bytes ({MAX_BYTES_ENV})"])
    loader = None
    root = None
    try:
        loader = LOADER(text, limits, what)
        root = loader.get_single_node()
        if loader.problems:
            raise YamlRejected(loader.problems)
        return None if root is None else loader.construct_document(root)
    except YamlRejected as exc:
        raise YamlRejected([f"{prefix}{problem}" for problem in exc.problems]) from None
    except _BadValue as exc:
        place = format_place(_path_to(root, exc.node) if root is not None else [], root=f"({what})")
        raise YamlRejected([prefix + _bad_value(place, exc)]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown place"
        problem = " ".join((exc.problem or str(exc)).split())
        if exc.problem and exc.context:
            problem += f" ({' '.join(exc.context.split())})"
        if "could not determine a constructor" in problem:
            problem = f"tag not allowed ({problem}); {what} files are plain YAML"
        raise YamlRejected([f"{prefix}{what} YAML {where}: {problem}"]) from None
    except (yaml.YAMLError, UnicodeError) as exc:
        raise YamlRejected([f"{prefix}{what} YAML: {' '.join(str(exc).split())}"]) from None
    except (ValueError, TypeError, ArithmeticError, RecursionError) as exc:  # met outside any one scalar
        raise YamlRejected([f"{prefix}{what} YAML: cannot read the document: {' '.join(str(exc).split())}"]) from None
    finally:
        if loader is not None:
            loader.dispose()
