"""``ServiceTime``: the running fit of the model's batch time on batch size."""

from __future__ import annotations

import pytest

from qa_lightning.serving.service_time import ServiceTime


def test_recovers_a_fixed_cost_and_a_per_item_cost() -> None:
    service = ServiceTime(alpha=0.2)
    assert not service.ready and service.predict(4) == 0.0
    for n in (1, 4, 2, 8, 3):
        service.observe(n, 0.010 + 0.020 * n)
    assert service.ready and service.batches == 5
    assert service.per_batch_s == pytest.approx(0.010)
    assert service.per_item_s == pytest.approx(0.020)
    assert service.predict(32) == pytest.approx(0.650)


def test_one_size_only_is_taken_as_proportional() -> None:
    service = ServiceTime()
    service.observe(4, 0.2)
    assert (service.per_batch_s, service.per_item_s) == (0.0, pytest.approx(0.05))
    assert service.predict(8) == pytest.approx(0.4)  # over-predicts larger batches: safe side


def test_bigger_batches_not_slower_give_a_flat_time() -> None:
    service = ServiceTime(alpha=0.5)
    service.observe(1, 0.012)
    service.observe(32, 0.010)  # a GPU: size hardly matters
    assert service.per_item_s == 0.0
    assert 0.010 <= service.per_batch_s <= 0.012
    assert service.largest_batch(0.05) is None  # no per-item cost: no cap


def test_the_estimate_follows_a_change_of_speed() -> None:
    service = ServiceTime(alpha=0.3)
    for n in (1, 2, 4) * 5:
        service.observe(n, 0.02 * n)
    assert service.per_item_s == pytest.approx(0.02)
    rounds = []
    for _ in range(5):  # the machine got busier: twice as slow
        for n in (1, 2, 4):
            service.observe(n, 0.04 * n)
        rounds.append(service.predict(4))
    assert rounds == sorted(rounds) and rounds[0] > 0.12  # from 0.08, towards 0.16
    assert service.predict(4) == pytest.approx(0.16, rel=0.01)
    assert service.per_item_s == pytest.approx(0.04, rel=0.01)


def test_overruns_widen_the_high_estimate_then_fade() -> None:
    service = ServiceTime(alpha=0.5)
    for n in (1, 2, 4, 1, 2, 4):
        service.observe(n, 0.02 * n)
    assert service.overrun == pytest.approx(0.0, abs=1e-9)
    assert service.predict_high(4) == pytest.approx(service.predict(4))
    service.observe(2, 0.12)  # three times the 40 ms predicted: the machine stalled
    assert service.overrun == pytest.approx((0.5 * 2.0**2) ** 0.5)  # r.m.s. of one overrun of 2
    assert service.predict_high(2) == pytest.approx(service.predict(2) * (1 + 2 * service.overrun))
    wide = service.overrun
    for n in (1, 2, 4) * 4:
        service.observe(n, service.predict(n))  # on time again
    assert service.overrun < wide / 10
    early = ServiceTime()
    early.observe(1, 0.01)
    early.observe(1, 0.001)  # faster than predicted: no overrun
    assert early.overrun == 0.0


def test_largest_batch_within_a_budget() -> None:
    service = ServiceTime()
    service.observe(1, 0.03)
    service.observe(3, 0.07)  # 10 ms per batch, 20 ms per item
    assert service.largest_batch(0.075) == 3
    assert service.largest_batch(0.069) == 2
    assert service.largest_batch(0.001) == 1  # never below one
    service.overrun = 0.5  # high estimate twice the fit: half the budget
    assert service.largest_batch(0.150) == 3


def test_invalid_observations_and_alpha() -> None:
    service = ServiceTime()
    service.observe(0, 1.0)
    service.observe(2, float("nan"))
    service.observe(2, -1.0)
    assert not service.ready
    with pytest.raises(ValueError, match="alpha"):
        ServiceTime(alpha=0)
