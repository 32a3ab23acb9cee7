"""How runyard reaches one SSH worker: asyncssh options built once, and host-key trust.

A worker's workers.yaml fields (host, port, user, key) are merged over the operator's
~/.ssh/config, which asyncssh reads itself, so Host aliases, IdentityFile, ProxyJump, Port
and User work as they do for `ssh`; fields set in workers.yaml win. Keys held by ssh-agent
are used when SSH_AUTH_SOCK (or IdentityAgent) points at one.

Host keys are always checked against known_hosts files (the operator's ~/.ssh/known_hosts
and runyard's own `<workspace>/.runyard/known_hosts`); asyncssh is never given
`known_hosts=None`. What happens to a key those files do not vouch for is the worker's
trust policy:

* ``strict`` (default): an unknown host is refused; the error tells the operator to check
  the fingerprint and run ``runyard worker trust NAME``.
* ``accept-new`` (for rented boxes): an unknown host's key is recorded in runyard's file on
  the first successful connection.

Under either policy a key that differs from a recorded one is refused, naming host and port.

Only this module and `sessions.py` import asyncssh, so the rest of core (and file-only CLI
verbs) load without it.
"""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import asyncssh

from runyard.core.errors import InputError, WorkerUnreachable
from runyard.core.models import Worker
from runyard.core.settings import Settings

DEFAULT_SSH_PORT = 22

_KnownHostsMatch = tuple[list[asyncssh.SSHKey], list[asyncssh.SSHKey], list[asyncssh.SSHKey]]


def _home(*parts: str) -> Path:
    return Path("~", *parts).expanduser()


# ---------------------------------------------------------------- trust policy


class TrustPolicy(StrEnum):
    """What to do with a host key that no known_hosts file lists yet."""

    STRICT = "strict"
    ACCEPT_NEW = "accept-new"

    @classmethod
    def parse(cls, value: object, where: str = "trust") -> TrustPolicy:
        """The policy named by a workers.yaml/runyard.yaml value; `InputError` otherwise."""
        try:
            return cls(str(value))
        except ValueError:
            choices = ", ".join(policy.value for policy in cls)
            raise InputError(f"{where}: must be one of {choices}, not {value!r}") from None


# ---------------------------------------------------------------- errors


def endpoint_label(host: str, port: int) -> str:
    """`host:port` as an operator reads it (`[::1]:22` for IPv6 literals)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class HostKeyRefused(WorkerUnreachable):
    """The server's host key failed the trust check, so the connection was not used."""

    def __init__(self, worker: str, host: str, port: int, reason: str) -> None:
        self.host = host
        self.port = port
        super().__init__(worker, reason)


class UnknownHostKey(HostKeyRefused):
    """Strict policy and no known_hosts file lists this host."""


class ChangedHostKey(HostKeyRefused):
    """The server offered a key other than the one recorded for it: always refused."""


# ---------------------------------------------------------------- known_hosts files


def known_hosts_pattern(host: str, port: int) -> str:
    """The host field OpenSSH writes for host:port: `host` on port 22, else `[host]:port`."""
    return host if port == DEFAULT_SSH_PORT else f"[{host}]:{port}"


def public_key_text(key: asyncssh.SSHKey) -> str:
    """`<algorithm> <base64>` of a public key, without its comment."""
    algorithm, blob = key.export_public_key("openssh").decode("ascii").split()[:2]
    return f"{algorithm} {blob}"


def describe_key(key: asyncssh.SSHKey) -> str:
    """`ssh-ed25519 SHA256:...`: what an operator compares against `ssh-keygen -lf`."""
    return f"{key.get_algorithm()} {key.get_fingerprint('sha256')}"


def runyard_known_hosts_path(workspace: Path) -> Path:
    """runyard's own known_hosts file inside a workspace."""
    return Path(workspace) / ".runyard" / "known_hosts"


_KNOWN_HOSTS_CACHE: dict[tuple[tuple[str, int, int], ...], asyncssh.SSHKnownHosts] = {}

# AES-GCM first: with AES-NI it costs the client about half of chacha20-poly1305's CPU per
# packet (measured by bench/fleet_refresh.py); the rest keep any OpenSSH server reachable.
PREFERRED_CIPHERS = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes128-ctr",
    "aes192-ctr",
    "aes256-ctr",
)


@dataclass(frozen=True)
class KnownHostsFiles:
    """Where host keys are trusted from, and where newly trusted ones are written.

    `user_file` is the operator's OpenSSH file; runyard only reads it. `runyard_file` is
    runyard's own file; accept-new and `trust_host` append to it. Files that do not exist
    yet count as empty. Files are re-read on every connection, so a key trusted by another
    process is honoured on the next connect.
    """

    user_file: Path | None = field(default_factory=lambda: _home(".ssh", "known_hosts"))
    runyard_file: Path | None = None

    @classmethod
    def for_workspace(cls, workspace: Path, user_file: Path | None = None) -> KnownHostsFiles:
        """The operator's ~/.ssh/known_hosts (or `user_file`) plus the workspace's own file."""
        return cls(
            user_file=user_file if user_file is not None else _home(".ssh", "known_hosts"),
            runyard_file=runyard_known_hosts_path(workspace),
        )

    @property
    def paths(self) -> list[Path]:
        return [path for path in (self.user_file, self.runyard_file) if path is not None]

    @property
    def record_file(self) -> Path:
        """The file new keys are appended to: runyard's own, else the operator's."""
        path = self.runyard_file or self.user_file
        if path is None:
            raise InputError("no known_hosts file is configured to record host keys in")
        return path

    def load(self) -> asyncssh.SSHKnownHosts:
        """Parse every file (hashed entries included) into one asyncssh matcher.

        Parsed once per file version (path, mtime, size): a fleet of N workers connecting
        at once would otherwise parse the whole file N times. A key another process
        records changes the version, so it is honoured on the next connect.
        """
        versions: list[tuple[str, int, int]] = []
        for path in self.paths:
            try:
                info = path.stat()
            except FileNotFoundError:
                continue
            versions.append((str(path), info.st_mtime_ns, info.st_size))
        key = tuple(versions)
        cached = _KNOWN_HOSTS_CACHE.get(key)
        if cached is not None:
            return cached
        known = asyncssh.SSHKnownHosts()
        for path_text, _, _ in versions:
            try:
                text = Path(path_text).read_text(encoding="utf-8")
            except FileNotFoundError:
                continue
            try:
                known.load(text)
            except ValueError as exc:
                raise ValueError(f"{path_text}: {exc}") from None
        _KNOWN_HOSTS_CACHE.clear()
        _KNOWN_HOSTS_CACHE[key] = known
        return known

    def match(self, host: str, addr: str, port: int | None) -> _KnownHostsMatch:
        """asyncssh's `known_hosts` callable: trusted keys, CA keys and revoked keys."""
        host_keys, ca_keys, revoked_keys, *_ = self.load().match(host, addr, port)
        return list(host_keys), list(ca_keys), list(revoked_keys)

    def recorded_keys(self, host: str, addr: str, port: int) -> list[asyncssh.SSHKey]:
        """Host keys (and host CA keys) the files list for host:port."""
        host_keys, ca_keys, _ = self.match(host, addr, None if port == DEFAULT_SSH_PORT else port)
        return host_keys + ca_keys

    def record(self, host: str, port: int, key: asyncssh.SSHKey) -> str:
        """Append `key` for host:port to `record_file` unless it is already listed there.

        Returns the known_hosts line. One O_APPEND write of one line, fsynced, so two
        processes recording at once cannot interleave.
        """
        line = f"{known_hosts_pattern(host, port)} {public_key_text(key)}\n"
        if key in self.recorded_keys(host, "", port):
            return line
        path = self.record_file
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            needs_newline = size > 0 and os.pread(fd, 1, size - 1) != b"\n"
            os.write(fd, (("\n" if needs_newline else "") + line).encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        return line

    def forget(self, host: str, port: int) -> int:
        """Drop runyard-file lines listing exactly host:port; returns how many were dropped.

        The operator's own file is never edited (that is `ssh-keygen -R`'s job).
        """
        path = self.runyard_file
        if path is None or not path.exists():
            return 0
        pattern = known_hosts_pattern(host, port)
        kept: list[str] = []
        dropped = 0
        for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
            fields = line.split(None, 1)
            if fields and not line.lstrip().startswith("#") and pattern in fields[0].split(","):
                dropped += 1
            else:
                kept.append(line)
        if dropped:
            _atomic_write(path, "".join(kept))
        return dropped


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------- settings


@dataclass(frozen=True)
class SSHClientSettings:
    """Everything the SSH transport needs beyond workers.yaml; one instance per pool.

    Trust policy of a worker: its own `trust` field (workers.yaml, when the model has it),
    else `pool_trust[worker.worker_pool]` (runyard.yaml), else `default_trust`.
    `ssh_config`: None reads ~/.ssh/config when it exists; an empty tuple reads none.
    """

    known_hosts: KnownHostsFiles = field(default_factory=KnownHostsFiles)
    ssh_config: tuple[Path, ...] | None = None
    default_trust: TrustPolicy = TrustPolicy.STRICT
    pool_trust: Mapping[str, TrustPolicy] = field(default_factory=dict)
    connect_timeout: float = 10.0
    command_timeout: float = 60.0
    keepalive_interval: float = 15.0
    keepalive_count_max: int = 3
    reconnect_backoff: float = 0.5
    reconnect_backoff_max: float = 30.0
    max_channels: int = 8  # OpenSSH's MaxSessions is 10 per connection by default
    # Short scripts (probes, check) go through one long-lived bash per worker; see
    # sessions.SessionPool.run_short. It holds one of the connection's max_channels.
    persistent_shell: bool = True

    @classmethod
    def for_workspace(cls, workspace: Path) -> SSHClientSettings:
        """Defaults, trusting and recording host keys in `<workspace>/.runyard/known_hosts`.

        Change other fields with `dataclasses.replace`.
        """
        return cls(known_hosts=KnownHostsFiles.for_workspace(workspace))

    @classmethod
    def from_runyard_settings(cls, workspace: Path, settings: Settings) -> SSHClientSettings:
        """What a workspace's runyard.yaml `ssh:` section asks for.

        `ssh.known_hosts` replaces the operator's ~/.ssh/known_hosts (relative paths are
        relative to the workspace); runyard's own file is always the workspace's.
        """
        ssh = settings.ssh
        user_file: Path | None = None
        if ssh.known_hosts:
            user_file = Path(workspace) / Path(ssh.known_hosts).expanduser()
        return cls(
            known_hosts=KnownHostsFiles.for_workspace(workspace, user_file=user_file),
            default_trust=TrustPolicy.parse(ssh.trust, where="runyard.yaml: ssh.trust"),
            pool_trust={
                pool: TrustPolicy.parse(policy, where=f"runyard.yaml: ssh.pool_trust.{pool}")
                for pool, policy in ssh.pool_trust.items()
            },
            connect_timeout=ssh.connect_timeout,
            command_timeout=ssh.command_timeout,
        )

    def trust_for(self, worker: Worker) -> TrustPolicy:
        """The worker's own `trust` (workers.yaml), else its pool's, else the default."""
        own = getattr(worker, "trust", None)
        if own:
            return TrustPolicy.parse(own, where=f"worker {worker.worker_id}: trust")
        return self.pool_trust.get(worker.worker_pool, self.default_trust)

    def config_paths(self) -> tuple[Path, ...]:
        if self.ssh_config is not None:
            return self.ssh_config
        default = _home(".ssh", "config")
        return (default,) if os.access(default, os.R_OK) else ()


# ---------------------------------------------------------------- host-key guard


class HostKeyGuard(asyncssh.SSHClient):
    """Rules on host keys that known_hosts did not vouch for, for one connection attempt.

    asyncssh calls `validate_host_public_key` only for a key the files do not list. A host
    with recorded keys is a changed key (refused); an unlisted host is accepted only under
    accept-new, and recorded by the caller after the connection has authenticated (so a
    server that cannot prove it holds the key never gets written down).
    """

    def __init__(self, known_hosts: KnownHostsFiles, trust: TrustPolicy) -> None:
        self._known_hosts = known_hosts
        self._trust = trust
        self.offered: tuple[str, int, asyncssh.SSHKey] | None = None
        self.recorded: list[asyncssh.SSHKey] = []
        self.accepted_new = False

    def validate_host_public_key(
        self, host: str, addr: str, port: int, key: asyncssh.SSHKey
    ) -> bool:
        self.offered = (host, port, key)
        self.recorded = self._known_hosts.recorded_keys(host, addr, port)
        self.accepted_new = not self.recorded and self._trust is TrustPolicy.ACCEPT_NEW
        return self.accepted_new

    def refusal(self, worker: str) -> HostKeyRefused | None:
        """The error for a key this guard turned down, or None if it turned none down."""
        if self.offered is None or self.accepted_new:
            return None
        host, port, key = self.offered
        where = endpoint_label(host, port)
        if self.recorded:
            return _changed_key_error(worker, host, port, self._known_hosts, key, self.recorded)
        return UnknownHostKey(
            worker,
            host,
            port,
            f"host key of {where} is not known ({describe_key(key)}); check the fingerprint "
            f"and run `runyard worker trust {worker}` to record it",
        )


def _changed_key_error(
    worker: str,
    host: str,
    port: int,
    files: KnownHostsFiles,
    offered: asyncssh.SSHKey | None,
    recorded: Sequence[asyncssh.SSHKey],
    remedy: str | None = None,
) -> ChangedHostKey:
    where = endpoint_label(host, port)
    was = ", ".join(describe_key(key) for key in recorded)
    now = f"it now offers {describe_key(offered)}" if offered else "it offers none of them"
    listed_in = ", ".join(str(path) for path in files.paths)
    remedy = remedy or f"run `runyard worker trust {worker} --replace`"
    return ChangedHostKey(
        worker,
        host,
        port,
        f"HOST KEY CHANGED for {where}: recorded {was} (in {listed_in}) but {now}; refusing "
        f"to connect (a re-created box, or someone in the middle). If the box was re-created, "
        f"{remedy}",
    )


# ---------------------------------------------------------------- per-worker target


@dataclass(frozen=True)
class SSHTarget:
    """One worker's endpoint and its asyncssh options, built once and reused per connect."""

    worker: str
    host: str  # as written in workers.yaml: may be a ~/.ssh/config Host alias
    port_override: int | None
    options: asyncssh.SSHClientConnectionOptions
    config_paths: tuple[Path, ...]
    known_hosts: KnownHostsFiles
    trust: TrustPolicy
    connect_timeout: float

    @property
    def resolved_host(self) -> str:
        """The host after ~/.ssh/config (Hostname, HostKeyAlias): what known_hosts lists."""
        return str(self.options.host_key_alias or self.options.host)

    @property
    def port(self) -> int:
        return int(self.options.port)

    @property
    def username(self) -> str:
        return str(self.options.username)

    @property
    def label(self) -> str:
        return f"{self.username}@{endpoint_label(str(self.options.host), self.port)}"

    async def open(self) -> asyncssh.SSHClientConnection:
        """Connect and authenticate within `connect_timeout`; `WorkerUnreachable` otherwise.

        An unknown key accepted under accept-new is written to runyard's known_hosts here.
        """
        guard = HostKeyGuard(self.known_hosts, self.trust)
        try:
            async with asyncio.timeout(self.connect_timeout):
                conn, _ = await asyncssh.create_connection(
                    lambda: guard,
                    self.host,
                    self.port_override or (),
                    options=self.options,
                    config=list(self.config_paths),
                )
        except (OSError, asyncssh.Error, ValueError) as exc:
            raise self._explain(exc, guard) from exc
        if guard.accepted_new and guard.offered is not None:
            host, port, key = guard.offered
            try:
                await asyncio.to_thread(self.known_hosts.record, host, port, key)
            except OSError as exc:
                conn.close()
                raise WorkerUnreachable(
                    self.worker,
                    f"cannot record the host key of {endpoint_label(host, port)}: {exc}",
                ) from exc
        return conn

    async def fetch_host_key(self) -> asyncssh.SSHKey:
        """The key the server offers (the algorithm a connection would use), unverified."""
        try:
            async with asyncio.timeout(self.connect_timeout):
                key = await asyncssh.get_server_host_key(
                    self.host,
                    self.port_override or (),
                    options=self.options,
                    config=list(self.config_paths),
                )
        except (OSError, asyncssh.Error, ValueError) as exc:
            raise self._explain(exc, None) from exc
        if key is None:
            raise WorkerUnreachable(self.worker, f"{self.label} offered no host key")
        return key

    def _explain(self, exc: BaseException, guard: HostKeyGuard | None) -> WorkerUnreachable:
        """One operator-readable line for a failed connect."""
        where = self.label
        refused = guard.refusal(self.worker) if guard is not None else None
        if refused is not None:
            return refused
        if isinstance(exc, asyncssh.KeyExchangeFailed):
            recorded = self.known_hosts.recorded_keys(self.resolved_host, "", self.port)
            if recorded:  # the server no longer offers any recorded key type
                return _changed_key_error(
                    self.worker, self.resolved_host, self.port, self.known_hosts, None, recorded
                )
        if isinstance(exc, TimeoutError):
            reason = f"no SSH answer from {where} within {self.connect_timeout:g}s"
        elif isinstance(exc, asyncssh.PermissionDenied):
            reason = f"authentication failed for {where} (keys and ssh-agent were refused)"
        elif isinstance(exc, socket.gaierror):
            reason = f"cannot resolve {self.options.host}: {exc.strerror}"
        elif isinstance(exc, OSError):
            reason = f"cannot connect to {where}: {exc.strerror or exc}"
        else:
            reason = f"SSH to {where} failed: {exc}"
        return WorkerUnreachable(self.worker, reason)


def build_target(worker: Worker, settings: SSHClientSettings) -> SSHTarget:
    """Build `worker`'s options once: reads ~/.ssh/config and key files (blocking I/O).

    Raises `WorkerUnreachable` naming the bad setting (unreadable key, config syntax error).
    """
    if worker.ssh is None:
        raise WorkerUnreachable(worker.worker_id, "has no ssh settings (kind is not ssh)")
    ssh = worker.ssh
    config_paths = settings.config_paths()
    agent_socket = os.environ.get("SSH_AUTH_SOCK")
    overrides: dict[str, object] = {}
    if ssh.port is not None:
        overrides["port"] = ssh.port
    if ssh.user:
        overrides["username"] = ssh.user
    if ssh.key:
        overrides["client_keys"] = [os.path.expanduser(ssh.key)]
        # A passphrase-protected key is usable only through the agent; skip it when one runs.
        overrides["ignore_encrypted"] = bool(agent_socket)
    try:
        options = asyncssh.SSHClientConnectionOptions(
            host=ssh.host,
            config=list(config_paths),
            known_hosts=settings.known_hosts.match,
            connect_timeout=settings.connect_timeout,
            login_timeout=settings.connect_timeout,
            keepalive_interval=settings.keepalive_interval,
            keepalive_count_max=settings.keepalive_count_max,
            encryption_algs=list(PREFERRED_CIPHERS),
            encoding=None,
            **overrides,
        )
    except asyncssh.KeyEncryptionError:
        raise WorkerUnreachable(
            worker.worker_id,
            f"SSH key {ssh.key} is passphrase-protected and no ssh-agent is running "
            "(start one and `ssh-add` the key)",
        ) from None
    except (OSError, ValueError, asyncssh.KeyImportError) as exc:
        raise WorkerUnreachable(worker.worker_id, f"bad SSH settings: {exc}") from exc
    return SSHTarget(
        worker=worker.worker_id,
        host=ssh.host,
        port_override=ssh.port,
        options=options,
        config_paths=config_paths,
        known_hosts=settings.known_hosts,
        trust=settings.trust_for(worker),
        connect_timeout=settings.connect_timeout,
    )


# ---------------------------------------------------------------- trust a host


@dataclass(frozen=True)
class TrustedHost:
    """What `trust_host` did: the key, the known_hosts line and file, and whether it is new."""

    worker: str
    host: str
    port: int
    key_description: str
    line: str
    path: Path
    newly_recorded: bool


async def trust_host(
    worker: Worker, settings: SSHClientSettings, *, replace: bool = False
) -> TrustedHost:
    """Fetch the server's host key and record it in runyard's known_hosts (`worker trust`).

    A host whose recorded key differs is refused (`ChangedHostKey`) unless `replace` is
    set, which first drops the host's lines from runyard's own file (never from the
    operator's ~/.ssh/known_hosts).
    """
    if worker.ssh is None:
        raise InputError(
            f"worker {worker.worker_id} is a {worker.kind} worker: only ssh workers have a "
            "host key to trust"
        )
    target = await asyncio.to_thread(build_target, worker, settings)
    key = await target.fetch_host_key()
    host, port = target.resolved_host, target.port
    files = settings.known_hosts
    recorded = await asyncio.to_thread(files.recorded_keys, host, "", port)
    if recorded and key not in recorded:
        remedy = None
        if replace:
            await asyncio.to_thread(files.forget, host, port)
            recorded = await asyncio.to_thread(files.recorded_keys, host, "", port)
            pattern = known_hosts_pattern(host, port)
            remedy = f"remove the old key from {files.user_file} (`ssh-keygen -R '{pattern}'`)"
        if recorded:
            raise _changed_key_error(worker.worker_id, host, port, files, key, recorded, remedy)
    line = await asyncio.to_thread(files.record, host, port, key)
    return TrustedHost(
        worker=worker.worker_id,
        host=host,
        port=port,
        key_description=describe_key(key),
        line=line.rstrip("\n"),
        path=files.record_file,
        newly_recorded=key not in recorded,
    )
