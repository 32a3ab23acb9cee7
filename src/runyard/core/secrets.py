"""`${secret:NAME}` references in a run's env, resolved at launch and never stored.

Values come from the operator's environment, else `~/.env` (KEY=VALUE lines). They are
sent to the worker on the launch channel's stdin and redacted from anything printed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from runyard.core.errors import FileFormatError, InputError

SECRET_REF = re.compile(r"^\$\{secret:([A-Za-z_][A-Za-z0-9_]*)\}$")


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def read_dotenv(path: Path, missing_ok: bool = True, strict: bool = True) -> dict[str, str]:
    """KEY=VALUE lines of a dotenv file; `export ` prefixes and simple quotes allowed.

    A line that is not KEY=VALUE with a shell variable name, or a file that is not UTF-8
    text, is the operator's input error naming file and line: skipping it would quietly
    drop a credential (and `worker setup` would write the rest over the worker's file).
    Not `strict`: such lines are skipped (~/.env is the operator's file, not runyard's).
    """
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        if missing_ok:
            return {}
        raise FileFormatError(path, "no such file") from None
    except IsADirectoryError:
        raise FileFormatError(path, "is a directory, not a KEY=VALUE file") from None
    except PermissionError:
        raise FileFormatError(path, "cannot be read (permission denied)") from None
    except UnicodeDecodeError as exc:
        raise FileFormatError(path, f"is not UTF-8 text ({exc.reason})") from None
    values: dict[str, str] = {}
    for number, raw in enumerate(text.removeprefix("\ufeff").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.removeprefix("export ").partition("=")
        key = key.strip()
        problem = None
        if not sep:
            problem = "expected KEY=VALUE"
        elif not _ENV_NAME.fullmatch(key):
            problem = f"{key!r} is not a valid variable name"
        if problem is not None:
            if strict:
                raise FileFormatError(path, problem, line=number)
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values


def split_env(env: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """Plain variables and secret references (variable -> secret name)."""
    plain: dict[str, str] = {}
    refs: dict[str, str] = {}
    for key, value in env.items():
        match = SECRET_REF.match(value)
        if match:
            refs[key] = match.group(1)
        else:
            plain[key] = value
    return plain, refs


def resolve_secrets(refs: Mapping[str, str], dotenv: Path | None = None) -> dict[str, str]:
    """Each variable's secret value; a missing secret is the operator's input error."""
    file_values: dict[str, str] | None = None
    resolved: dict[str, str] = {}
    for variable, secret in refs.items():
        value = os.environ.get(secret)
        if value is None:
            if file_values is None:
                file_values = read_dotenv(dotenv or Path.home() / ".env", strict=False)
            value = file_values.get(secret)
        if value is None:
            raise InputError(
                f"secret {secret!r} (for {variable}) is not in the environment or ~/.env"
            )
        resolved[variable] = value
    return resolved


def redact(text: str, secrets: Mapping[str, str]) -> str:
    for value in sorted(secrets.values(), key=len, reverse=True):
        if len(value) >= 4:
            text = text.replace(value, "***")
    return text


def known_secret_values(env: Mapping[str, str], dotenv: Path | None = None) -> dict[str, str]:
    """The values of a run's secret references that can be resolved here, for redaction."""
    _, refs = split_env(env)
    values: dict[str, str] = {}
    for variable, secret in refs.items():
        try:
            values.update(resolve_secrets({variable: secret}, dotenv))
        except InputError:
            continue
    return values


def redact_bytes(data: bytes, secrets: Mapping[str, str]) -> bytes:
    for value in sorted(secrets.values(), key=len, reverse=True):
        if len(value) >= 4:
            data = data.replace(value.encode(), b"***")
    return data


class StreamRedactor:
    """Redacts secrets from a byte stream cut into arbitrary chunks (`logs -f`).

    A chunk's tail that could be the start of a secret is held back until the next chunk
    shows whether it is one, so a secret split across two reads is still replaced. Output
    is delayed only by such a tail: usually nothing is held.
    """

    def __init__(self, secrets: Mapping[str, str]) -> None:
        self.secrets = secrets
        self._values = [v.encode() for v in secrets.values() if len(v) >= 4]
        self._pending = b""

    def feed(self, chunk: bytes) -> bytes:
        data = self._pending + chunk
        held = max((_partial_suffix(data, value) for value in self._values), default=0)
        self._pending = data[len(data) - held :] if held else b""
        return redact_bytes(data[: len(data) - held], self.secrets)

    def flush(self) -> bytes:
        """What is still held back (the stream ended), redacted."""
        data, self._pending = self._pending, b""
        return redact_bytes(data, self.secrets)


def _partial_suffix(data: bytes, value: bytes) -> int:
    """The length of the longest end of `data` that is a proper start of `value`."""
    for size in range(min(len(value) - 1, len(data)), 0, -1):
        if data.endswith(value[:size]):
            return size
    return 0
