"""Reading workspace files with line-accurate errors.

YAML goes through ruamel.yaml's round-trip loader, which keeps comments and key order for
tool edits and knows the line of every key; read-only loads take the C loader first
(`parse_yaml_file`) and fall back to round-trip only to word a complaint. JSON has no positions in the stdlib, so a
small scanner finds the line of a field only when an error must be reported.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from runyard.core.errors import FileFormatError
from runyard.core.models import FieldError
from runyard.core.store.atomic import atomic_write_text

T = TypeVar("T")

_scanstring: Any = getattr(json.decoder, "scanstring")  # noqa: B009  (untyped in typeshed)


def read_text(path: Path) -> str:
    try:
        return path.read_text("utf-8")
    except UnicodeDecodeError as exc:
        raise FileFormatError(path, f"is not UTF-8 text ({exc.reason})") from None


def _yaml(sequence_offset: int = 0) -> Any:
    from ruamel.yaml import YAML  # lazy: importing ruamel costs ~40 ms

    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=sequence_offset + 2, offset=sequence_offset)
    return yaml


def sequence_offset(text: str) -> int:
    """How far the file indents a list's dashes: 0 in research-os (`- worker_id: ...`).

    ruamel does not remember a file's indentation, so a save re-uses what the human wrote;
    otherwise every line of a hand-written file would move on the first tool edit.
    """
    match = re.search(r"^( *)- ", text, re.MULTILINE)
    return len(match.group(1)) if match else 0


def load_yaml(path: Path) -> Any:
    """Parse a YAML file round-trip; a syntax error names the file and line."""
    text = read_text(path)
    from ruamel.yaml.error import MarkedYAMLError

    try:
        data = _yaml().load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = exc.problem or exc.context or "invalid YAML"
        raise FileFormatError(path, f"invalid YAML: {problem}", line=line) from None
    except Exception as exc:  # ruamel raises a few unmarked errors on odd input
        raise FileFormatError(path, f"invalid YAML: {exc}") from None
    if _SURROGATE_ESCAPE.search(text):
        where = lone_surrogate_path(data)
        if where is not None:
            raise _surrogate_error(path, yaml_line(data, where), where)
    return data


def parse_yaml_file(path: Path, parse: Callable[[Any, list[str]], T], warnings: list[str]) -> T:
    """`parse(data, warnings)` of a YAML file, read fast; errors and warnings keep their lines.

    The C loader reads a 100-worker workers.yaml in ~25 ms where the round-trip loader takes
    ~300 ms, but only round-trip nodes know their lines. So the file is parsed from the fast
    read first, and again from the round-trip tree only when that read or `parse` finds
    something to report: the error or warning then names its line, as it always did.
    """
    text = read_text(path)
    if _SURROGATE_ESCAPE.search(text):  # perhaps half a surrogate pair: load_yaml checks
        return parse(load_yaml(path), warnings)
    quiet: list[str] = []
    try:
        result = parse(_fast_yaml().load(text), quiet)
    except Exception:  # the C loader's or `parse`'s complaint; the slow path words it
        quiet.append("retry")
    if not quiet:
        return result
    return parse(load_yaml(path), warnings)


def _fast_yaml() -> Any:
    from ruamel.yaml import YAML

    return YAML(typ="safe", pure=False)  # C when ruamel.yaml.clib is there, else Python


def dump_yaml(data: Any, sequence_offset: int = 0) -> str:
    stream = io.StringIO()
    _yaml(sequence_offset).dump(data, stream)
    return stream.getvalue()


def save_yaml(path: Path, data: Any) -> None:
    try:
        offset = sequence_offset(path.read_text("utf-8"))
    except (FileNotFoundError, UnicodeDecodeError):
        offset = 0
    atomic_write_text(path, dump_yaml(data, offset))


def yaml_line(root: Any, field_path: Sequence[str | int]) -> int | None:
    """The 1-based line of the deepest existing node on `field_path` in a round-trip tree."""
    node = root
    line: int | None = None
    for key in field_path:
        lc = getattr(node, "lc", None)
        try:
            if lc is not None:
                line = lc.item(key)[0] + 1 if isinstance(key, int) else lc.key(key)[0] + 1
            node = node[key]
        except (KeyError, IndexError, TypeError, AttributeError):
            break
    if line is None and getattr(root, "lc", None) is not None:
        line = root.lc.line + 1
    return line


def yaml_field_error(path: Path, root: Any, error: FieldError) -> FileFormatError:
    return FileFormatError(
        path, error.message, line=yaml_line(root, error.path), field=_dotted(error.path)
    )


def load_json(path: Path) -> Any:
    """Parse a JSON file; a syntax error (a truncated file, say) names the line.

    JSON may escape half a UTF-16 pair (`"\\ud800"`), which Python keeps as a lone
    surrogate that no file, pipe or SSH channel can encode: such text is refused here,
    by field and line, instead of failing later mid-write or mid-dispatch.
    """
    text = read_text(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FileFormatError(path, f"invalid JSON: {exc.msg}", line=exc.lineno) from None
    if _SURROGATE_ESCAPE.search(text):
        where = lone_surrogate_path(data)
        if where is not None:
            raise _surrogate_error(path, json_line(text, where), where)
    return data


# `\ud800` in JSON or YAML, `\U0000d800` in YAML: escapes that can stand for half a pair.
_SURROGATE_ESCAPE = re.compile(r"\\(?:u|U0000)[dD][89a-fA-F]")


def _surrogate_error(path: Path, line: int | None, where: Sequence[str | int]) -> FileFormatError:
    return FileFormatError(
        path,
        "contains half of a UTF-16 surrogate pair (a \\ud800-\\udfff escape on its own), "
        "which is not text",
        line=line,
        field=_dotted(where) or None,
    )


def lone_surrogate_path(
    value: Any, path: tuple[str | int, ...] = ()
) -> tuple[str | int, ...] | None:
    """Where the first string (key or value) holding a lone surrogate is; None if nowhere.

    The parsers join every valid pair, so any surrogate left is a lone one, and no file,
    pipe or SSH channel can encode it.
    """
    if isinstance(value, str):
        return None if _encodable(value) else path
    if not isinstance(value, (dict, list)):
        return None
    items: Any = value.items() if isinstance(value, dict) else enumerate(value)
    for key, item in items:
        if isinstance(key, str) and not _encodable(key):
            return path
        found = lone_surrogate_path(item, (*path, key))
        if found is not None:
            return found
    return None


def _encodable(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def json_field_error(path: Path, text: str, error: FieldError) -> FileFormatError:
    return FileFormatError(
        path, error.message, line=json_line(text, error.path), field=_dotted(error.path)
    )


def _dotted(field_path: Sequence[str | int]) -> str:
    out = ""
    for part in field_path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


# ---------------------------------------------------------------- JSON positions


class _JsonScanner:
    """Walks JSON text to the start offset of the value at a path (error path only)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.decoder = json.JSONDecoder()

    def skip_ws(self, pos: int) -> int:
        while pos < len(self.text) and self.text[pos] in " \t\r\n":
            pos += 1
        return pos

    def skip_value(self, pos: int) -> int:
        _, end = self.decoder.raw_decode(self.text, pos)
        return int(end)

    def find(self, field_path: Sequence[str | int]) -> int:
        pos = self.skip_ws(0)
        best = pos
        for key in field_path:
            found = self._child(pos, key)
            if found is None:
                return best
            pos = best = found
        return best

    def _child(self, pos: int, key: str | int) -> int | None:
        text = self.text
        if pos >= len(text):
            return None
        if isinstance(key, int) and text[pos] == "[":
            pos = self.skip_ws(pos + 1)
            for _ in range(key):
                pos = self.skip_ws(self.skip_value(pos))
                if pos >= len(text) or text[pos] != ",":
                    return None
                pos = self.skip_ws(pos + 1)
            return pos
        if isinstance(key, str) and text[pos] == "{":
            pos = self.skip_ws(pos + 1)
            while pos < len(text) and text[pos] == '"':
                name, pos = _scanstring(text, pos + 1)
                pos = self.skip_ws(pos)
                pos = self.skip_ws(pos + 1)  # the colon
                if name == key:
                    return pos
                pos = self.skip_ws(self.skip_value(pos))
                if pos < len(text) and text[pos] == ",":
                    pos = self.skip_ws(pos + 1)
            return None
        return None


def json_line(text: str, field_path: Sequence[str | int]) -> int | None:
    """The 1-based line where the value at `field_path` starts (or its nearest parent)."""
    try:
        offset = _JsonScanner(text).find(field_path)
    except (json.JSONDecodeError, ValueError, IndexError):
        return None
    return text.count("\n", 0, offset) + 1
