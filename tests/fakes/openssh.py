"""Debian's OpenSSH sshd as a child process on 127.0.0.1, for tests (not product).

A private config (no PAM, no strict modes, an absolute AuthorizedKeysFile, a host key
made by ssh-keygen at test time) on a free port, run with `-D -e` so it stays in the
foreground and logs to stderr; `start()` returns once sshd says it is listening. Tests
that need it skip with a clear reason where /usr/sbin/sshd is not installed.
"""

from __future__ import annotations

import contextlib
import getpass
import shutil
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from fakes.ssh_server import LOOPBACK, unused_port

SSHD = Path("/usr/sbin/sshd")
SSH_KEYGEN = "ssh-keygen"
_READY_TIMEOUT_S = 15.0


def sshd_missing_reason() -> str | None:
    """Why OpenSSH tests cannot run here, or None when they can."""
    if not SSHD.exists():
        return f"{SSHD} is not installed (apt-get install openssh-server)"
    if shutil.which(SSH_KEYGEN) is None:
        return "ssh-keygen is not installed (apt-get install openssh-client)"
    return None


class OpenSSHServer:
    """sshd on 127.0.0.1:`port`, accepting `authorized_keys` for the current user."""

    def __init__(self, root: Path, authorized_keys: Sequence[str]) -> None:
        self.root = Path(root)
        self.host = LOOPBACK
        self.port = 0
        self.user = getpass.getuser()
        self._authorized_keys = list(authorized_keys)
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._listening = threading.Event()
        self.log: list[str] = []

    @property
    def home(self) -> Path:
        """HOME for the sessions this server starts."""
        return self.root / "home"

    @property
    def host_key_path(self) -> Path:
        return self.root / "ssh_host_ed25519_key"

    def __enter__(self) -> OpenSSHServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def restart(self, *, new_host_key: bool = False) -> None:
        """Stop and start again on the same port, with a fresh host key if asked."""
        self.stop()
        self.start(new_host_key=new_host_key)

    def _write_config(self, *, new_host_key: bool) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        if new_host_key or not self.host_key_path.exists():
            self.host_key_path.unlink(missing_ok=True)
            Path(f"{self.host_key_path}.pub").unlink(missing_ok=True)
            subprocess.run(
                [SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-f", str(self.host_key_path)],
                check=True,
            )
        self.home.mkdir(exist_ok=True)
        authorized = self.root / "authorized_keys"
        authorized.write_text("".join(line.rstrip("\n") + "\n" for line in self._authorized_keys))
        config = self.root / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"ListenAddress {self.host}",
                    f"Port {self.port}",
                    f"HostKey {self.host_key_path}",
                    f"PidFile {self.root / 'sshd.pid'}",
                    f"AuthorizedKeysFile {authorized}",
                    "UsePAM no",
                    "StrictModes no",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PubkeyAuthentication yes",
                    "PermitRootLogin prohibit-password",
                    "AllowTcpForwarding yes",
                    "Subsystem sftp internal-sftp",
                    "LogLevel VERBOSE",
                    # A home of its own: the account's real start-up files (a root ~/.bashrc
                    # running `pyenv rehash` under a lock, say) stay out of every test login.
                    f"SetEnv HOME={self.home}",
                    "",
                ]
            )
        )
        return config

    def start(self, *, new_host_key: bool = True) -> None:
        """Start sshd and wait until it listens; raises RuntimeError with its log otherwise.

        The first start picks a free port; later ones reuse it.
        """
        self.port = self.port or unused_port()
        config = self._write_config(new_host_key=new_host_key)
        self._listening.clear()
        with contextlib.suppress(PermissionError):
            Path("/run/sshd").mkdir(parents=True, exist_ok=True)
        self._proc = subprocess.Popen(
            [str(SSHD), "-D", "-e", "-f", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self._reader = threading.Thread(target=self._drain_log, daemon=True)
        self._reader.start()
        if not self._listening.wait(_READY_TIMEOUT_S) or self._proc.poll() is not None:
            self.stop()
            raise RuntimeError("sshd did not start:\n" + "\n".join(self.log))

    def _drain_log(self) -> None:
        """Keep reading sshd's stderr (a full pipe would block it); note when it listens."""
        assert self._proc is not None and self._proc.stderr is not None
        for raw in self._proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            self.log.append(line)
            if "Server listening on" in line:
                self._listening.set()
        self._listening.set()  # exited: wake start() so it reports the log

    def stop(self) -> None:
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        if self._reader is not None:
            self._reader.join(timeout=5)
        self._proc = None

    def known_hosts_line(self) -> str:
        public = Path(f"{self.host_key_path}.pub").read_text().split()[:2]
        return f"[{self.host}]:{self.port} {' '.join(public)}\n"
