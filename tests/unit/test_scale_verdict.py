"""bench.scale's "more copies never lower throughput", judged beyond the rounds' spread."""

from __future__ import annotations

from typing import Any

from bench.scale import within_spread


def level(median: float, rounds: list[float]) -> dict[str, Any]:
    return {"service_per_s": median, "rounds_service_per_s": rounds}


def test_a_median_within_the_slowest_round_before_it_is_not_lower() -> None:
    assert within_spread([level(16.0, [15.8, 16.0, 16.3]), level(15.9, [15.7, 15.9, 16.1])])


def test_a_median_below_every_round_before_it_is_lower() -> None:
    assert not within_spread([level(16.0, [16.0, 16.2, 16.0]),
                              level(15.6, [15.4, 15.6, 15.9])])


def test_each_size_is_judged_against_the_one_before_it() -> None:
    assert not within_spread([level(16.0, [15.9, 16.0, 16.1]), level(16.1, [16.0, 16.1, 16.2]),
                              level(15.0, [14.9, 15.0, 15.3])])
    assert within_spread([level(16.0, [15.0, 16.0, 16.1])])
