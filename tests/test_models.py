import math

import pytest
import torch
from torch import nn

from collabkit import CollabDataLoaders, DotProduct, DotProductBias, EmbeddingNN, Learner, rmse
from collabkit.models import Embedding, Module, create_params, sigmoid_range


def fitted(planted, model, epochs=8, lr=1e-2, wd=1e-3, bs=256):
    torch.manual_seed(0)
    dls = CollabDataLoaders.from_df(planted, seed=0, bs=bs)
    learn = Learner(dls, model, metrics=rmse, progress=False)
    learn.fit_one_cycle(epochs, lr, wd=wd)
    return learn


def test_dot_product_bias_recovers_planted_ratings_to_the_noise_level(planted):
    torch.manual_seed(0)
    learn = fitted(planted, DotProductBias(300, 200, 8, y_range=(-1, 7)))
    valid_rmse = learn.recorder.values[-1][2]
    noise = 0.25
    assert valid_rmse < 1.25 * noise
    # and far better than predicting each item's mean, which ignores the planted factors
    assert valid_rmse < 0.5 * float(planted["rating"].std())


@pytest.mark.parametrize(
    "model",
    [
        lambda: DotProduct(300, 200, 8),
        lambda: DotProduct(300, 200, 8, y_range=(-1, 7)),
        lambda: EmbeddingNN([(300, 16), (200, 16)], layers=[32], y_range=(-1, 7)),
    ],
    ids=["dot", "dot-y_range", "nn"],
)
def test_every_model_learns_the_planted_signal(planted, model):
    torch.manual_seed(0)
    learn = fitted(planted, model(), epochs=6)
    first, last = learn.recorder.values[0], learn.recorder.values[-1]
    assert last[0] < first[0] and last[1] < first[1]
    global_mean_rmse = float(planted["rating"].std())  # what predicting the mean rating scores
    assert last[2] < 0.85 * global_mean_rmse


def test_models_map_index_pairs_to_one_rating_each():
    x = torch.tensor([[0, 1], [2, 0], [1, 1]])
    for model in (DotProduct(3, 2, 4), DotProductBias(3, 2, 4), EmbeddingNN([(3, 4), (2, 4)], layers=[5])):
        model.eval()
        assert model(x).shape == (3,)
    out = DotProductBias(3, 2, 4, y_range=(1, 2))(x)
    assert ((out > 1) & (out < 2)).all()


def test_config_rebuilds_the_same_architecture():
    for model in (DotProduct(3, 2, 4, (0, 5)), DotProductBias(3, 2, 4), EmbeddingNN([(3, 4), (2, 4)], [6, 5], ps=[0.1, 0])):
        again = type(model)(**model.config())
        assert [p.shape for p in again.parameters()] == [p.shape for p in model.parameters()]


def test_bad_sizes_are_explained():
    with pytest.raises(ValueError, match="n_factors must be a positive integer, got 0"):
        DotProductBias(3, 2, 0)
    with pytest.raises(ValueError, match="y_range must be"):
        DotProduct(3, 2, 4, y_range=(5, 1))
    with pytest.raises(ValueError, match="one dropout per hidden layer"):
        EmbeddingNN([(3, 4), (2, 4)], layers=[5, 4], ps=[0.1])


def test_module_subclasses_need_not_call_super_init():
    class NoSuper(Module):
        def __init__(self, n):
            self.emb = Embedding(n, 3)
            self.extra = create_params([n])

        def forward(self, x):
            return self.emb(x).sum(1) + self.extra[x]

    class WithSuper(Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 1)

    m = NoSuper(5)
    assert {n for n, _ in m.named_parameters()} == {"emb.weight", "extra"}
    assert m(torch.tensor([0, 4])).shape == (2,)
    assert len(list(WithSuper().parameters())) == 2


def test_embedding_and_create_params_initialisation():
    torch.manual_seed(0)
    w = Embedding(2000, 50).weight.detach()
    assert w.std().item() == pytest.approx(0.01 * 0.88, rel=0.05)  # std of N(0, 0.01) cut at ±2σ
    assert w.abs().max().item() <= 0.02 + 1e-7
    p = create_params((2000, 50))
    assert isinstance(p, nn.Parameter) and p.shape == (2000, 50)
    assert p.std().item() == pytest.approx(0.01, rel=0.05)
    assert create_params(7).shape == (7,)


def test_sigmoid_range():
    x = torch.tensor([-math.inf, 0.0, math.inf])
    assert sigmoid_range(x, 0, 5.5).tolist() == [0.0, 2.75, 5.5]


def test_bayesian_pmf_recovers_planted_ratings(planted):
    from collabkit.training.recipe import TrainConfig, train

    frame = planted.sample(frac=1.0, random_state=0)
    cut = int(0.8 * len(frame))
    config = TrainConfig(solver="bayes", n_factors=6, sweeps=60, burn_in=20, thin=4, seed=0)
    learn = train(config, frame.iloc[:cut], frame.iloc[cut:])
    valid_rmse = learn.recorder.values[-1][2]
    assert valid_rmse < 1.25 * 0.25  # the planted noise level
    assert learn.model.u_weight.embedding_dim == config.settings().model_factors == 60


def _sgd(groups, lr, wd, decouple_wd):
    return torch.optim.SGD(groups, lr=lr, momentum=0.9, weight_decay=wd)


@pytest.mark.parametrize(
    "y_range, wd_mode, opt_func, fused",
    [
        ((-1, 7), "decoupled", None, True),  # the lesson: AdamW, run by the compiled loop
        (None, "decoupled", None, True),
        ((-1, 7), "l2", None, True),  # Adam with wd·p in the gradient, also compiled
        ((-1, 7), "decoupled", _sgd, False),  # no compiled loop for SGD: torch ops with hand-written gradients
    ],
    ids=["adamw", "adamw-no-y_range", "adam-l2", "sgd-hand-written"],
)
def test_fast_paths_train_exactly_like_autograd(planted, y_range, wd_mode, opt_func, fused):
    import copy

    from collabkit.training.steppers import AutogradStepper, FusedStepper, HandGradStepper, stepper_for

    torch.manual_seed(0)
    model = DotProductBias(300, 200, 8, y_range)
    runs = {}
    for fast in (True, False):
        dls = CollabDataLoaders.from_df(planted, seed=3, bs=64)
        extra = {"opt_func": opt_func} if opt_func else {}
        learn = Learner(dls, copy.deepcopy(model), progress=False, fast=fast, wd_mode=wd_mode, **extra)
        expected = (FusedStepper if fused else HandGradStepper) if fast else AutogradStepper
        assert isinstance(stepper_for(learn, learn.create_opt(), 0.0, learn.model), expected)
        learn.fit_one_cycle(2, 1e-2, wd=0.05)
        runs[fast] = learn
    for a, b in zip(runs[True].model.parameters(), runs[False].model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    for key in ("exp_avg", "exp_avg_sq", "momentum_buffer"):
        for p_fast, p_slow in zip(runs[True].model.parameters(), runs[False].model.parameters()):
            if key in runs[False].opt.state[p_slow]:
                torch.testing.assert_close(runs[True].opt.state[p_fast][key], runs[False].opt.state[p_slow][key],
                                           rtol=1e-3, atol=1e-7)
    assert runs[True].recorder.values[-1][1] == pytest.approx(runs[False].recorder.values[-1][1], rel=1e-4)
    assert runs[True].recorder.losses == pytest.approx(runs[False].recorder.losses, rel=1e-4)
    assert runs[True].recorder.lrs == runs[False].recorder.lrs and runs[True].recorder.moms == runs[False].recorder.moms


@pytest.mark.parametrize(("fast", "words"), [(True, "fused compiled loop"), (False, "autograd")])
def test_the_log_says_which_steps_a_fit_took(planted, caplog, fast, words):
    import logging

    dls = CollabDataLoaders.from_df(planted, seed=3, bs=256)
    learn = Learner(dls, DotProductBias(len(dls.users), len(dls.items), 4, (0, 6)), progress=False, fast=fast)
    with caplog.at_level(logging.INFO, logger="collabkit.training.steppers"):
        learn.fit(1, 1e-2)
    messages = [r.getMessage() for r in caplog.records if r.name == "collabkit.training.steppers"]
    assert len(messages) == 1 and messages[0].startswith(f"SGD steps: {words}")


def test_numpy_sizes_make_a_model_whose_config_is_json():
    import json

    import numpy as np

    model = DotProductBias(np.int64(5), np.int32(4), np.int64(3))
    assert json.loads(json.dumps(model.config()))["n_users"] == 5  # it built, then could not be saved
