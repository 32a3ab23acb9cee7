"""`runyard.yaml`: the operator's settings, typed, with defaults for every key.

Sections are dataclasses; a generic loader checks each value against the field's type,
so a wrong type names its field and line, and an unknown key is a warning, not a crash.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from runyard.core.models import FieldError


def _ranged(default: float, low: float, *, above: bool = False, high: float | None = None) -> Any:
    """A number setting with its allowed range: `low` <= value (< when `above`) <= `high`.

    A zero time limit would make every worker "unreachable", a 150% disk threshold would
    never fire: such values are refused by field and line like a wrong type.
    """
    return field(default=default, metadata={"low": low, "above": above, "high": high})


@dataclass
class RefreshSettings:
    fleet_seconds: float = _ranged(5.0, 0, above=True)
    runs_seconds: float = _ranged(5.0, 0, above=True)


@dataclass
class SSHDefaults:
    connect_timeout: float = _ranged(10.0, 0, above=True)
    command_timeout: float = _ranged(30.0, 0, above=True)
    # `strict` refuses unknown host keys until `runyard worker trust`; `accept-new` records
    # them on first connect (rented boxes); a changed key is refused under both.
    trust: str = "strict"
    pool_trust: dict[str, str] = field(default_factory=lambda: {"vastai": "accept-new"})
    known_hosts: str | None = None


@dataclass
class AlertSettings:
    # 0 is allowed: alert at once (what a test or a paranoid operator wants).
    disk_used_pct: float = _ranged(90.0, 0, high=100)
    inodes_used_pct: float = _ranged(90.0, 0, high=100)
    gpu_idle_minutes: float = _ranged(10.0, 0)
    stale_log_minutes: float = _ranged(30.0, 0)


@dataclass
class RunSettings:
    retry_lost: int = _ranged(0, 0)
    cancel_grace_seconds: float = _ranged(5.0, 0)
    metrics_tail_bytes: int = _ranged(262144, 1)


@dataclass
class Settings:
    default_pool: str = "default"
    refresh: RefreshSettings = field(default_factory=RefreshSettings)
    ssh: SSHDefaults = field(default_factory=SSHDefaults)
    alerts: AlertSettings = field(default_factory=AlertSettings)
    runs: RunSettings = field(default_factory=RunSettings)
    # Typed and checked by runyard.core.providers.vast.settings (line-accurate errors there).
    vast: dict[str, Any] = field(default_factory=dict)


T = TypeVar("T")


class SettingWarning(str):
    """A warning about the setting at `path`; whoever knows the file adds its line."""

    path: tuple[str | int, ...] = ()


def setting_warning(path: tuple[str | int, ...], message: str) -> SettingWarning:
    warning = SettingWarning(message)
    warning.path = path
    return warning


def parse_section(cls: type[T], data: Any, path: tuple[str | int, ...], warnings: list[str]) -> T:
    """Build dataclass `cls` from a mapping, type-checking each known key."""
    if data is None:
        return cls()
    if not isinstance(data, Mapping):
        raise FieldError(path, "must be a mapping")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key not in known:
            dotted = ".".join(str(p) for p in (*path, key))
            warnings.append(setting_warning((*path, key), f"unknown setting '{dotted}' ignored"))
            continue
        values[key] = _coerce(hints[key], value, (*path, key), warnings)
        _check_range(known[key].metadata, values[key], (*path, key))
    return cls(**values)


def _check_range(limits: Mapping[str, Any], value: Any, path: tuple[str | int, ...]) -> None:
    if "low" not in limits or not isinstance(value, (int, float)):
        return
    low, high = limits["low"], limits["high"]
    if value < low or (limits["above"] and value == low):
        raise FieldError(
            path, f"must be {'above' if limits['above'] else 'at least'} {low:g}, not {value:g}"
        )
    if high is not None and value > high:
        raise FieldError(path, f"must be at most {high:g}, not {value:g}")


def _coerce(hint: Any, value: Any, path: tuple[str | int, ...], warnings: list[str]) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return parse_section(hint, value, path, warnings)  # type: ignore[arg-type]
    if origin in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return _coerce(args[0], value, path, warnings)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise FieldError(path, "must be a mapping")
        _, value_type = typing.get_args(hint)
        return {str(k): _coerce(value_type, v, (*path, str(k)), warnings) for k, v in value.items()}
    if hint is bool:
        if not isinstance(value, bool):
            raise FieldError(path, f"must be true or false, not {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise FieldError(path, f"must be an integer, not {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise FieldError(path, f"must be a number, not {value!r}")
        if not math.isfinite(value):  # `.nan` and `.inf` are YAML floats too
            raise FieldError(path, f"must be a finite number, not {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise FieldError(path, f"must be a string, not {value!r}")
        return value
    return value


def parse_settings(data: Any, warnings: list[str]) -> Settings:
    settings = parse_section(Settings, data, (), warnings)
    for pool, policy in {"": settings.ssh.trust, **settings.ssh.pool_trust}.items():
        if policy not in ("strict", "accept-new"):
            where = ("ssh", "pool_trust", pool) if pool else ("ssh", "trust")
            raise FieldError(where, f"must be 'strict' or 'accept-new', not {policy!r}")
    return settings


DEFAULT_SETTINGS_YAML = """\
# runyard settings. Every key is optional; these are the defaults.
default_pool: default

refresh:
  fleet_seconds: 5       # how often the console probes every worker
  runs_seconds: 5        # how often the console checks running runs

ssh:
  connect_timeout: 10    # seconds before a worker counts as unreachable
  command_timeout: 30
  trust: strict          # unknown host keys need `runyard worker trust NAME`
  pool_trust:            # per-pool override: rented boxes change keys with every rental
    vastai: accept-new

alerts:
  disk_used_pct: 90
  inodes_used_pct: 90
  gpu_idle_minutes: 10   # a GPU idle under a running run for this long
  stale_log_minutes: 30  # a running run whose log has not grown for this long

runs:
  retry_lost: 0          # times a lost run is requeued automatically
  cancel_grace_seconds: 5  # SIGTERM, then SIGKILL after this long
"""
