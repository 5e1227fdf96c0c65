"""How collabkit's compiled loops use threads: numba's own thread pool, sized like torch's.

Importing this module (``training/kernels.py`` does, before its parallel
row-sparse epoch, ``mf_adagrad_epoch``) makes numba prefer its ``workqueue``
layer, unless the user chose a layer or numba's threads already run. numba's
default pick here, OpenMP, shares its runtime with torch's: measured on
ml-100k, a numba Gibbs sampler this project had then took ~60 ms a sweep
instead of ~6 ms in a process where torch had run multi-threaded first.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numba

# (numba.config's settings are made at import from the environment, so a type checker sees none of them)
if numba.config.THREADING_LAYER == "default" and not numba.np.ufunc.parallel._is_initialized:  # type: ignore[attr-defined]
    numba.config.THREADING_LAYER = "workqueue"  # type: ignore[attr-defined]


@contextlib.contextmanager
def threads(n: int) -> Iterator[int]:
    """Run the block's parallel loops on ``n`` threads (clamped to numba's pool), then restore; yields the count."""
    before = numba.get_num_threads()
    used = max(1, min(int(n), numba.config.NUMBA_NUM_THREADS))  # type: ignore[attr-defined]
    numba.set_num_threads(used)
    try:
        yield used
    finally:
        numba.set_num_threads(before)
