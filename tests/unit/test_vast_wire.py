"""Vast's JSON records read defensively: states, SSH endpoints, storage prices."""

from __future__ import annotations

import pytest

from runyard.core.providers.base import Endpoint, InstanceState
from runyard.core.providers.vast.wire import (
    instance_state,
    parse_instance,
    ssh_endpoint,
    storage_dph,
)


@pytest.mark.parametrize(
    ("actual", "intended", "state"),
    [
        ("running", "running", InstanceState.RUNNING),
        ("loading", "running", InstanceState.PROVISIONING),
        ("created", "running", InstanceState.PROVISIONING),
        (None, "running", InstanceState.PROVISIONING),
        ("exited", "stopped", InstanceState.STOPPED),  # `vastai stop`: exited, intended stopped
        ("exited", "running", InstanceState.EXITED),  # the container ended by itself
        ("offline", "running", InstanceState.EXITED),  # the host dropped off
        ("weird", "running", InstanceState.UNKNOWN),
    ],
)
def test_states(actual: str | None, intended: str, state: InstanceState) -> None:
    assert instance_state({"actual_status": actual, "intended_status": intended}) is state


def test_proxy_and_direct_endpoints() -> None:
    raw = {"ssh_host": "ssh5.vast.ai", "ssh_port": "24700", "public_ipaddr": "203.0.113.9",
           "ports": {"22/tcp": [{"HostIp": "0.0.0.0", "HostPort": "41022"}]}}  # fmt: skip
    assert ssh_endpoint(raw, "proxy") == Endpoint("ssh5.vast.ai", 24700)
    assert ssh_endpoint(raw, "direct") == Endpoint("203.0.113.9", 41022)
    assert ssh_endpoint({"ssh_host": "ssh5.vast.ai", "ssh_port": None}, "proxy") is None
    assert ssh_endpoint({"public_ipaddr": "1.2.3.4", "ports": {}}, "direct") is None


def test_storage_price_per_hour() -> None:
    assert storage_dph({"storage_total_cost": 0.0123}) == 0.0123
    assert storage_dph({"storage_cost": 0.146, "disk_space": 50}) == pytest.approx(0.01)
    assert storage_dph({}) == 0.0


def test_a_loading_record_with_missing_fields_still_parses() -> None:
    instance = parse_instance({"id": "42", "actual_status": "loading", "status_msg": "pulling"})
    assert instance.id == 42 and instance.state is InstanceState.PROVISIONING
    assert instance.ssh is None and instance.price_dph == 0.0
    assert instance.status_text == "loading: pulling"
