"""Compiled inner loops for the CPU: the two training paths whose cost is per-rating work, not arithmetic.

On the CPU a step of the lesson's model over 64 ratings is a few microseconds
of arithmetic wrapped in tens of microseconds of framework calls, and a
row-sparse step is the same story per rating. These loops, compiled by numba,
do that work with no calls in between:

* :func:`dot_bias_adam_steps`: DotProductBias + MSE + dense Adam/AdamW, step
  after step, exactly the updates ``torch.optim.AdamW`` makes (same formulas,
  in float32), so the lesson's semantics are kept.
* :func:`mf_adagrad_epoch`: one epoch of row-wise Adagrad matrix factorisation,
  one rating at a time, threads sharing the tables without locks (Hogwild),
  the rows it will need soon prefetched;
* :func:`permute_rows_`: the ratings shuffled in place, for that epoch loop.

They see NumPy arrays only (views of the torch tensors), and know nothing of
models, optimizers or schedules: :mod:`collabkit.training.fused` and
:mod:`collabkit.training.sparse` hand them the numbers.

``error_model="numpy"`` lets LLVM vectorise divisions (Python's error model
checks each one for zero); ``fastmath`` lets it reorder sums. Both are why the
results equal torch's to float32 rounding, not bit for bit.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange
from numba.core import types
from numba.extending import intrinsic

from collabkit.training import numba_threads  # noqa: F401 - numba's own thread pool, before any parallel loop

_JIT = {"fastmath": True, "error_model": "numpy", "cache": True, "nogil": True}
_ONE = np.float32(1.0)
AHEAD = 8
"""How many ratings ahead :func:`mf_adagrad_epoch` asks for the rows it will need (8 to 16 did best in a throwaway test at 10M ratings, about twice as fast as no prefetching)."""


@intrinsic
def _prefetch(typingctx, array, offset):
    """Ask the CPU to bring ``array.flat[offset]``'s cache line in, without waiting for it (``llvm.prefetch``).

    A random row of a large table is a cache miss; prefetched a few ratings
    ahead, it arrives while the current rating is being worked on.
    """
    if not (isinstance(array, types.Array) and array.layout == "C" and isinstance(offset, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, value=args[0]).data
        where = builder.gep(data, [context.cast(builder, args[1], signature.args[1], types.intp)])
        i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        fn = builder.module.declare_intrinsic("llvm.prefetch.p0", fnty=ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]))
        builder.call(fn, [builder.bitcast(where, i8p), i32(0), i32(3), i32(1)])  # read, keep close, data cache
        return context.get_dummy_value()

    return types.void(array, offset), codegen


@njit(inline="always", **_JIT)
def _adam_update(p, g, m, v, lr, beta1, beta2, eps, wd, decoupled, bias1, bias2_sqrt):
    """One Adam(W) update of the flat arrays ``p`` (parameter), ``g`` (gradient), ``m``, ``v`` (moments)."""
    step = lr / bias1
    shrink = _ONE - lr * wd if decoupled else _ONE
    for j in range(p.size):
        gj = g[j] if decoupled else g[j] + wd * p[j]
        mj = m[j] + (_ONE - beta1) * (gj - m[j])
        vj = beta2 * v[j] + (_ONE - beta2) * gj * gj
        m[j] = mj
        v[j] = vj
        p[j] = p[j] * shrink - step * mj / (np.sqrt(vj) / bias2_sqrt + eps)


@njit(**_JIT)
def dot_bias_adam_steps(
    x, y, order, first, n_batches, bs,
    lrs, moms, beta2, eps, wd, decoupled, step0, low, high, squash,
    P, Q, bu, bi, gP, gQ, gbu, gbi, mP, mQ, mbu, mbi, vP, vQ, vbu, vbi, losses,
):
    """``n_batches`` training steps of ``DotProductBias`` with MSE loss and Adam(W); returns nothing.

    Batch ``b`` holds the ratings ``order[first + b*bs : first + (b+1)*bs]``
    (clipped to the end) of ``x`` (``(n, 2)`` user and item rows) and ``y``.
    Step ``b`` uses ``lrs[b]`` and β₁ = ``moms[b]``, and is Adam's step number
    ``step0 + b + 1`` for the bias corrections. ``decoupled`` chooses AdamW
    (``p ← p·(1 - lr·wd)``) or Adam with ``wd·p`` added to the gradient.

    ``P, Q, bu, bi`` are the tables (biases ``(n, 1)``), ``g*`` zeroed gradient
    buffers of the same shapes (left zeroed), ``m*``/``v*`` Adam's moments;
    all updated in place. ``losses[b]`` receives batch ``b``'s mean squared error.
    """
    k = P.shape[1]
    n = order.shape[0]
    span = high - low
    for b in range(n_batches):
        start = first + b * bs
        stop = min(start + bs, n)
        count = stop - start
        scale = np.float32(2.0 / count)
        sse = 0.0
        for j in range(start, stop):
            r = order[j]
            u, i = x[r, 0], x[r, 1]
            z = bu[u, 0] + bi[i, 0]
            for f in range(k):
                z += P[u, f] * Q[i, f]
            if squash:
                s = _ONE / (_ONE + np.exp(-z))
                err = low + span * s - y[r]
                dz = scale * err * span * s * (_ONE - s)
            else:
                err = z - y[r]
                dz = scale * err
            sse += err * err
            for f in range(k):
                gP[u, f] += dz * Q[i, f]
                gQ[i, f] += dz * P[u, f]
            gbu[u, 0] += dz
            gbi[i, 0] += dz
        losses[b] = sse / count
        t = step0 + b + 1
        lr, beta1 = lrs[b], moms[b]
        bias1 = np.float32(1.0 - beta1**t)
        bias2_sqrt = np.float32(np.sqrt(1.0 - beta2**t))
        _adam_update(P.ravel(), gP.ravel(), mP.ravel(), vP.ravel(), lr, beta1, beta2, eps, wd, decoupled, bias1, bias2_sqrt)
        _adam_update(Q.ravel(), gQ.ravel(), mQ.ravel(), vQ.ravel(), lr, beta1, beta2, eps, wd, decoupled, bias1, bias2_sqrt)
        _adam_update(bu.ravel(), gbu.ravel(), mbu.ravel(), vbu.ravel(), lr, beta1, beta2, eps, wd, decoupled, bias1, bias2_sqrt)
        _adam_update(bi.ravel(), gbi.ravel(), mbi.ravel(), vbi.ravel(), lr, beta1, beta2, eps, wd, decoupled, bias1, bias2_sqrt)
        for j in range(start, stop):  # the gradients are zero outside the batch's rows: clear just those
            r = order[j]
            u, i = x[r, 0], x[r, 1]
            gP[u, :] = 0
            gQ[i, :] = 0
            gbu[u, 0] = 0
            gbi[i, 0] = 0


@njit(**_JIT)
def permute_rows_(x, y, order):
    """Put the ratings in the order ``order`` in place: afterwards ``x[j], y[j]`` are the old ``x[order[j]], y[order[j]]``.

    Follows the permutation's cycles, so the only extra memory is one bit per
    row to mark the rows already placed (not a second copy of the ratings).
    """
    n = order.shape[0]
    placed = np.zeros((n + 7) // 8, dtype=np.uint8)
    for start in range(n):
        if placed[start >> 3] & (1 << (start & 7)):
            continue
        u, i, r = x[start, 0], x[start, 1], y[start]
        j = start
        while True:
            placed[j >> 3] |= 1 << (j & 7)
            k = order[j]
            if k == start:
                x[j, 0], x[j, 1], y[j] = u, i, r
                break
            x[j, 0], x[j, 1], y[j] = x[k, 0], x[k, 1], y[k]
            j = k


SIDE_WIDTH = 4
"""Columns of :func:`mf_adagrad_epoch`'s side tables: bias, the row's accumulator, the bias's, padding.

16 bytes a row, so a row's three numbers share one cache line instead of three."""


@njit(parallel=True, **_JIT)
def mf_adagrad_epoch(x, y, blocks, block_size, n_threads, P, Q, user_side, item_side, mu, lr, reg, bias_reg):
    """One epoch of row-wise Adagrad on ``(r - μ - b_u - b_i - p_u·q_i)² + reg‖p_u‖² + reg‖q_i‖² + bias_reg(b_u² + b_i²)``.

    The ratings are visited block by block in the order ``blocks`` (block ``k``
    is ``x[k*block_size : (k+1)*block_size]``), each rating its own step, the
    rows of the rating ``AHEAD`` places on prefetched.
    ``n_threads`` threads take contiguous runs of ``blocks`` and update the
    shared tables without locks (Hogwild: a collision costs one stale read).
    ``user_side[u]`` is ``(b_u, A_u, B_u, unused)``: the bias, the Adagrad
    accumulator of ``p_u`` (grown by the mean square of its gradient; the step
    is ``lr · g / √A_u``) and that of ``b_u``; ``item_side`` likewise. Returns
    the sum of squared errors seen before each update.
    """
    k = P.shape[1]
    n = x.shape[0]
    n_blocks = blocks.shape[0]
    per_thread = (n_blocks + n_threads - 1) // n_threads
    sse = np.zeros(n_threads)
    width = np.float32(k)
    for t in prange(n_threads):
        total = 0.0
        for b in range(t * per_thread, min(n_blocks, (t + 1) * per_thread)):
            start = blocks[b] * block_size
            stop = min(start + block_size, n)
            for r in range(start, stop):
                if r + AHEAD < stop:
                    u_next, i_next = x[r + AHEAD, 0], x[r + AHEAD, 1]
                    for f in range(0, k, 16):  # a cache line holds 16 float32
                        _prefetch(P, u_next * k + f)
                        _prefetch(Q, i_next * k + f)
                    _prefetch(user_side, u_next * SIDE_WIDTH)
                    _prefetch(item_side, i_next * SIDE_WIDTH)
                u, i = x[r, 0], x[r, 1]
                p, q = P[u], Q[i]
                us, its = user_side[u], item_side[i]
                z = np.float32(0.0)
                for f in range(k):
                    z += p[f] * q[f]
                e = y[r] - (mu + us[0] + its[0] + z)
                total += np.float64(e) * e
                sq_u = np.float32(0.0)
                sq_i = np.float32(0.0)
                for f in range(k):
                    gu = reg * p[f] - e * q[f]
                    gi = reg * q[f] - e * p[f]
                    sq_u += gu * gu
                    sq_i += gi * gi
                us[1] += sq_u / width
                its[1] += sq_i / width
                step_u = lr / np.sqrt(us[1])
                step_i = lr / np.sqrt(its[1])
                for f in range(k):
                    pf, qf = p[f], q[f]
                    p[f] = pf - step_u * (reg * pf - e * qf)
                    q[f] = qf - step_i * (reg * qf - e * pf)
                g = bias_reg * us[0] - e
                us[2] += g * g
                us[0] -= lr * g / np.sqrt(us[2])
                g = bias_reg * its[0] - e
                its[2] += g * g
                its[0] -= lr * g / np.sqrt(its[2])
        sse[t] = total
    return sse.sum()
