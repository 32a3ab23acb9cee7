"""Domain records: workers, runs and the run state machine.

Records are plain dataclasses converted to and from the JSON/YAML shapes of the workspace
files. Parsing raises `FieldError` naming the offending field; the store turns that into a
file:line message.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from runyard.core.metrics import compile_metrics_regex


class FieldError(ValueError):
    """A value in a record is invalid; `path` is the field's path inside the record."""

    def __init__(self, path: tuple[str | int, ...], message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(f"{'.'.join(str(p) for p in path)}: {message}")


class RunStatus(StrEnum):
    PENDING = "pending"
    DISPATCHED = "dispatched"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    LOST = "lost"
    CANCELLED = "cancelled"


ACTIVE_STATES = frozenset({RunStatus.DISPATCHED, RunStatus.RUNNING})
FINISHED_STATES = frozenset({RunStatus.DONE, RunStatus.FAILED, RunStatus.LOST, RunStatus.CANCELLED})

# Every legal move of the run state machine; anything else is a bug or a stale edit.
TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    RunStatus.PENDING: frozenset({RunStatus.DISPATCHED, RunStatus.CANCELLED}),
    RunStatus.DISPATCHED: frozenset(
        {
            RunStatus.RUNNING,
            RunStatus.DONE,
            RunStatus.FAILED,
            RunStatus.LOST,
            RunStatus.CANCELLED,
            RunStatus.PENDING,
        }
    ),
    RunStatus.RUNNING: frozenset(
        {RunStatus.DONE, RunStatus.FAILED, RunStatus.LOST, RunStatus.CANCELLED}
    ),
    # A retry moves a finished run back to pending as a new attempt.
    RunStatus.DONE: frozenset({RunStatus.PENDING}),
    RunStatus.FAILED: frozenset({RunStatus.PENDING}),
    RunStatus.LOST: frozenset({RunStatus.PENDING}),
    RunStatus.CANCELLED: frozenset({RunStatus.PENDING}),
}


def can_transition(current: RunStatus, new: RunStatus) -> bool:
    return new in TRANSITIONS[current]


RUN_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
ENV_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
WORKER_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


# ---------------------------------------------------------------- value readers


def _get(data: Mapping[str, Any], key: str, path: tuple[str | int, ...]) -> Any:
    return data.get(key)


def read_str(
    data: Mapping[str, Any],
    key: str,
    path: tuple[str | int, ...],
    default: str | None = None,
    required: bool = False,
) -> str | None:
    value = data.get(key, default)
    if value is None:
        if required:
            raise FieldError((*path, key), "is required")
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise FieldError((*path, key), f"must be a string, not {type(value).__name__}")
    return str(value)


def read_int(
    data: Mapping[str, Any],
    key: str,
    path: tuple[str | int, ...],
    default: int | None = None,
    minimum: int | None = None,
    maximum: int | None = None,
) -> int | None:
    value = data.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool):
        raise FieldError((*path, key), "must be an integer, not a boolean")
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        value = int(value)
    if not isinstance(value, int):
        raise FieldError((*path, key), f"must be an integer, not {value!r}")
    if minimum is not None and value < minimum:
        raise FieldError((*path, key), f"must be >= {minimum}, not {value}")
    if maximum is not None and value > maximum:
        raise FieldError((*path, key), f"must be <= {maximum}, not {value}")
    return value


def read_float(
    data: Mapping[str, Any], key: str, path: tuple[str | int, ...], default: float | None = None
) -> float | None:
    value = data.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise FieldError((*path, key), f"must be a number, not {value!r}")
    try:
        return float(value)
    except ValueError:
        raise FieldError((*path, key), f"must be a number, not {value!r}") from None


def read_bool(
    data: Mapping[str, Any], key: str, path: tuple[str | int, ...], default: bool
) -> bool:
    value = data.get(key, default)
    if not isinstance(value, bool):
        raise FieldError((*path, key), f"must be true or false, not {value!r}")
    return value


def read_mapping(
    data: Mapping[str, Any], key: str, path: tuple[str | int, ...]
) -> Mapping[str, Any]:
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise FieldError((*path, key), f"must be a mapping, not {type(value).__name__}")
    return value


def read_str_list(data: Mapping[str, Any], key: str, path: tuple[str | int, ...]) -> list[str]:
    value = data.get(key)
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise FieldError((*path, key), "must be a list of strings")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise FieldError((*path, key, i), "must be a string")
    return list(value)


# ---------------------------------------------------------------- workers


@dataclass
class SSHSettings:
    """How to reach a worker over SSH; empty fields fall back to ~/.ssh/config."""

    host: str
    port: int | None = None
    user: str | None = None
    key: str | None = None


@dataclass
class Resources:
    gpu: int = 0
    disk_gb: float | None = None


@dataclass
class HealthCommands:
    heartbeat_command: str = "echo ok"
    busy_command: str | None = None


WORKER_KEYS = frozenset(
    {
        "worker_id",
        "instance_id",
        "kind",
        "enabled",
        "worker_pool",
        "ssh",
        "workspace",
        "resources",
        "health",
        "notes",
        "slots",
        "platform",
        "price_dph",
        "trust",
    }
)


@dataclass
class Worker:
    """One entry of workers.yaml (research-os field names, plus runyard's `slots`)."""

    worker_id: str
    kind: str = "local"
    enabled: bool = True
    worker_pool: str = "default"
    ssh: SSHSettings | None = None
    workspace: str = "."
    resources: Resources = field(default_factory=Resources)
    health: HealthCommands = field(default_factory=HealthCommands)
    instance_id: int | None = None
    slots: int = 1
    platform: str | None = None
    price_dph: float | None = None
    trust: str | None = None  # host-key policy: strict | accept-new (else the pool's)
    notes: str = ""

    @property
    def name(self) -> str:
        return self.worker_id

    @property
    def is_local(self) -> bool:
        return self.kind == "local"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], path: tuple[str | int, ...] = ()) -> Worker:
        if not isinstance(data, Mapping):
            raise FieldError(path, "each worker must be a mapping")
        worker_id = read_str(data, "worker_id", path, required=True)
        assert worker_id is not None
        if not WORKER_NAME_PATTERN.match(worker_id):
            raise FieldError(
                (*path, "worker_id"),
                f"{worker_id!r} is not a valid worker name (letters, digits, '.', '_', '-')",
            )
        kind = read_str(data, "kind", path, default="ssh" if "ssh" in data else "local")
        if kind not in ("local", "ssh"):
            raise FieldError((*path, "kind"), f"must be 'local' or 'ssh', not {kind!r}")
        ssh: SSHSettings | None = None
        if kind == "ssh":
            raw = read_mapping(data, "ssh", path)
            sp = (*path, "ssh")
            host = read_str(raw, "host", sp, required=True)
            assert host is not None
            if not host.strip():
                raise FieldError((*sp, "host"), "must not be empty")
            ssh = SSHSettings(
                host=host,
                port=read_int(raw, "port", sp, minimum=1, maximum=65535),
                user=read_str(raw, "user", sp),
                key=read_str(raw, "key", sp),
            )
        res_raw = read_mapping(data, "resources", path)
        rp = (*path, "resources")
        health_raw = read_mapping(data, "health", path)
        hp = (*path, "health")
        default_workspace = "." if kind == "local" else "~/runyard"
        return cls(
            worker_id=worker_id,
            kind=kind or "local",
            enabled=read_bool(data, "enabled", path, True),
            worker_pool=read_str(data, "worker_pool", path, default="default") or "default",
            ssh=ssh,
            workspace=read_str(data, "workspace", path, default=default_workspace)
            or default_workspace,
            resources=Resources(
                gpu=read_int(res_raw, "gpu", rp, default=0, minimum=0) or 0,
                disk_gb=read_float(res_raw, "disk_gb", rp),
            ),
            health=HealthCommands(
                heartbeat_command=read_str(health_raw, "heartbeat_command", hp, default="echo ok")
                or "echo ok",
                busy_command=read_str(health_raw, "busy_command", hp),
            ),
            instance_id=read_int(data, "instance_id", path),
            slots=read_int(data, "slots", path, default=1, minimum=1) or 1,
            platform=read_str(data, "platform", path),
            price_dph=read_float(data, "price_dph", path),
            trust=_read_trust(data, path),
            notes=read_str(data, "notes", path, default="") or "",
        )

    def to_dict(self) -> dict[str, Any]:
        """The workers.yaml shape, research-os field order, optional fields left out."""
        out: dict[str, Any] = {"worker_id": self.worker_id}
        if self.instance_id is not None:
            out["instance_id"] = self.instance_id
        out["kind"] = self.kind
        out["enabled"] = self.enabled
        out["worker_pool"] = self.worker_pool
        if self.ssh is not None:
            ssh: dict[str, Any] = {"host": self.ssh.host}
            if self.ssh.port is not None:
                ssh["port"] = self.ssh.port
            if self.ssh.user is not None:
                ssh["user"] = self.ssh.user
            if self.ssh.key is not None:
                ssh["key"] = self.ssh.key
            out["ssh"] = ssh
        out["workspace"] = self.workspace
        resources: dict[str, Any] = {"gpu": self.resources.gpu}
        if self.resources.disk_gb is not None:
            resources["disk_gb"] = self.resources.disk_gb
        out["resources"] = resources
        health: dict[str, Any] = {"heartbeat_command": self.health.heartbeat_command}
        if self.health.busy_command is not None:
            health["busy_command"] = self.health.busy_command
        out["health"] = health
        if self.slots != 1:
            out["slots"] = self.slots
        if self.platform is not None:
            out["platform"] = self.platform
        if self.price_dph is not None:
            out["price_dph"] = self.price_dph
        if self.trust is not None:
            out["trust"] = self.trust
        if self.notes:
            out["notes"] = self.notes
        return out


def _read_trust(data: Mapping[str, Any], path: tuple[str | int, ...]) -> str | None:
    trust = read_str(data, "trust", path)
    if trust is not None and trust not in ("strict", "accept-new"):
        raise FieldError((*path, "trust"), f"must be 'strict' or 'accept-new', not {trust!r}")
    return trust


# ---------------------------------------------------------------- runs


@dataclass
class PullRecord:
    """The outcome of the last pull of a run's outputs into results/<id>/."""

    at: str
    files: int
    bytes: int
    verified: bool
    problems: list[str] = field(default_factory=list)


RUN_KEYS = frozenset(
    {
        "id",
        "name",
        "command",
        "project",
        "pool",
        "pinned_worker",
        "priority",
        "env",
        "workdir",
        "outputs",
        "metrics_regex",
        "status",
        "worker",
        "attempts",
        "exit_code",
        "pid",
        "boot_id",
        "run_dir",
        "created_at",
        "dispatched_at",
        "started_at",
        "ended_at",
        "metrics",
        "history",
        "error",
        "pull",
        "verify_command",
        "kill_pending_since",
    }
)


@dataclass
class Run:
    """One entry of queues/run_queue.json."""

    id: str
    name: str
    command: str
    project: str | None = None
    pool: str | None = None
    pinned_worker: str | None = None
    priority: int = 0
    env: dict[str, str] = field(default_factory=dict)
    workdir: str | None = None
    outputs: list[str] = field(default_factory=list)
    metrics_regex: str | None = None
    verify_command: str | None = None
    status: RunStatus = RunStatus.PENDING
    worker: str | None = None
    attempts: int = 0
    exit_code: int | None = None
    pid: int | None = None
    boot_id: str | None = None
    run_dir: str | None = None
    created_at: str = ""
    dispatched_at: str | None = None
    started_at: str | None = None
    ended_at: str | None = None
    # Set while a cancel has not confirmed that the run's process is gone (its worker did not
    # answer): a later cancel or `check` sends the kill again, and retry waits for that.
    kill_pending_since: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    pull: PullRecord | None = None

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STATES

    @property
    def kill_owed(self) -> bool:
        """A cancel has not confirmed that this run's process is gone: it may still run."""
        return self.status == RunStatus.CANCELLED and self.kill_pending_since is not None

    @property
    def holds_slot(self) -> bool:
        """Its worker's slot is taken: the run is active, or its cancel is unconfirmed."""
        return self.is_active or self.kill_owed

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], path: tuple[str | int, ...] = ()) -> Run:
        fast = _run_fast_path(data)
        if fast is not None:
            return fast
        return cls._from_dict_checked(data, path)

    @classmethod
    def _from_dict_checked(cls, data: Mapping[str, Any], path: tuple[str | int, ...]) -> Run:
        """The thorough parser: slower, and names the first bad field."""
        if not isinstance(data, Mapping):
            raise FieldError(path, "each run must be a JSON object")
        run_id = read_str(data, "id", path, required=True)
        name = read_str(data, "name", path, required=True)
        command = read_str(data, "command", path, required=True)
        assert run_id is not None and name is not None and command is not None
        if not RUN_NAME_PATTERN.match(name):
            raise FieldError((*path, "name"), f"{name!r} is not a valid run name")
        status_raw = data.get("status", "pending")
        try:
            status = RunStatus(status_raw)
        except ValueError:
            raise FieldError(
                (*path, "status"),
                f"unknown status {status_raw!r} (one of {', '.join(s.value for s in RunStatus)})",
            ) from None
        env_raw = read_mapping(data, "env", path)
        env: dict[str, str] = {}
        for key, value in env_raw.items():
            if not isinstance(key, str) or not ENV_NAME_PATTERN.match(key):
                raise FieldError(
                    (*path, "env", str(key)), "is not a valid environment variable name"
                )
            if not isinstance(value, str):
                raise FieldError((*path, "env", key), "must be a string")
            env[key] = value
        metrics_raw = read_mapping(data, "metrics", path)
        metrics: dict[str, float] = {}
        for key, value in metrics_raw.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise FieldError((*path, "metrics", str(key)), "must be a number")
            metrics[str(key)] = float(value)
        history = data.get("history") or []
        if not isinstance(history, list):
            raise FieldError((*path, "history"), "must be a list")
        pull_raw = data.get("pull")
        pull: PullRecord | None = None
        if pull_raw is not None:
            pp = (*path, "pull")
            if not isinstance(pull_raw, Mapping):
                raise FieldError(pp, "must be an object")
            pull = PullRecord(
                at=read_str(pull_raw, "at", pp, default="") or "",
                files=read_int(pull_raw, "files", pp, default=0) or 0,
                bytes=read_int(pull_raw, "bytes", pp, default=0) or 0,
                verified=read_bool(pull_raw, "verified", pp, False),
                problems=read_str_list(pull_raw, "problems", pp),
            )
        return cls(
            id=run_id,
            name=name,
            command=command,
            project=read_str(data, "project", path),
            pool=read_str(data, "pool", path),
            pinned_worker=read_str(data, "pinned_worker", path),
            priority=read_int(data, "priority", path, default=0) or 0,
            env=env,
            workdir=read_str(data, "workdir", path),
            outputs=read_str_list(data, "outputs", path),
            metrics_regex=_read_metrics_regex(data, path),
            verify_command=read_str(data, "verify_command", path),
            status=status,
            worker=read_str(data, "worker", path),
            attempts=read_int(data, "attempts", path, default=0, minimum=0) or 0,
            exit_code=read_int(data, "exit_code", path),
            pid=read_int(data, "pid", path),
            boot_id=read_str(data, "boot_id", path),
            run_dir=read_str(data, "run_dir", path),
            created_at=read_str(data, "created_at", path, default="") or "",
            dispatched_at=read_str(data, "dispatched_at", path),
            started_at=read_str(data, "started_at", path),
            ended_at=read_str(data, "ended_at", path),
            kill_pending_since=read_str(data, "kill_pending_since", path),
            metrics=metrics,
            history=list(history),
            error=read_str(data, "error", path),
            pull=pull,
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "status": self.status.value,
            "command": self.command,
            "project": self.project,
            "pool": self.pool,
            "pinned_worker": self.pinned_worker,
            "priority": self.priority,
            "env": dict(self.env),
            "workdir": self.workdir,
            "outputs": list(self.outputs),
            "metrics_regex": self.metrics_regex,
            "verify_command": self.verify_command,
            "worker": self.worker,
            "attempts": self.attempts,
            "exit_code": self.exit_code,
            "pid": self.pid,
            "boot_id": self.boot_id,
            "run_dir": self.run_dir,
            "created_at": self.created_at,
            "dispatched_at": self.dispatched_at,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            # Only while set: queue files written before the field existed stay unchanged.
            **(
                {"kill_pending_since": self.kill_pending_since}
                if self.kill_pending_since is not None
                else {}
            ),
            "metrics": dict(self.metrics),
            "history": list(self.history),
            "error": self.error,
            "pull": None
            if self.pull is None
            else {
                "at": self.pull.at,
                "files": self.pull.files,
                "bytes": self.pull.bytes,
                "verified": self.pull.verified,
                "problems": list(self.pull.problems),
            },
        }
        return out


# The queue holds thousands of runs, so loading takes a fast path when every field already
# has the type the tool writes; anything unusual goes through the thorough parser.
_STR_FIELDS = (
    "project",
    "pool",
    "pinned_worker",
    "workdir",
    "metrics_regex",
    "verify_command",
    "worker",
    "boot_id",
    "run_dir",
    "dispatched_at",
    "started_at",
    "ended_at",
    "kill_pending_since",
    "error",
)
_INT_FIELDS = ("priority", "attempts", "exit_code", "pid")
_STATUS_BY_VALUE = {s.value: s for s in RunStatus}


def _read_metrics_regex(data: Mapping[str, Any], path: tuple[str | int, ...]) -> str | None:
    """A hand-edited regex that does not compile would stop every `check`: refuse it here."""
    pattern = read_str(data, "metrics_regex", path)
    if pattern is not None:
        try:
            compile_metrics_regex(pattern)
        except (re.error, ValueError) as exc:
            raise FieldError((*path, "metrics_regex"), f"not a usable regex: {exc}") from None
    return pattern


def _run_fast_path(data: Any) -> Run | None:
    if type(data) is not dict or data.get("metrics_regex") is not None:
        return None  # a custom regex is compiled by the thorough path
    run_id, name, command = data.get("id"), data.get("name"), data.get("command")
    if type(run_id) is not str or type(name) is not str or type(command) is not str:
        return None
    status = _STATUS_BY_VALUE.get(data.get("status", "pending"))
    if status is None or not RUN_NAME_PATTERN.match(name):
        return None
    for key in _STR_FIELDS:
        value = data.get(key)
        if value is not None and type(value) is not str:
            return None
    for key in _INT_FIELDS:
        value = data.get(key)
        if value is not None and type(value) is not int:
            return None
    if (data.get("attempts") or 0) < 0:
        return None  # the thorough parser names the field
    env = data.get("env") or {}
    metrics = data.get("metrics") or {}
    outputs = data.get("outputs") or []
    history = data.get("history") or []
    if (
        type(env) is not dict
        or type(metrics) is not dict
        or type(outputs) is not list
        or type(history) is not list
    ):
        return None
    for key, value in env.items():
        if type(value) is not str or not ENV_NAME_PATTERN.match(key):
            return None
    for value in metrics.values():
        if type(value) is not float and type(value) is not int:
            return None
    for value in outputs:
        if type(value) is not str:
            return None
    if data.get("pull") is not None or not isinstance(data.get("created_at", ""), str):
        return None
    return Run(
        id=run_id,
        name=name,
        command=command,
        project=data.get("project"),
        pool=data.get("pool"),
        pinned_worker=data.get("pinned_worker"),
        priority=data.get("priority") or 0,
        env=env,
        workdir=data.get("workdir"),
        outputs=outputs,
        metrics_regex=data.get("metrics_regex"),
        verify_command=data.get("verify_command"),
        status=status,
        worker=data.get("worker"),
        attempts=data.get("attempts") or 0,
        exit_code=data.get("exit_code"),
        pid=data.get("pid"),
        boot_id=data.get("boot_id"),
        run_dir=data.get("run_dir"),
        created_at=data.get("created_at") or "",
        dispatched_at=data.get("dispatched_at"),
        started_at=data.get("started_at"),
        ended_at=data.get("ended_at"),
        kill_pending_since=data.get("kill_pending_since"),
        metrics={k: float(v) for k, v in metrics.items()},
        history=history,
        error=data.get("error"),
        pull=None,
    )
