"""LeZO (layer-wise sparse ZO-SGD), transcribed literally: one run, float64, Python loops.

Ground truth for tests of :mod:`zotheory.algorithms.lezo` (the definition adopted there)::

    L = sorted distinct non-negative layer ids
    for t = 0, ..., T - 1:
        dropped = { L[j] for j in sample_coordinates(len(L), drop_layers, g) }   (none if drop_layers = 0)
        s_t = torch.randint(0, 2**62, (1,), generator=g)                          (one seed per step)
        A = [p for p in tensors if layer(p) not in dropped]                      (list order)
        z^t = generate_directions(A, s_t, "gaussian")    (a fresh generator seeded with s_t, randn per tensor of A)
        f_+ = f(x^t + tau z^t on A, t);  f_- = f(x^t - tau z^t on A, t)
        grad = (f_+ - f_-) / (2 tau)
        x^{t+1}_p = x^t_p - gamma_p * (grad * z^t_p + wd_p * x^t_p)   for p in A;  unchanged otherwise

The draws are the kernel's calls: :func:`zotheory.random.sample_coordinates` for the dropped
layers, ``torch.randint(0, 2**62, (1,), generator=g)`` (= ``_zo_common.draw_seed``) for the
seed, :func:`zotheory.directions.generate_directions` for ``z``. ``f(xs, t)`` receives the list
of float64 tensors (every tensor, dropped ones at their current value) and the step index.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from ..directions import generate_directions
from ..random import sample_coordinates

SEED_HIGH = 2**62


def run(
    f: Callable[[list[torch.Tensor], int], float],
    x0: Sequence[torch.Tensor],
    T: int,
    *,
    gamma: float | Sequence[float],
    tau: float,
    layers: Sequence[int],
    drop_layers: int,
    generator: torch.Generator,
    weight_decay: float | Sequence[float] = 0.0,
) -> tuple[list[list[list[float]]], list[list[int]]]:
    """Run LeZO for ``T`` iterations.

    Returns ``(xs, dropped)``: ``xs[t]`` is ``x^t`` (one list of floats per tensor, flattened)
    for ``t = 0..T``, ``dropped[t]`` the sorted layer ids dropped at step ``t``.
    """
    shapes = [tuple(x.shape) for x in x0]
    x = [[float(v) for v in t.reshape(-1).tolist()] for t in x0]
    n = len(x)
    gammas = list(gamma) if isinstance(gamma, (list, tuple)) else [gamma] * n
    decays = list(weight_decay) if isinstance(weight_decay, (list, tuple)) else [weight_decay] * n
    ids = sorted(set(i for i in layers if i >= 0))

    def tensors(values: list[list[float]], which: Sequence[int] | None = None) -> list[torch.Tensor]:
        which = range(n) if which is None else which
        return [torch.tensor(values[p], dtype=torch.float64).reshape(shapes[p]) for p in which]

    xs = [[list(v) for v in x]]
    dropped_all = []
    for t in range(T):
        dropped = []
        if drop_layers > 0:
            picks = sample_coordinates(len(ids), drop_layers, generator)
            dropped = sorted(ids[int(j)] for j in picks.tolist())
        seed = int(torch.randint(0, SEED_HIGH, (1,), generator=generator)[0])
        active = [p for p in range(n) if layers[p] not in dropped]
        zs = generate_directions(tensors(x, active), seed, "gaussian")
        z = {p: zi.reshape(-1).tolist() for p, zi in zip(active, zs)}
        x_plus = [list(v) for v in x]
        x_minus = [list(v) for v in x]
        for p in active:
            for j in range(len(x[p])):
                x_plus[p][j] = x[p][j] + tau * z[p][j]
                x_minus[p][j] = x[p][j] - tau * z[p][j]
        f_plus = float(f(tensors(x_plus), t))
        f_minus = float(f(tensors(x_minus), t))
        grad = (f_plus - f_minus) / (2 * tau)
        for p in active:
            for j in range(len(x[p])):
                if decays[p] == 0.0:
                    x[p][j] = x[p][j] - gammas[p] * (grad * z[p][j])
                else:
                    x[p][j] = x[p][j] - gammas[p] * (grad * z[p][j] + decays[p] * x[p][j])
        xs.append([list(v) for v in x])
        dropped_all.append(dropped)
    return xs, dropped_all
