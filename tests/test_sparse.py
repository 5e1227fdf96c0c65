"""Row-sparse training and the synthetic generator."""

import numpy as np
import pytest
import torch

from collabkit import CollabDataLoaders, DotProductBias, Learner, rmse
from collabkit.data import IndexBatches, Vocabulary
from collabkit.datasets import synthetic
from collabkit.training.recipe import TrainConfig, train
from collabkit.training.sparse import fit_sparse


def test_sparse_matches_dense_on_planted_data(planted):
    frame = planted.sample(frac=1.0, random_state=1)
    cut = int(0.8 * len(frame))
    dense = train(TrainConfig(n_factors=8, epochs=8, bs=256, lr=1e-2, wd=1e-3, y_range=(-1, 7), seed=0),
                  frame.iloc[:cut], frame.iloc[cut:])
    sparse = train(TrainConfig(solver="sparse", n_factors=8, epochs=30, bs=1024, lr=0.05, wd=0.02, seed=0),
                   frame.iloc[:cut], frame.iloc[cut:])
    dense_rmse, sparse_rmse = dense.recorder.values[-1][2], sparse.recorder.values[-1][2]
    assert sparse_rmse < 1.2 * 0.25  # the planted noise
    assert abs(sparse_rmse - dense_rmse) < 0.03
    preds, targs = sparse.get_preds()  # the stored model (μ folded into the biases) predicts what was reported
    assert rmse(preds, targs) == pytest.approx(sparse_rmse, rel=1e-5)


def _planted_loaders(planted, bs=1024):
    frame = planted.sample(frac=1.0, random_state=1)
    cut = int(0.8 * len(frame))
    return CollabDataLoaders.from_frames(frame.iloc[:cut], frame.iloc[cut:], bs=bs, seed=0)


def test_both_sparse_engines_reach_the_same_fit(planted):
    """The compiled CPU engine (a rating per step) and the torch engine (a batch per step) fit alike."""
    fits = {}
    for compiled in (True, False):
        learn = Learner(_planted_loaders(planted), DotProductBias(300, 200, 8, y_range=None), metrics=rmse, progress=False)
        fit_sparse(learn, epochs=30, lr=0.05, reg=0.02, compiled=compiled)
        fits[compiled] = learn.recorder.values[-1][2]
        assert len(learn.recorder.values) == 30 and learn.recorder.values[-1][0] < learn.recorder.values[0][0]
    assert fits[True] < 1.2 * 0.25 and fits[False] < 1.2 * 0.25  # the planted noise
    assert abs(fits[True] - fits[False]) < 0.02


def test_validating_between_epochs_leaves_the_biases_exactly_as_trained(planted, monkeypatch):
    """Validation folds the mean rating into the user biases and must restore them bit for bit
    (adding and subtracting μ in float32 moved most entries by an ulp or so every epoch)."""
    from collabkit.training import sparse

    trained = torch.randn(300, 1, generator=torch.Generator().manual_seed(0)) * 0.3
    seen = []  # the user biases each epoch starts from

    def epoch(self, mu, bs, after_batch):  # stand-in: the first epoch sets the biases, later ones change nothing
        if not seen:
            with torch.no_grad():
                self.model.u_bias.weight.copy_(trained)
        seen.append(self.model.u_bias.weight.detach().clone())
        return 1.0, 1

    monkeypatch.setattr(sparse._TorchEngine, "epoch", epoch)
    learn = Learner(_planted_loaders(planted), DotProductBias(300, 200, 8, y_range=None), metrics=rmse, progress=False)
    fit_sparse(learn, epochs=4, compiled=False)
    assert len(seen) == 4
    for later in seen[1:]:  # after one, two and three validations
        torch.testing.assert_close(later, trained, rtol=0, atol=0)


def test_compiled_epoch_is_row_wise_adagrad_rating_by_rating():
    """One thread, one block: the kernel makes exactly the updates of the plain loop written out below."""
    from collabkit.training.kernels import mf_adagrad_epoch

    rng = np.random.default_rng(0)
    n, n_users, n_items, k = 40, 5, 4, 3
    x = np.stack([rng.integers(0, n_users, n), rng.integers(0, n_items, n)], 1).astype(np.int32)
    y = rng.uniform(1, 5, n).astype(np.float32)
    tables = [rng.normal(0, 0.3, (n_users, k)), rng.normal(0, 0.3, (n_items, k)),
              rng.normal(0, 0.1, n_users), rng.normal(0, 0.1, n_items)]
    tables = [t.astype(np.float32) for t in tables]
    mu, lr, reg, breg = 3.0, 0.05, 0.02, 0.01
    P, Q, bu, bi = (t.astype(np.float64) for t in tables)
    aP, aQ, abu, abi = np.full(n_users, 0.1), np.full(n_items, 0.1), np.full(n_users, 0.1), np.full(n_items, 0.1)
    sse = 0.0
    for (u, i), r in zip(x, y):
        e = r - (mu + bu[u] + bi[i] + P[u] @ Q[i])
        sse += e * e
        gu, gi = reg * P[u] - e * Q[i], reg * Q[i] - e * P[u]
        aP[u] += (gu**2).mean()
        aQ[i] += (gi**2).mean()
        P[u], Q[i] = P[u] - lr * gu / np.sqrt(aP[u]), Q[i] - lr * gi / np.sqrt(aQ[i])
        g = breg * bu[u] - e
        abu[u] += g * g
        bu[u] -= lr * g / np.sqrt(abu[u])
        g = breg * bi[i] - e
        abi[i] += g * g
        bi[i] -= lr * g / np.sqrt(abi[i])
    sides = [np.stack([bias, np.full_like(bias, 0.1), np.full_like(bias, 0.1), np.zeros_like(bias)], 1)
             for bias in tables[2:]]  # (bias, row accumulator, bias accumulator, unused)
    got = mf_adagrad_epoch(x, y, np.array([0]), 64, 1, tables[0], tables[1], *sides, *map(np.float32, (mu, lr, reg, breg)))
    assert got == pytest.approx(sse, rel=1e-4)
    mine = [tables[0], tables[1], sides[0][:, 0], sides[1][:, 0], sides[0][:, 1], sides[1][:, 1], sides[0][:, 2],
            sides[1][:, 2]]
    for have, want in zip(mine, [P, Q, bu, bi, aP, aQ, abu, abi]):
        np.testing.assert_allclose(have, want, rtol=1e-4, atol=1e-5)


def test_two_threads_sharing_the_tables_still_fit(planted, monkeypatch):
    """Hogwild: two threads update the same tables without locks; the fit is not repeatable bit for bit, but good."""
    import numba

    from collabkit.training import numba_threads

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("numba has one thread here")
    torch.set_num_threads(2)  # the engine sizes numba's pool like torch's (the fixture restores it)
    used = []
    real_threads = numba_threads.threads
    monkeypatch.setattr(numba_threads, "threads", lambda n: used.append(n) or real_threads(n))
    learn = Learner(_planted_loaders(planted), DotProductBias(300, 200, 8, y_range=None), metrics=rmse, progress=False)
    fit_sparse(learn, epochs=30, lr=0.05, reg=0.02)
    assert learn.recorder.values[-1][2] < 1.2 * 0.25
    assert set(used) == {2}  # every epoch's compiled calls ran on two threads


def test_rows_are_permuted_in_place_exactly():
    from collabkit.training.kernels import permute_rows_

    rng = np.random.default_rng(1)
    x = rng.integers(0, 1000, (10_001, 2)).astype(np.int32)
    y = rng.random(10_001).astype(np.float32)
    order = rng.permutation(10_001).astype(np.int32)
    want_x, want_y = x[order], y[order]
    permute_rows_(x, y, order)
    np.testing.assert_array_equal(x, want_x)
    np.testing.assert_array_equal(y, want_y)


def test_a_sparse_step_touches_only_the_batch_rows():
    torch.manual_seed(0)
    model = DotProductBias(50, 40, 4, y_range=None)
    before = [t.detach().clone() for t in model.parameters()]
    from collabkit.training.sparse import RowAdagrad, sparse_step

    optimizers = {"u": RowAdagrad(50, 0.1), "i": RowAdagrad(40, 0.1), "bu": RowAdagrad(50, 0.1), "bi": RowAdagrad(40, 0.1)}
    sparse_step(model, optimizers, torch.tensor([3, 3, 7]), torch.tensor([1, 5, 5]), torch.tensor([4.0, 2.0, 5.0]),
                3.0, 0.02, 0.02)
    assert (optimizers["u"].state != 0.1).nonzero().flatten().tolist() == [3, 7]
    assert (optimizers["bi"].state != 0.1).nonzero().flatten().tolist() == [1, 5]
    changed_users = (model.u_weight.weight != before[0]).any(1).nonzero().flatten().tolist()
    changed_items = (model.i_weight.weight != before[1]).any(1).nonzero().flatten().tolist()
    assert changed_users == [3, 7] and changed_items == [1, 5]


def test_generator_is_deterministic_with_the_requested_sizes_and_shape():
    a = synthetic(200_000, n_users=2_000, n_items=500, rank=8, noise=0.3, seed=5)
    b = synthetic(200_000, n_users=2_000, n_items=500, rank=8, noise=0.3, seed=5)
    c = synthetic(200_000, n_users=2_000, n_items=500, rank=8, noise=0.3, seed=6)
    for name in ("users", "items", "ratings"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.ratings, c.ratings)
    assert len(a.ratings) == 200_000 and a.users.dtype == np.int32 and a.ratings.dtype == np.float32
    assert a.users.max() < 2_000 and a.items.max() < 500
    u, i = a.users[:500], a.items[:500]
    by_hand = a.mean + a.user_bias[u] + a.item_bias[i] + (a.user_factors[u] * a.item_factors[i]).sum(1)
    np.testing.assert_allclose(a.truth(u, i), by_hand, rtol=1e-5, atol=1e-5)
    residual = a.ratings - a.truth(a.users, a.items)
    assert residual.std() == pytest.approx(0.3, rel=0.02)  # the noise is what was asked
    counts = np.sort(np.bincount(a.items, minlength=500))[::-1]
    # power law with exponent 1: the k-th most popular item gets about 1/(k+1) of the top one's share
    assert counts[0] / counts[9] == pytest.approx(10, rel=0.3) and counts[0] > 20 * counts[-1]


def test_two_million_ratings_train_and_approach_the_planted_truth():
    data = synthetic(2_000_000, n_users=20_000, n_items=4_000, rank=8, noise=0.5, seed=0)
    x = torch.from_numpy(np.stack([data.users, data.items], 1))
    y = torch.from_numpy(data.ratings)
    cut = 1_900_000
    g = torch.Generator().manual_seed(0)
    dls = CollabDataLoaders(
        IndexBatches(x[:cut], y[:cut], bs=16384, shuffle=True, drop_last=True, generator=g),
        IndexBatches(x[cut:], y[cut:], bs=65536),
        {"user": Vocabulary(np.arange(20_000), "user"), "item": Vocabulary(np.arange(4_000), "item")},
        "user", "item", "rating",
    )
    learn = Learner(dls, DotProductBias(20_000, 4_000, 8, y_range=None), metrics=rmse, progress=False)
    fit_sparse(learn, epochs=3, lr=0.05, reg=0.02)
    preds, _ = learn.get_preds()
    truth = data.truth(data.users[cut:], data.items[cut:])
    assert learn.recorder.values[-1][2] < 0.6  # observed ratings: noise 0.5 plus what is left to learn
    assert rmse(preds, truth) < 0.35  # against the noiseless planted ratings
