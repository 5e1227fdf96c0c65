from __future__ import annotations

import os
import sys
from pathlib import Path

import matplotlib
import pytest
import torch

matplotlib.use("Agg")
sys.path.insert(0, str(Path(__file__).parent))

from planted import planted_clusters, planted_ratings, train_recommender  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Never touch the user's ~/.cache/collabkit: every test session gets its own COLLABKIT_HOME."""
    before = os.environ.get("COLLABKIT_HOME")
    os.environ["COLLABKIT_HOME"] = str(tmp_path_factory.mktemp("collabkit_home"))
    yield
    if before is None:
        os.environ.pop("COLLABKIT_HOME", None)
    else:
        os.environ["COLLABKIT_HOME"] = before


@pytest.fixture(autouse=True)
def _one_thread():
    """Small batches train fastest on one thread; and tests must not fight over 2 cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def planted():
    return planted_ratings()


@pytest.fixture(scope="session")
def ml100k_dir() -> Path:
    """The ml-100k folder: $COLLABKIT_DATA_DIR, else ../shared/data next to the repo; skip if absent."""
    for base in filter(None, (os.environ.get("COLLABKIT_DATA_DIR"), str(SHARED_DATA))):
        for folder in (Path(base), Path(base) / "ml-100k"):
            if (folder / "u.data").is_file():
                return folder
    pytest.skip("ml-100k not found: set COLLABKIT_DATA_DIR or place it in ../shared/data (it is never bundled)")


@pytest.fixture(scope="session")
def clusters():
    """Planted groups of users and items: ``(frame, user_group, item_group)``."""
    return planted_clusters()


@pytest.fixture(scope="session")
def cluster_rec(clusters):
    """A Recommender trained 10 epochs on :func:`clusters` (shared by the recommend and interpret tests)."""
    return train_recommender(clusters[0], epochs=10)


def pytest_collection_modifyitems(config, items):
    """Markers by what a test uses, so `-m "not slow"` / `-m "not realdata"` select a quick subset (CI runs all)."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if "ml100k_dir" in fixtures:
            item.add_marker(pytest.mark.realdata)
        if "servers" in fixtures or item.path.name in ("test_distributed.py", "test_lesson_docs.py"):
            item.add_marker(pytest.mark.slow)
        if item.path.name == "test_distributed.py":
            item.add_marker(pytest.mark.distributed)
