"""fit_one_cycle is OneCycleLR with fastai's defaults: check it against values worked out by hand."""

import math

import pandas as pd
import pytest
import torch

from collabkit import CollabDataLoaders, DotProductBias, Learner
from collabkit.training import one_cycle


def ten_batch_learner(**kwargs) -> Learner:
    """A learner whose training split is exactly 10 batches of 8."""
    n_train = 80
    n = int(n_train / 0.8)
    df = pd.DataFrame({"u": [i % 7 for i in range(n)], "i": [i % 11 for i in range(n)], "r": [3.0] * n})
    dls = CollabDataLoaders.from_df(df, valid_pct=0.2, seed=0, bs=8, duplicates="keep")
    assert len(dls.train) == 10
    return Learner(dls, DotProductBias(7, 11, 4), progress=False, **kwargs)


def cos_between(start: float, end: float, pct: float) -> float:
    return end + (start - end) / 2 * (math.cos(math.pi * pct) + 1)


# 10 steps, pct_start 0.25: OneCycleLR ends warm-up at step 0.25*10 - 1 = 1.5 and the cycle at step 9.
# lr_max = 1: start 1/25 = 0.04, final 1/1e5 = 1e-5.
HAND = {
    0: (0.04, 0.95),
    1: (1 - 0.96 / 2 * 0.5, 0.85 + 0.10 / 2 * 0.5),  # pct 1/1.5 = 2/3, cos(2π/3) + 1 = 0.5
    2: (cos_between(1.0, 1e-5, 0.5 / 7.5), cos_between(0.85, 0.95, 0.5 / 7.5)),
    5: (cos_between(1.0, 1e-5, 3.5 / 7.5), cos_between(0.85, 0.95, 3.5 / 7.5)),
    9: (1e-5, 0.95),
}


def test_one_cycle_lr_and_momentum_at_hand_computed_steps():
    assert HAND[1] == pytest.approx((0.76, 0.875))
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0, betas=(0.9, 0.99))
    sched = one_cycle(opt, lr_max=1.0, total_steps=10)
    seen = []
    for _ in range(10):
        seen.append((opt.param_groups[0]["lr"], opt.param_groups[0]["betas"][0]))
        opt.step()
        sched.step()
    for step, (lr, mom) in HAND.items():
        assert seen[step][0] == pytest.approx(lr, rel=1e-9), step
        assert seen[step][1] == pytest.approx(mom, rel=1e-9), step


def test_fit_one_cycle_follows_the_same_schedule_with_fastai_defaults():
    learn = ten_batch_learner()
    learn.fit_one_cycle(1, 1.0, wd=0.0)
    for step, (lr, mom) in HAND.items():
        assert learn.recorder.lrs[step] == pytest.approx(lr, rel=1e-9)
        assert learn.recorder.moms[step] == pytest.approx(mom, rel=1e-9)
    assert max(learn.recorder.lrs) <= 1.0


def test_default_optimizer_is_fastais_adam():
    learn = ten_batch_learner()
    learn.fit(1, 1e-3)
    group = learn.opt.param_groups[0]
    assert isinstance(learn.opt, torch.optim.AdamW)
    assert group["betas"] == (0.9, 0.99) and group["eps"] == 1e-5
    assert group["weight_decay"] == 0.01  # fastai's default wd when none is given
    assert learn.recorder.lrs == [1e-3] * 10


def test_schedule_spans_all_epochs_and_bad_moms_are_explained():
    learn = ten_batch_learner()
    learn.fit_one_cycle(3, 0.01)
    lrs = learn.recorder.lrs
    assert len(lrs) == 30 and lrs.index(max(lrs)) in (6, 7) and lrs[-1] == pytest.approx(0.01 / 1e5)
    with pytest.raises(ValueError, match="same first and last value"):
        learn.fit_one_cycle(1, 0.01, moms=(0.95, 0.85, 0.9))


@pytest.mark.parametrize("total", [3, 4, 5, 7])
def test_very_short_runs_still_warm_up_and_anneal(total):
    """4 steps at pct_start=0.25 is a one-step warm-up, which OneCycleLR divides by zero on; short runs get two."""
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = one_cycle(opt, 1e-2, total)
    lrs = []
    for _ in range(total):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        schedule.step()
    assert lrs[0] == pytest.approx(1e-2 / 25) and lrs[1] == pytest.approx(1e-2)
    assert lrs[-1] == pytest.approx(1e-2 / 1e5) and all(a >= b for a, b in zip(lrs[1:], lrs[2:]))
