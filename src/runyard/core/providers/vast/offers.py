"""Offer hunting: the vastai query language plus shortcuts, ranked by DLPerf per dollar.

A reference job ("it took H hours on a GPU of DLPerf D") turns each offer into an
estimated run time (H x D / the offer's DLPerf) and total cost (that x the offer's $/hour),
so a cheap slow card and a dear fast one compare in dollars per job.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from runyard.core.errors import InputError
from runyard.core.providers.base import Offer

# What the vastai CLI asks for unless the query says otherwise (`verified=any` lifts one).
DEFAULT_FILTERS: Mapping[str, Mapping[str, Any]] = {
    "verified": {"eq": True},
    "external": {"eq": False},
    "rentable": {"eq": True},
    "rented": {"eq": False},
}


@dataclass(frozen=True)
class OfferFilters:
    """The `runyard vast offers` shortcuts (and the watcher's thresholds) as filters."""

    gpu_names: tuple[str, ...] = ()
    num_gpus: int | None = None
    max_dph: float | None = None
    min_reliability: float | None = None
    min_dlp_per_dollar: float | None = None


@dataclass(frozen=True)
class ReferenceJob:
    """A job that took `hours` on a GPU of DLPerf `dlperf` (None: run time is the same)."""

    hours: float
    dlperf: float | None = None

    def hours_on(self, offer: Offer) -> float | None:
        if self.dlperf is None:
            return self.hours
        if not offer.dlperf or offer.dlperf <= 0:
            return None
        return self.hours * self.dlperf / offer.dlperf


@dataclass(frozen=True)
class RankedOffer:
    """An offer with its rank and what the reference job would cost on it."""

    rank: int
    offer: Offer
    est_hours: float | None = None
    est_cost: float | None = None
    blacklisted: bool = False

    def to_json(self) -> dict[str, Any]:
        o = self.offer
        return {
            "rank": self.rank,
            "id": o.id,
            "machine_id": o.machine_id,
            "gpu_name": o.gpu_name,
            "num_gpus": o.num_gpus,
            "dph": round(o.price_dph, 6),
            "dlperf": o.dlperf,
            "dlp_per_dollar": round(o.dlp_per_dollar, 3) if o.dlp_per_dollar else None,
            "reliability": o.reliability,
            "location": o.location,
            "interruptible": o.interruptible,
            "est_hours": None if self.est_hours is None else round(self.est_hours, 3),
            "est_cost": None if self.est_cost is None else round(self.est_cost, 4),
            "blacklisted": self.blacklisted,
        }


def parse_query_text(text: str | None, warnings: list[str]) -> dict[str, Any]:
    """The vastai query language (`gpu_name=RTX_4090 num_gpus>=2 dph<0.5`) to the API's
    filter, exactly as the vastai CLI parses it, the CLI's default filters included.

    The SDK's parser prints warnings for unknown fields; they are collected in `warnings`.
    """
    from vastai.api.query import (  # type: ignore[import-untyped]
        offers_alias,
        offers_fields,
        offers_mult,
        parse_query,
    )

    base = {key: dict(value) for key, value in DEFAULT_FILTERS.items()}
    if not text or not text.strip():
        return base
    printed = io.StringIO()
    try:
        with contextlib.redirect_stderr(printed), contextlib.redirect_stdout(printed):
            query: dict[str, Any] = parse_query(
                text, base, offers_fields, offers_alias, offers_mult
            )
    except ValueError as exc:
        raise InputError(f"offer query {text!r}: {exc}") from None
    warnings.extend(line.strip() for line in printed.getvalue().splitlines() if line.strip())
    return query


def add_filters(query: Mapping[str, Any], filters: OfferFilters) -> dict[str, Any]:
    """`query` with the shortcuts merged in (a shortcut tightens, it never loosens)."""
    out: dict[str, Any] = {key: dict(value) if isinstance(value, Mapping) else value
                           for key, value in query.items()}  # fmt: skip

    def put(name: str, op: str, value: Any) -> None:
        out.setdefault(name, {})[op] = value

    if len(filters.gpu_names) == 1:
        put("gpu_name", "eq", filters.gpu_names[0])
    elif filters.gpu_names:
        put("gpu_name", "in", list(filters.gpu_names))
    if filters.num_gpus is not None:
        put("num_gpus", "eq", filters.num_gpus)
    if filters.max_dph is not None:
        put("dph_total", "lte", filters.max_dph)
    if filters.min_reliability is not None:
        put("reliability", "gte", filters.min_reliability)
    if filters.min_dlp_per_dollar is not None:
        put("dlperf_per_dphtotal", "gte", filters.min_dlp_per_dollar)
    return out


def build_query(text: str | None, filters: OfferFilters, warnings: list[str]) -> dict[str, Any]:
    return add_filters(parse_query_text(text, warnings), filters)


def passes(offer: Offer, filters: OfferFilters) -> str | None:
    """Why `offer` fails `filters` (checked here too: never trust a server-side filter)."""
    if filters.gpu_names and offer.gpu_name not in filters.gpu_names:
        return f"GPU {offer.gpu_name} is not one of {', '.join(filters.gpu_names)}"
    if filters.num_gpus is not None and offer.num_gpus != filters.num_gpus:
        return f"{offer.num_gpus} GPUs, not {filters.num_gpus}"
    if filters.max_dph is not None and offer.price_dph > filters.max_dph:
        return f"${offer.price_dph:.4f}/h is over ${filters.max_dph:.4f}/h"
    if filters.min_reliability is not None and (offer.reliability or 0.0) < filters.min_reliability:
        return f"reliability {offer.reliability} is under {filters.min_reliability}"
    if filters.min_dlp_per_dollar is not None:
        ratio = offer.dlp_per_dollar
        if ratio is None or ratio < filters.min_dlp_per_dollar:
            shown = "unknown" if ratio is None else f"{ratio:.1f}"
            return f"DLP/$ {shown} is under {filters.min_dlp_per_dollar:g}"
    return None


def rank_offers(
    offers: Iterable[Offer],
    reference: ReferenceJob | None = None,
    blacklist: frozenset[int] = frozenset(),
) -> list[RankedOffer]:
    """Best first: DLPerf per dollar (unknown last), then the lower price, then the id."""
    ordered = sorted(
        offers,
        key=lambda o: (
            o.dlp_per_dollar is None,
            -(o.dlp_per_dollar or 0.0),
            o.price_dph,
            o.id,
        ),
    )
    ranked: list[RankedOffer] = []
    for index, offer in enumerate(ordered, start=1):
        hours = reference.hours_on(offer) if reference else None
        ranked.append(
            RankedOffer(
                rank=index,
                offer=offer,
                est_hours=hours,
                est_cost=hours * offer.price_dph if hours is not None else None,
                blacklisted=offer.machine_id in blacklist,
            )
        )
    return ranked


@dataclass
class OfferSearch:
    """A ready search: the filter to send and the client-side checks to repeat."""

    query: dict[str, Any]
    filters: OfferFilters
    interruptible: bool = False
    limit: int = 64
    storage_gb: float = 10.0
    warnings: list[str] = field(default_factory=list)


def new_search(
    text: str | None,
    filters: OfferFilters,
    *,
    interruptible: bool = False,
    limit: int = 64,
    storage_gb: float = 10.0,
) -> OfferSearch:
    warnings: list[str] = []
    query = build_query(text, filters, warnings)
    return OfferSearch(query, filters, interruptible, limit, storage_gb, warnings)


def keep_passing(offers: Sequence[Offer], filters: OfferFilters) -> list[Offer]:
    return [offer for offer in offers if passes(offer, filters) is None]
