"""API failures become one clear line, with sensible retries, never a traceback or the key.

The real SDK against the SIMULATED marketplace, which injects 401, 429, 5xx and slow
answers; plus a port where nothing listens.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fakes.ssh_server import unused_port
from fakes.vast_workspace import sim_fixture  # noqa: F401  (fixture)
from runyard.core.errors import InputError
from runyard.core.providers.base import InstanceRequest
from runyard.core.providers.vast.client import VastAPI, VastAPIError, VastCompute
from runyard.core.providers.vast.settings import (
    VastCredentials,
    VastSettings,
    resolve_credentials,
)
from runyard.sim.vast_api import SimVast

pytestmark = pytest.mark.timeout(60)


def compute(
    sim: SimVast, *, key: str | None = None, timeout: float = 5, retries: int = 3
) -> VastCompute:
    credentials = VastCredentials(sim.url, key or sim.api_key, "the test's key file")
    return VastCompute(VastAPI(credentials, timeout, retries))


async def test_a_wrong_key_names_where_it_came_from_and_never_shows_it(sim: SimVast) -> None:
    secret = "wrong-key-0123456789abcdef"
    with pytest.raises(VastAPIError) as caught:
        await compute(sim, key=secret).list_instances()
    message = str(caught.value)
    assert caught.value.status == 401
    assert "refused the key" in message and "the test's key file" in message
    assert secret not in message and "\n" not in message
    assert [c.status for c in sim.calls] == [401]  # a 401 is not retried


async def test_rate_limit_is_retried_then_succeeds(sim: SimVast) -> None:
    sim.fail(429, times=2)
    assert await compute(sim, retries=3).list_instances() == []
    assert [c.status for c in sim.calls] == [429, 429, 200]


async def test_persistent_rate_limit_and_server_errors_give_one_line(sim: SimVast) -> None:
    sim.fail(429, times=10)
    with pytest.raises(
        VastAPIError, match=r"rate limit on list instances \(HTTP 429\) after 2 tries"
    ):
        await compute(sim, retries=2).list_instances()
    sim.clear_faults()
    sim.fail(503, times=10)
    with pytest.raises(VastAPIError, match=r"server error on search offers \(HTTP 503\) after 2"):
        await compute(sim, retries=2).search_offers({}, 5)
    sim.clear_faults()
    sim.fail(500, times=1)  # the SDK does not retry a 500; the message says what failed
    with pytest.raises(VastAPIError, match=r"HTTP 500.*Simulated server error"):
        await compute(sim, retries=3).get_instance(1)


async def test_a_slow_api_times_out_with_a_clear_message(sim: SimVast) -> None:
    sim.fail(None, delay=2.0, times=2)
    with pytest.raises(
        VastAPIError, match=r"did not answer list instances within 0.3s \(2 tries\)"
    ):
        await compute(sim, timeout=0.3, retries=2).list_instances()


async def test_nothing_listening_is_a_connection_error(sim: SimVast) -> None:
    dead = VastCredentials(f"http://127.0.0.1:{unused_port()}", "k", "env")
    with pytest.raises(
        VastAPIError,
        match=r"cannot reach the Vast API at http://127\.0\.0\.1:\d+ for list instances: connection refused",
    ):
        await VastCompute(VastAPI(dead, 2, 2)).list_instances()


async def test_renting_is_never_retried(sim: SimVast) -> None:
    """A create that failed (or timed out) may have rented a box: no automatic second try."""
    sim.fail(503, times=1, path_contains="/asks/")
    with pytest.raises(VastAPIError, match="rent offer 5000001"):
        await compute(sim, retries=3).create_instance(5000001, InstanceRequest("img", 10))
    assert len(sim.calls_to("PUT", "/asks/")) == 1
    sim.fail(None, delay=2.0, times=1, path_contains="/asks/")
    with pytest.raises(VastAPIError, match="may have gone through"):
        await compute(sim, timeout=0.3).create_instance(5000001, InstanceRequest("img", 10))


async def test_an_offer_already_taken_says_so(sim: SimVast) -> None:
    vast = compute(sim)
    await vast.create_instance(5000002, InstanceRequest("img", 10))
    with pytest.raises(VastAPIError, match="no longer available"):
        await vast.create_instance(5000002, InstanceRequest("img", 10))


async def test_destroy_is_idempotent(sim: SimVast) -> None:
    vast = compute(sim)
    box = await sim.rent(5000003)
    assert await vast.destroy_instance(box.id) is True
    assert await vast.destroy_instance(box.id) is False
    assert await vast.get_instance(box.id) is None


def test_no_key_anywhere_is_bad_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VAST_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    with pytest.raises(InputError, match="no Vast API key: set VAST_API_KEY"):
        resolve_credentials(VastSettings(), tmp_path)
