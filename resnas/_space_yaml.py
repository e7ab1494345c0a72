"""Reading a search-space file: strict YAML loading and one-line errors naming file, key path and value.

`resnas._space` decides what the keys mean; this module only checks the shape of what it is given
(mappings with known keys, single values passing a `Rule`). Every failure is a `ConfigError`.
"""

from __future__ import annotations

import difflib
import enum
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import yaml

from resnas._arch import brief, label
from resnas._errors import ConfigError

# Longest space file read: the shipped ones are 3 KB; parsing is pure Python (seconds per megabyte), so a
# bigger file is a wrong one, and the bounded read keeps e.g. /dev/zero from filling memory.
MAX_FILE_BYTES = 1_000_000


@dataclass(frozen=True)
class Rule:
    """What a single value may be: `kind` (int, float or an Enum class) passing `ok`, worded `allowed`."""

    kind: type
    allowed: str
    ok: Callable[[Any], bool] = lambda v: True


def enum_rule(cls: type[enum.Enum]) -> Rule:
    """A rule accepting the string values of `cls`'s members."""
    return Rule(cls, "one of " + ", ".join(repr(m.value) for m in cls))


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (plain YAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *anchor` may be overridden by design
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (str, int, float)):
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {brief(key)} is given twice", key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep)


def load_yaml(path: Path) -> Any:
    """The parsed file; a missing file or bad YAML is a one-line ConfigError with the line number."""
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
        text = raw.decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: search space file not found; pass a YAML file such as "
                          "search_spaces/resnet_family.yaml") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read the search space file ({e})") from None
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError(f"{path}: over {MAX_FILE_BYTES:,} bytes, too long for a search space file (those in "
                          "search_spaces/ are 3 KB); give ranges {min, max, step} instead of long lists")
    try:
        return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader: builds plain data only
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        detail = e.problem or ""
        if e.context and e.context_mark:
            # The parser notices an unclosed bracket only lines later; say where the construct began.
            detail += f" ({e.context} from line {e.context_mark.line + 1})"
        raise ConfigError(f"{path}: {where}invalid YAML: {' '.join(detail.split())}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {' '.join(str(e).split())}") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply for a search space file (it holds mappings of "
                          "values, lists and ranges)") from None
    except ValueError as e:  # a constructor's own error, e.g. an integer of more than 4300 digits
        raise ConfigError(f"{path}: invalid YAML value: {' '.join(str(e).split())[:200]}") from None


def join(parent: str, key: Any) -> str:
    """The key path `parent.key` (just `key` at the top level)."""
    return f"{parent}.{key}" if parent else str(key)


class Reader:
    """Checks a parsed file piece by piece; every failure is one line naming file, key path and value."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, message: str) -> NoReturn:
        """Raise the ConfigError `source: where: message`."""
        raise ConfigError(f"{self.source}: {where}: {message}")

    def mapping(self, where: str, raw: Any, allowed: Sequence[str]) -> Mapping[str, Any]:
        """`raw` as a mapping whose keys are all in `allowed` (a close misspelling gets a hint)."""
        if not isinstance(raw, dict):
            self.fail(where or "top level", f"got {brief(raw)}, expected a mapping with keys {', '.join(allowed)}")
        for key in raw:
            if key not in allowed:
                close = difflib.get_close_matches(str(key)[:100], allowed, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                self.fail(join(where, label(key)), f"unknown key {brief(key)}; {hint}allowed: {', '.join(allowed)}")
        return raw

    def value(self, where: str, raw: Any, rule: Rule) -> Any:
        """`raw` as one value of `rule.kind` (an enum member, an int or a float) that passes the rule."""
        kind = rule.kind
        # YAML's true/false are no numbers, though Python's bool is an int.
        number = isinstance(raw, (int, float)) and not isinstance(raw, bool)
        if issubclass(kind, enum.Enum):
            if isinstance(raw, str) and raw in {m.value for m in kind}:
                return kind(raw)
        elif kind is int:
            if number and isinstance(raw, int) and rule.ok(raw):
                return raw
        elif number and math.isfinite(raw) and rule.ok(float(raw)):
            return float(raw)
        self.fail(where, f"got {brief(raw)}, expected {rule.allowed}")
