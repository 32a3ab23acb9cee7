"""The Vast provider on the real `vastai` SDK: sync calls mapped to one-line errors, run
in a thread behind the async provider interface.

The SDK retries 429, 502-504 and connection errors itself (`retry` tries, with backoff and
the server's Retry-After); runyard sets the tries and the per-request timeout from
runyard.yaml. Creating an instance is never retried: a request that timed out may have
rented a box, and a retry would rent a second one.

Every failure becomes a `VastAPIError` (exit 1) with one line: what was asked, the HTTP
status or network problem, and the server's own message. The key is never part of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from runyard.core.errors import OperationalError
from runyard.core.providers.base import (
    Compute,
    ComputeWithCreateInstanceSupport,
    ComputeWithSSHKeySupport,
    ComputeWithStopSupport,
    InstanceRequest,
    Offer,
    ProviderInstance,
)
from runyard.core.providers.vast.settings import (
    VastCredentials,
    VastSettings,
    resolve_credentials,
)
from runyard.core.providers.vast.wire import parse_instance, parse_offer

T = TypeVar("T")

INSTANCES_PAGE = 200  # rows per page of /api/v1/instances/ (the SDK's own loop uses 25)


class VastAPIError(OperationalError):
    """A Vast API call failed; `status` is the HTTP status when there was one."""

    def __init__(self, message: str, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


def _server_message(response: Any) -> str:
    """The server's own words from an error body: `msg`, `error` or `detail`."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, Mapping):
        for key in ("msg", "error", "detail", "message"):
            value = body.get(key)
            if isinstance(value, str) and value.strip():
                return value.strip()
    raw = (getattr(response, "text", "") or "").strip().splitlines()
    return raw[0][:200] if raw else ""


def _explain_status(status: int, what: str, server: str, tries: int, key_source: str) -> str:
    said = f": {server}" if server else ""
    if status in (401, 403):
        return (
            f"Vast API refused the key for {what} (HTTP {status}{said}); check the key "
            f"from {key_source}"
        )
    if status == 429:
        return f"Vast API rate limit on {what} (HTTP 429) after {tries} tries{said}; wait and retry"
    if status >= 500:
        return f"Vast API server error on {what} (HTTP {status}) after {tries} tries{said}"
    return f"Vast API: {what} failed (HTTP {status}){said}"


class VastAPI:
    """The SDK, synchronous, with runyard's error handling; built on the first call."""

    def __init__(self, credentials: VastCredentials, timeout: float, retries: int) -> None:
        self.credentials = credentials
        self.timeout = timeout
        self.retries = retries
        self._clients: dict[int, Any] = {}

    def _sdk(self, retries: int) -> Any:
        client = self._clients.get(retries)
        if client is None:
            from vastai import VastAI  # type: ignore[import-untyped]  # lazy: ~3 s to import

            client = VastAI(
                api_key=self.credentials.key,
                server_url=self.credentials.url,
                retry=retries,
                raw=True,
                quiet=True,
            )
            client.client.timeout = self.timeout
            self._clients[retries] = client
        return client

    def call(self, what: str, body: Callable[[Any], T], *, retry: bool = True) -> T:
        """Run `body(sdk)`; any failure becomes one `VastAPIError` line."""
        import requests

        tries = self.retries if retry else 1
        sdk = self._sdk(tries)
        url = self.credentials.url
        try:
            return body(sdk)
        except requests.HTTPError as exc:
            response = exc.response
            status = response.status_code if response is not None else 0
            server = _server_message(response) if response is not None else ""
            raise VastAPIError(
                self._scrub(
                    _explain_status(status, what, server, tries, self.credentials.key_source)
                ),
                status,
            ) from None
        except requests.Timeout:
            hint = "" if retry else " (it may have gone through: check `runyard vast instances`)"
            raise VastAPIError(
                f"Vast API at {url} did not answer {what} within {self.timeout:g}s "
                f"({tries} tries){hint}"
            ) from None
        except requests.ConnectionError as exc:
            reason = _connection_reason(exc)
            raise VastAPIError(f"cannot reach the Vast API at {url} for {what}: {reason}") from None
        except requests.RequestException as exc:
            raise VastAPIError(self._scrub(f"Vast API: {what} failed: {exc}")) from None
        except ValueError as exc:  # a bad JSON body, or the SDK refusing an argument
            raise VastAPIError(self._scrub(f"Vast API: {what}: {exc}")) from None
        except (KeyError, TypeError, AttributeError, RuntimeError, OSError) as exc:
            raise VastAPIError(
                self._scrub(f"Vast API: unexpected failure of {what} ({type(exc).__name__}: {exc})")
            ) from None

    def _scrub(self, message: str) -> str:
        """Never let the key reach a message, whatever a server echoes back."""
        return message.replace(self.credentials.key, "<key>") if self.credentials.key else message

    # ------------------------------------------------------------ the calls runyard makes

    def list_instances(self) -> list[dict[str, Any]]:
        """Every instance, paging `/api/v1/instances/` with `next_token`."""

        def fetch(sdk: Any) -> list[dict[str, Any]]:
            rows: list[dict[str, Any]] = []
            params: dict[str, Any] = {
                "select_filters": {},
                "order_by": [{"col": "id", "dir": "asc"}],
                "limit": INSTANCES_PAGE,
            }
            while True:
                page = sdk.show_instances_v1(params)
                rows.extend(row for row in page.get("instances") or [] if isinstance(row, dict))
                token = page.get("next_token")
                if not token:
                    return rows
                params["after_token"] = token

        return self.call("list instances", fetch)

    def get_instance(self, instance_id: int) -> dict[str, Any] | None:
        def fetch(sdk: Any) -> dict[str, Any] | None:
            response = sdk.client.get(f"/instances/{instance_id}/", query_args={"owner": "me"})
            if response.status_code == 404:
                return None
            response.raise_for_status()
            row = response.json().get("instances")
            return row if isinstance(row, dict) else None

        return self.call(f"show instance {instance_id}", fetch)

    def search_offers(
        self, query: Mapping[str, Any], offer_type: str, limit: int, storage_gb: float
    ) -> list[dict[str, Any]]:
        def fetch(sdk: Any) -> list[dict[str, Any]]:
            offers = sdk.search_offers(
                query=dict(query),
                type=offer_type,
                order="dlperf_per_dphtotal-",
                limit=limit,
                storage=storage_gb,
                no_default=True,
            )
            return [o for o in offers if isinstance(o, dict)]

        return self.call("search offers", fetch)

    def create_instance(self, offer_id: int, request: InstanceRequest) -> int:
        def create(sdk: Any) -> int:
            answer = sdk.create_instance(
                offer_id,
                image=request.image,
                disk=request.disk_gb,
                env=dict(request.env) or None,
                label=request.label or None,
                onstart_cmd=request.onstart,
                price=request.bid_dph,
                ssh=True,
            )
            if not answer.get("success") or answer.get("new_contract") is None:
                raise ValueError(f"offer {offer_id} was not rented: {json.dumps(answer)[:200]}")
            return int(answer["new_contract"])

        return self.call(f"rent offer {offer_id}", create, retry=False)

    def destroy_instance(self, instance_id: int) -> bool:
        def destroy(sdk: Any) -> bool:
            response = sdk.client.delete(f"/instances/{instance_id}/", json_data={})
            if response.status_code == 404:
                return False
            response.raise_for_status()
            return True

        return self.call(f"destroy instance {instance_id}", destroy)

    def set_state(self, instance_id: int, state: str) -> None:
        def put(sdk: Any) -> None:
            if state == "stopped":
                sdk.stop_instance(instance_id)
            else:
                sdk.start_instance(instance_id)

        verb = "stop" if state == "stopped" else "start"
        self.call(f"{verb} instance {instance_id}", put)

    def attach_ssh_key(self, instance_id: int, public_key: str) -> None:
        self.call(
            f"attach an SSH key to instance {instance_id}",
            lambda sdk: sdk.attach_ssh(instance_id, public_key),
        )


def _connection_reason(exc: BaseException) -> str:
    """The innermost cause of a connection error, in a few words."""
    text = str(exc)
    for marker in ("Connection refused", "Name or service not known", "No route to host"):
        if marker in text:
            return marker.lower()
    with contextlib.suppress(Exception):
        inner = exc.args[0]
        reason = getattr(inner, "reason", None)
        if reason is not None:
            return str(reason).split(": ", 1)[-1][:120]
    return text[:120] or type(exc).__name__


class VastCompute(
    Compute, ComputeWithCreateInstanceSupport, ComputeWithStopSupport, ComputeWithSSHKeySupport
):
    """Vast behind the provider interface; each SDK call runs in a worker thread."""

    name = "vast"

    def __init__(self, api: VastAPI, endpoint_mode: str = "proxy") -> None:
        self.api = api
        self.endpoint_mode = endpoint_mode

    @classmethod
    def from_settings(cls, settings: VastSettings, credentials: VastCredentials) -> VastCompute:
        api = VastAPI(credentials, settings.request_timeout_seconds, settings.retries)
        return cls(api, settings.ssh_endpoint)

    async def list_instances(self) -> list[ProviderInstance]:
        rows = await asyncio.to_thread(self.api.list_instances)
        return [parse_instance(row, self.endpoint_mode) for row in rows]

    async def get_instance(self, instance_id: int) -> ProviderInstance | None:
        row = await asyncio.to_thread(self.api.get_instance, instance_id)
        return parse_instance(row, self.endpoint_mode) if row is not None else None

    async def destroy_instance(self, instance_id: int) -> bool:
        return await asyncio.to_thread(self.api.destroy_instance, instance_id)

    async def search_offers(
        self,
        query: Mapping[str, Any],
        limit: int,
        *,
        interruptible: bool = False,
        storage_gb: float = 10.0,
    ) -> list[Offer]:
        offer_type = "bid" if interruptible else "on-demand"
        rows = await asyncio.to_thread(self.api.search_offers, query, offer_type, limit, storage_gb)
        return [parse_offer(row, interruptible) for row in rows]

    async def create_instance(self, offer_id: int, request: InstanceRequest) -> int:
        return await asyncio.to_thread(self.api.create_instance, offer_id, request)

    async def stop_instance(self, instance_id: int) -> None:
        await asyncio.to_thread(self.api.set_state, instance_id, "stopped")

    async def start_instance(self, instance_id: int) -> None:
        await asyncio.to_thread(self.api.set_state, instance_id, "running")

    async def attach_ssh_key(self, instance_id: int, public_key: str) -> None:
        await asyncio.to_thread(self.api.attach_ssh_key, instance_id, public_key)


def open_compute(settings: VastSettings, workspace_root: Path) -> VastCompute:
    """The Vast provider for a workspace: credentials resolved, nothing imported or sent yet."""
    return VastCompute.from_settings(settings, resolve_credentials(settings, workspace_root))
