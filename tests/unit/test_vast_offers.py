"""Offer hunting: the vastai query language, the shortcuts, ranking and reference-job cost."""

from __future__ import annotations

import pytest

from runyard.core.errors import InputError
from runyard.core.providers.base import Offer
from runyard.core.providers.vast.offers import (
    OfferFilters,
    ReferenceJob,
    build_query,
    passes,
    rank_offers,
)
from runyard.core.providers.vast.wire import parse_offer


def offer(
    offer_id: int,
    gpu: str = "RTX 3060",
    dph: float = 0.1,
    dlperf: float | None = 10.0,
    machine: int = 1,
    reliability: float = 0.99,
    num_gpus: int = 1,
) -> Offer:
    return Offer(offer_id, machine, gpu, num_gpus, dph, dlperf, reliability, "US", False)


def test_query_text_is_parsed_as_the_vastai_cli_does() -> None:
    warnings: list[str] = []
    query = build_query(
        "gpu_name=RTX_4090 num_gpus>=2 dph<0.5 verified=any", OfferFilters(), warnings
    )
    assert query["gpu_name"] == {"eq": "RTX 4090"}  # `_` means a space
    assert query["num_gpus"] == {"gte": "2"}
    assert query["dph_total"] == {"lt": "0.5"}  # the `dph` alias
    assert "verified" not in query  # `=any` lifts a default filter
    assert query["rentable"] == {"eq": True} and query["rented"] == {"eq": False}
    assert warnings == []


def test_shortcuts_tighten_the_query() -> None:
    filters = OfferFilters(gpu_names=("RTX 3060", "RTX A4000"), num_gpus=1, max_dph=0.1,
                           min_reliability=0.95)  # fmt: skip
    query = build_query("dph<0.5", filters, [])
    assert query["gpu_name"] == {"in": ["RTX 3060", "RTX A4000"]}
    assert query["num_gpus"] == {"eq": 1}
    assert query["dph_total"] == {"lt": "0.5", "lte": 0.1}
    assert query["reliability"] == {"gte": 0.95}


def test_unknown_fields_warn_and_bad_queries_are_input_errors() -> None:
    warnings: list[str] = []
    build_query("colour=blue", OfferFilters(), warnings)
    assert warnings and "Unrecognized field: colour" in warnings[0]
    with pytest.raises(InputError, match="offer query"):
        build_query("gpu_name ~~ x", OfferFilters(), [])


def test_ranking_is_dlp_per_dollar_then_price() -> None:
    ranked = rank_offers(
        [
            offer(1, dph=0.10, dlperf=10.0),  # 100 DLP/$
            offer(2, dph=0.05, dlperf=10.0),  # 200
            offer(3, dph=0.20, dlperf=None, machine=2),  # unknown: last
            offer(4, dph=0.02, dlperf=4.0),  # 200, cheaper than #2
        ],
        blacklist=frozenset({1}),
    )
    assert [r.offer.id for r in ranked] == [4, 2, 1, 3]
    assert [r.rank for r in ranked] == [1, 2, 3, 4]
    assert [r.blacklisted for r in ranked] == [True, True, True, False]  # machine 1 for all but 3


def test_reference_job_cost_scales_by_dlperf() -> None:
    job = ReferenceJob(hours=4.5, dlperf=12.4)
    fast, slow = offer(1, dph=0.5, dlperf=62.0), offer(2, dph=0.05, dlperf=6.2)
    ranked = {r.offer.id: r for r in rank_offers([fast, slow], job)}
    assert ranked[1].est_hours == pytest.approx(0.9)
    assert ranked[1].est_cost == pytest.approx(0.45)
    assert ranked[2].est_hours == pytest.approx(9.0)
    assert ranked[2].est_cost == pytest.approx(0.45)
    plain = rank_offers([fast], ReferenceJob(hours=2.0))[0]
    assert plain.est_hours == 2.0 and plain.est_cost == pytest.approx(1.0)
    unknown = rank_offers([offer(3, dlperf=None)], job)[0]
    assert unknown.est_hours is None and unknown.est_cost is None


def test_passes_checks_every_filter_client_side() -> None:
    filters = OfferFilters(gpu_names=("RTX 3060",), num_gpus=1, max_dph=0.1, min_reliability=0.9,
                           min_dlp_per_dollar=50)  # fmt: skip
    assert passes(offer(1), filters) is None
    assert "not one of" in (passes(offer(1, gpu="H100 SXM"), filters) or "")
    assert "2 GPUs" in (passes(offer(1, num_gpus=2), filters) or "")
    assert "over" in (passes(offer(1, dph=0.2), filters) or "")
    assert "reliability" in (passes(offer(1, reliability=0.5), filters) or "")
    assert "DLP/$" in (passes(offer(1, dlperf=1.0), filters) or "")


def test_interruptible_offers_cost_their_minimum_bid() -> None:
    raw = {"id": 7, "machine_id": 3, "gpu_name": "RTX 3090", "num_gpus": "1", "dph_total": 0.3,
           "min_bid": 0.12, "dlperf": 30, "reliability2": 0.98}  # fmt: skip
    assert parse_offer(raw).price_dph == 0.3
    bid = parse_offer(raw, interruptible=True)
    assert bid.price_dph == 0.12 and bid.interruptible and bid.dlp_per_dollar == pytest.approx(250)
