"""Wire a workspace to the simulated fleet: trust its host keys, register its workers.

Entries the fleet registered before are updated in place (SSH host, port, user, key and
`enabled`), so the operator's comments and hand edits to pools, slots or notes survive a
restart; simulated workers not served this time are disabled, not deleted.
"""

from __future__ import annotations

from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

from runyard.core.fleet.ssh_options import KnownHostsFiles, known_hosts_pattern
from runyard.core.store.atomic import atomic_write_text
from runyard.core.store.workers_file import to_yaml_node
from runyard.core.store.workspace_store import WorkspaceStore
from runyard.sim.catalog import SIM_NOTE, SimWorkerSpec, is_sim_entry
from runyard.sim.ssh_server import LOOPBACK


@dataclass(frozen=True)
class Endpoint:
    """Where one simulated worker listens now, and its host key (`ssh-ed25519 AAAA...`)."""

    spec: SimWorkerSpec
    port: int
    host_key: str


def registered_ports(store: WorkspaceStore) -> dict[str, int]:
    """The ports workers.yaml lists for simulated workers (the fleet's hints on restart)."""
    return {
        w.worker_id: w.ssh.port
        for w in store.workers()
        if w.ssh is not None and w.ssh.port is not None and w.notes.startswith(SIM_NOTE)
    }


def trust_endpoints(
    known_hosts: KnownHostsFiles, endpoints: Sequence[Endpoint], stale_ports: Sequence[int]
) -> None:
    """Make runyard's known_hosts list exactly the served keys for the served ports.

    Lines for `stale_ports` (where simulated workers listened before) and lines for a served
    port with another key are dropped first, so a port reused by another box never reads
    as a changed host key.
    """
    path = known_hosts.record_file
    served = {known_hosts_pattern(LOOPBACK, e.port): e.host_key for e in endpoints}
    stale = {known_hosts_pattern(LOOPBACK, port) for port in stale_ports}
    kept: list[str] = []
    present: set[str] = set()
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    for line in text.splitlines(keepends=True):
        fields = line.split()
        if len(fields) >= 3 and not fields[0].startswith("#"):
            hosts = fields[0].split(",")
            key = " ".join(fields[1:3])
            if any(h in stale for h in hosts) and not any(served.get(h) == key for h in hosts):
                continue
            if any(h in served and served[h] != key for h in hosts):
                continue
            present.update(h for h in hosts if served.get(h) == key)
        kept.append(line if line.endswith("\n") else line + "\n")
    added = [f"{host} {key}\n" for host, key in served.items() if host not in present]
    if len(kept) != len(text.splitlines()) or added:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, "".join(kept + added), mode=0o644)


def register_endpoints(
    store: WorkspaceStore, endpoints: Sequence[Endpoint], key_path: str, *, all_served: bool
) -> None:
    """Add or update each served worker in workers.yaml (one locked edit).

    With `all_served`, simulated workers not among `endpoints` are disabled.
    """
    fresh = {e.spec.name: e.spec.worker(e.port, key_path) for e in endpoints}

    def edit(entries: Any) -> None:
        by_name = {
            entry.get("worker_id"): entry for entry in entries if isinstance(entry, MutableMapping)
        }
        for name, worker in fresh.items():
            node = by_name.get(name)
            data = worker.to_dict()
            if node is None:
                entries.append(to_yaml_node(data))
                continue
            ssh = node.get("ssh")
            if isinstance(ssh, MutableMapping):
                for field, value in data["ssh"].items():
                    ssh[field] = value  # in place: keeps the mapping's style and comments
            else:
                node["ssh"] = to_yaml_node(data["ssh"])
            node["kind"] = "ssh"
            node["enabled"] = True
        if all_served:
            for other, entry in by_name.items():
                if other not in fresh and is_sim_entry(entry) and entry.get("enabled", True):
                    entry["enabled"] = False

    store.edit_workers(
        edit,
        "sim.workers_registered",
        workers={e.spec.name: e.port for e in endpoints},
        simulated=True,
    )
