import struct

import numpy as np
import pytest
import torch
from planted import planted_clusters

from collabkit import CollabDataLoaders, DataError, DotProduct, Learner, Recommender
from collabkit.interpret import (
    item_bias_table,
    item_pca,
    plot_item_pca,
    plot_losses,
    plot_lr_find,
    plot_schedule,
    save_plots,
)


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def setup(cluster_rec, clusters):
    frame, _, item_group = clusters
    return cluster_rec, frame, item_group


def test_bias_table_ranks_items_by_learned_bias(setup):
    rec, frame, _ = setup
    low, high = item_bias_table(rec, n=5)
    assert list(high.columns) == ["item", "title", "ratings", "bias"]
    assert high["bias"].is_monotonic_decreasing and low["bias"].is_monotonic_increasing
    assert low["bias"].max() < high["bias"].min()
    bias = rec.model.i_bias.weight.detach().numpy()[:, 0]
    mean_rating = frame.groupby("item")["rating"].mean().reindex(rec.items.ids).to_numpy()
    assert np.corrcoef(bias, mean_rating)[0, 1] > 0.7


def test_pca_of_item_factors_separates_the_planted_groups(setup):
    rec, _, item_group = setup
    pca = item_pca(rec, n_components=3)
    assert len(pca.frame) == 120 and pca.explained[0] >= pca.explained[1] >= pca.explained[2]
    coords = pca.frame[["pc1", "pc2", "pc3"]].to_numpy()
    groups = item_group[pca.frame["item"].to_numpy()]
    centroids = np.stack([coords[groups == g].mean(0) for g in range(4)])
    nearest = np.argmin(((coords[:, None, :] - centroids[None]) ** 2).sum(-1), axis=1)
    assert (nearest == groups).mean() > 0.95
    low, high = pca.extremes(1, n=5)
    assert low["pc1"].max() <= high["pc1"].min()
    with pytest.raises(ValueError, match="component must be 1..3"):
        pca.extremes(4)
    again = item_pca(rec, n_components=3)
    np.testing.assert_allclose(again.frame["pc1"], pca.frame["pc1"])  # signs are fixed
    # the sign rule itself: recover each component's loadings from the item factors and check that the
    # largest loading (in absolute value) is positive; a run that flipped a sign would break this
    rows = rec.items.index(rec.items.parse(pca.frame["item"].to_numpy()))
    factors = rec.view.item_factors[torch.from_numpy(rows)].double().numpy()
    centred = factors - factors.mean(0)
    loadings, *_ = np.linalg.lstsq(centred, coords, rcond=None)  # coords = centred @ loadings
    np.testing.assert_allclose(centred @ loadings, coords, atol=1e-8)
    np.testing.assert_allclose(loadings.T @ loadings, np.eye(3), atol=1e-6)  # orthonormal directions
    for c in range(3):
        column = loadings[:, c]
        assert column[np.argmax(np.abs(column))] > 0, f"pc{c + 1}: largest loading is negative"


def test_models_without_biases_say_so():
    frame, _, _ = planted_clusters(users_per_group=5, items_per_group=5)
    dls = CollabDataLoaders.from_df(frame[["user", "item", "rating"]], seed=0, bs=16)
    learn = Learner(dls, DotProduct(len(dls.users), len(dls.items), 4), progress=False)
    learn.fit(1, 1e-2)
    with pytest.raises(DataError, match="a DotProduct has no item biases"):
        item_bias_table(Recommender.from_learner(learn))


def test_each_plot_writes_a_png_of_the_expected_size(setup, tmp_path):
    rec, frame, _ = setup
    torch.manual_seed(0)
    dls = CollabDataLoaders.from_df(frame[["user", "item", "rating"]], seed=0, bs=256)
    from collabkit import DotProductBias

    learn = Learner(dls, DotProductBias(len(dls.users), len(dls.items), 4, (0, 6)), progress=False)
    result = learn.lr_find(num_it=40, show_plot=False)
    learn.fit_one_cycle(2, 1e-2)
    paths = [
        plot_item_pca(item_pca(rec), tmp_path / "pca.png"),
        plot_losses(learn.recorder, tmp_path / "losses.png"),
        plot_schedule(learn.recorder, tmp_path / "schedule.png"),
        plot_lr_find(result, tmp_path / "sub" / "lr_find.png"),
    ]
    for path in paths:
        assert png_size(path) == (800, 500), path


def test_save_plots_uses_what_the_model_recorded(setup, tmp_path):
    rec, _, _ = setup
    assert [p.name for p in save_plots(rec, tmp_path)] == ["item_pca.png"]  # no training record in info
    from collabkit.training import Recorder

    rec.info["recorder"] = Recorder(losses=[1.0, 0.8, 0.7], lrs=[1e-3] * 3, moms=[0.9] * 3, values=[[0.8, 0.9]],
                                    metric_names=["train_loss", "valid_loss"], iters=[3], times=[0.1]).to_dict()
    try:
        assert [p.name for p in save_plots(rec, tmp_path)] == ["item_pca.png", "losses.png", "schedule.png"]
    finally:
        del rec.info["recorder"]
