"""Vast's JSON records (instances, offers) to runyard's provider records, defensively.

The API is loosely typed (numbers arrive as strings, fields go missing while an instance
loads), so every read tolerates a missing or odd value instead of failing a whole listing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from runyard.core.providers.base import Endpoint, InstanceState, Offer, ProviderInstance

HOURS_PER_MONTH = 730.0  # Vast prices storage per GB-month

_PROVISIONING = frozenset({"loading", "created", "scheduling", "creating", "starting"})
_EXITED = frozenset({"exited", "offline", "dead", "unknown_exit"})


def number(value: Any) -> float | None:
    """A float from a JSON number or numeric string; None for anything else."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def integer(value: Any) -> int | None:
    found = number(value)
    return int(found) if found is not None else None


def text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def instance_state(raw: Mapping[str, Any]) -> InstanceState:
    """The lifecycle state: the operator's intent to stop wins over the container's status."""
    actual = text(raw.get("actual_status")).lower()
    intended = text(raw.get("intended_status")).lower()
    if intended == "stopped" or text(raw.get("cur_state")).lower() == "stopped":
        return InstanceState.STOPPED if actual != "running" else InstanceState.RUNNING
    if actual == "running":
        return InstanceState.RUNNING
    if actual in _PROVISIONING or (not actual and intended == "running"):
        return InstanceState.PROVISIONING
    if actual == "stopped":
        return InstanceState.STOPPED
    if actual in _EXITED:
        return InstanceState.EXITED
    return InstanceState.UNKNOWN


def ssh_endpoint(raw: Mapping[str, Any], mode: str) -> Endpoint | None:
    """Where SSH answers: Vast's proxy (`ssh_host:ssh_port`) or the host's mapped port 22."""
    if mode == "direct":
        host = text(raw.get("public_ipaddr"))
        ports = raw.get("ports")
        mapped = ports.get("22/tcp") if isinstance(ports, Mapping) else None
        port = None
        if isinstance(mapped, list) and mapped and isinstance(mapped[0], Mapping):
            port = integer(mapped[0].get("HostPort"))
    else:
        host = text(raw.get("ssh_host"))
        port = integer(raw.get("ssh_port"))
    if not host or port is None or not 0 < port < 65536:
        return None
    return Endpoint(host, port)


def storage_dph(raw: Mapping[str, Any]) -> float:
    """$/hour of the instance's disk: `storage_total_cost`, else GB x $/GB-month / 730."""
    total = number(raw.get("storage_total_cost"))
    if total is not None:
        return total
    per_gb_month = number(raw.get("storage_cost"))
    disk = number(raw.get("disk_space"))
    if per_gb_month is None or disk is None:
        return 0.0
    return per_gb_month * disk / HOURS_PER_MONTH


def parse_instance(raw: Mapping[str, Any], endpoint_mode: str = "proxy") -> ProviderInstance:
    """One record of `/api/v1/instances/` or `/api/v0/instances/<id>/`."""
    status = text(raw.get("actual_status")) or text(raw.get("intended_status")) or "unknown"
    message = text(raw.get("status_msg"))
    return ProviderInstance(
        id=integer(raw.get("id")) or 0,
        state=instance_state(raw),
        status_text=f"{status}: {message}" if message and message != status else status,
        ssh=ssh_endpoint(raw, endpoint_mode),
        price_dph=number(raw.get("dph_total")) or 0.0,
        storage_dph=storage_dph(raw),
        gpu_name=text(raw.get("gpu_name")),
        num_gpus=integer(raw.get("num_gpus")) or 0,
        machine_id=integer(raw.get("machine_id")),
        label=text(raw.get("label")),
        started_at=number(raw.get("start_date")),
        disk_gb=number(raw.get("disk_space")),
        location=text(raw.get("geolocation")),
        interruptible=raw.get("is_bid") is True,
        raw=dict(raw),
    )


def parse_offer(raw: Mapping[str, Any], interruptible: bool = False) -> Offer:
    """One record of `/api/v0/bundles/`; an interruptible offer costs its minimum bid."""
    on_demand = number(raw.get("dph_total")) or 0.0
    bid = number(raw.get("min_bid")) if interruptible else None
    reliability = number(raw.get("reliability2"))
    if reliability is None:
        reliability = number(raw.get("reliability"))
    return Offer(
        id=integer(raw.get("id")) or 0,
        machine_id=integer(raw.get("machine_id")),
        gpu_name=text(raw.get("gpu_name")),
        num_gpus=integer(raw.get("num_gpus")) or 0,
        price_dph=bid if bid is not None and bid > 0 else on_demand,
        dlperf=number(raw.get("dlperf")),
        reliability=reliability,
        location=text(raw.get("geolocation")),
        interruptible=interruptible,
        disk_gb=number(raw.get("disk_space")),
        storage_cost_gb_month=number(raw.get("storage_cost")),
        raw=dict(raw),
    )
