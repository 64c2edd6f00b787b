"""Learning-rate schedule: warm-up values, cosine end points, per-group ratios, resume position."""

from __future__ import annotations

import math

import pytest
import torch

from lamina.trainer.schedule import ScheduleConfig, check_schedule, lr_lambda, make_scheduler


def test_warmup_is_linear_and_never_zero():
    values = [lr_lambda(k, 10, 4, "constant") for k in range(10)]
    assert values[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert values[4:] == [1.0] * 6


def test_cosine_reaches_floor_at_last_step():
    total, warmup, floor = 12, 1, 0.1
    values = [lr_lambda(k, total, warmup, "cosine", floor) for k in range(total)]
    assert values[0] == pytest.approx(1.0)  # the single warm-up step reaches the peak
    assert values[1] == pytest.approx(1.0)  # decay starts at the peak
    assert values[-1] == pytest.approx(floor)
    # halfway through the decay (step 6 of 1..11): floor + (1 - floor) / 2
    assert values[6] == pytest.approx(floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert all(a >= b for a, b in zip(values[1:], values[2:], strict=False))  # non-increasing
    assert lr_lambda(50, total, warmup, "cosine", floor) == pytest.approx(floor)  # past the end


def test_cosine_without_room_to_decay_stays_at_peak():
    assert lr_lambda(0, 1, 0, "cosine") == 1.0
    assert lr_lambda(2, 3, 2, "cosine") == 1.0


def test_scheduler_scales_each_group_and_resumes_at_its_iteration():
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    cfg = ScheduleConfig(warmup_iterations=2, kind="cosine", min_lr_ratio=0.0)

    def optimizer():
        return torch.optim.AdamW([{"params": [a], "lr": 1e-3}, {"params": [b], "lr": 2e-3}])

    opt = optimizer()
    sched = make_scheduler(opt, cfg, total_iterations=6)
    seen = []
    for _ in range(6):
        seen.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    expected = [lr_lambda(k, 6, 2, "cosine") for k in range(6)]
    assert [s[0] for s in seen] == pytest.approx([1e-3 * m for m in expected])
    assert [s[1] for s in seen] == pytest.approx([2 * s[0] for s in seen])  # per-block ratios kept
    assert seen[-1][0] == pytest.approx(0.0, abs=1e-12)

    # A resumed run: the optimizer state (with initial_lr) is loaded, then the scheduler built at 3.
    resumed = optimizer()
    resumed.load_state_dict(opt.state_dict())
    make_scheduler(resumed, cfg, total_iterations=6, start_iteration=3)
    assert [g["lr"] for g in resumed.param_groups] == pytest.approx(seen[3])


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        (ScheduleConfig(kind="linear"), "trainer.schedule.kind='linear'; valid: constant, cosine"),
        (ScheduleConfig(warmup_iterations=-1), "warmup_iterations=-1 must be >= 0"),
        (ScheduleConfig(min_lr_ratio=1.5), "min_lr_ratio=1.5 must be in [0, 1]"),
    ],
)
def test_bad_schedule_is_named(cfg, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        check_schedule(cfg)
