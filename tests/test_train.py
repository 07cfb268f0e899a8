import math

import pytest

from translate.config import TrainConfig
from translate.train import schedule


def factor(step, total=100, elapsed=0.0, **changes):
    return schedule(TrainConfig(**changes), {"step": step - 1}, total, elapsed)


def test_constant_schedule_is_one_after_warmup():
    assert factor(1, warmup_steps=4) == pytest.approx(0.25)
    assert factor(4, warmup_steps=4) == 1.0
    assert factor(90) == 1.0


def test_cosine_anneals_to_zero_over_the_steps():
    values = [factor(step, lr_schedule="cosine") for step in (1, 50, 100)]
    assert values == pytest.approx([0.5 * (1 + math.cos(math.pi / 100)), 0.5, 0.0])


def test_cosine_follows_the_clock_when_the_clock_ends_first():
    # step 10 of 100, but 45 of 60 seconds gone: three quarters of the way
    value = factor(10, elapsed=45.0, lr_schedule="cosine", max_minutes=1.0)
    assert value == pytest.approx(0.5 * (1 + math.cos(0.75 * math.pi)))
    assert factor(10, elapsed=99.0, lr_schedule="cosine", max_minutes=1.0) == 0.0


def test_warmup_scales_the_cosine():
    assert factor(2, warmup_steps=4, lr_schedule="cosine") == pytest.approx(
        0.5 * 0.5 * (1 + math.cos(math.pi * 2 / 100))
    )
