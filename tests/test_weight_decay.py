"""The three weight-decay forms: decoupled, L2 in the gradient, L2 in the loss."""

import copy

import pytest
import torch

from collabkit import CollabDataLoaders, DotProductBias, EmbeddingNN, Learner
from collabkit.training.optim import split_decay_params


def make(planted, model, wd_mode, seed=3, bs=512):
    dls = CollabDataLoaders.from_df(planted, seed=seed, bs=bs)
    return Learner(dls, model, wd_mode=wd_mode, progress=False)


def test_l2_in_the_gradient_equals_l2_in_the_loss(planted):
    torch.manual_seed(0)
    model = DotProductBias(300, 200, 8, (-1, 7))
    grad_form = make(planted, copy.deepcopy(model), "l2")
    loss_form = make(planted, copy.deepcopy(model), "l2-loss")
    decoupled = make(planted, copy.deepcopy(model), "decoupled")
    for learn in (grad_form, loss_form, decoupled):
        learn.fit(2, 1e-2, wd=0.05)
    for (name, a), b, c in zip(
        grad_form.model.named_parameters(), loss_form.model.parameters(), decoupled.model.parameters()
    ):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
        assert not torch.allclose(a, c, atol=1e-4), f"decoupled decay should differ from L2 ({name})"
    assert grad_form.opt.param_groups[0]["weight_decay"] == pytest.approx(0.1)  # p.grad += 2 * wd * p


def test_decoupled_decay_is_adamw_first_step(planted):
    """One step: p1 = p0 (1 - lr·wd) - lr · g / (|g| + eps)  (Adam's first step is sign-like)."""
    dls = CollabDataLoaders.from_df(planted, seed=0, bs=len(planted))  # a single full batch
    dls.train.drop_last = False
    torch.manual_seed(0)
    model = DotProductBias(300, 200, 4, (-1, 7))
    p0 = model.u_weight.weight.detach().clone()
    probe = copy.deepcopy(model)
    x, y = dls.train.x, dls.train.y
    torch.nn.functional.mse_loss(probe(x), y).backward()
    g = probe.u_weight.weight.grad
    learn = Learner(dls, model, progress=False)
    lr, wd = 0.01, 0.5
    learn.fit(1, lr, wd=wd)
    expected = p0 * (1 - lr * wd) - lr * g / (g.abs() + 1e-5)
    torch.testing.assert_close(model.u_weight.weight.detach(), expected, rtol=1e-4, atol=1e-6)


def test_more_weight_decay_gives_smaller_embeddings(planted):
    norms = {}
    for wd in (0.0, 5.0):
        torch.manual_seed(0)
        learn = make(planted, DotProductBias(300, 200, 8, (-1, 7)), "decoupled")
        learn.fit_one_cycle(2, 1e-2, wd=wd)
        norms[wd] = learn.model.i_weight.weight.norm().item()
    assert norms[5.0] < 0.7 * norms[0.0]


def test_embeddings_are_decayed_but_batchnorm_and_linear_biases_are_not():
    model = EmbeddingNN([(10, 4), (12, 4)], layers=[8])
    decay, no_decay = split_decay_params(model)
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)] for p in decay} == {"embeds.0.weight", "embeds.1.weight", "layers.0.weight", "layers.3.weight"}
    assert {names[id(p)] for p in no_decay} == {"layers.2.weight", "layers.2.bias", "layers.3.bias"}
    decay_all, none = split_decay_params(model, wd_bn_bias=True)
    assert len(decay_all) == len(list(model.parameters())) and none == []


def test_unknown_wd_mode_is_refused(planted):
    with pytest.raises(ValueError, match=r"wd_mode must be one of \('decoupled', 'l2', 'l2-loss'\)"):
        make(planted, DotProductBias(300, 200, 4), "l1")


@pytest.mark.parametrize("decouple_wd", [True, False])
def test_the_optimizer_builds_without_importing_dynamo_and_steps_as_torchs(decouple_wd):
    import subprocess
    import sys

    from collabkit.training.optim import Adam

    code = ("import sys, torch; from collabkit.training.optim import Adam; "
            f"Adam([torch.nn.Parameter(torch.zeros(3))], lr=0.1, decouple_wd={decouple_wd}); "
            "print('torch._dynamo' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out  # importing it made the first fit cost ~2 s more

    torch.manual_seed(0)
    ours, theirs = (torch.nn.Parameter(torch.randn(4, 3)) for _ in range(2))
    with torch.no_grad():
        theirs.copy_(ours)
    cls = torch.optim.AdamW if decouple_wd else torch.optim.Adam
    opts = [Adam([ours], lr=0.1, wd=0.3, decouple_wd=decouple_wd),
            cls([theirs], lr=0.1, betas=(0.9, 0.99), eps=1e-5, weight_decay=0.3)]
    assert isinstance(opts[0], cls)
    for _ in range(3):
        for p, opt in zip((ours, theirs), opts):
            opt.zero_grad()
            (p ** 3).sum().backward()
            opt.step()
    torch.testing.assert_close(ours, theirs)
    opts[0].add_param_group({"params": [torch.nn.Parameter(torch.ones(2))], "lr": 0.5})
    assert opts[0].param_groups[1]["lr"] == 0.5 and opts[0].param_groups[1]["betas"] == (0.9, 0.99)
