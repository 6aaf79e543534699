"""LeZO: layer-wise sparse ZO-SGD (MeZO that perturbs and moves a random subset of layers).

Pseudocode (the definition this module adopts; see "Deviations" for what the sources leave open)::

    L = the distinct non-negative layer ids of the tensors (transformer blocks);
    tensors with layer id -1 (embeddings, head, final norms) are always active
    for t = 0, 1, ..., T - 1:
        D_t = drop_layers ids drawn uniformly without replacement from L   (none if drop_layers = 0)
        A_t = the tensors whose layer is not in D_t                          (the active tensors)
        draw a seed s_t; z^t ~ N(0, I) over the tensors of A_t only (regenerated from s_t)
        g^t = ( f^(x^t + tau z^t, xi^t) - f^(x^t - tau z^t, xi^t) ) / (2 tau)     (a scalar)
        x^{t+1}_p = x^t_p - gamma * g^t z^t_p   for every tensor p in A_t
        x^{t+1}_p = x^t_p                       for every tensor p not in A_t (not perturbed, not moved)

Symbols -> arguments

=================  ================================================================
paper              code
=================  ================================================================
gamma (eta)        ``step(..., gamma=)`` (a number, or one per tensor)
tau (epsilon)      ``step(..., tau=)``, > 0
layers             ``step(..., layers=)``: one int per tensor (block index, or -1:
                   always active); :func:`layer_ids` derives them from parameter names
dropout number     ``step(..., drop_layers=)``: how many blocks are skipped per step,
                   an int in ``[0, len(L) - 1]`` (0 when there is no block)
D_t                drawn with ``zotheory.random.sample_coordinates(len(L), drop_layers,
                   generator)`` over the sorted list ``L`` (or given as ``dropped=``)
s_t, z^t           ``_zo_common.draw_seed(generator)`` after the layer draw (or
                   ``seed=``); ``z`` from :func:`zotheory.directions.generate_directions`
                   over the active tensors, in list order
g^t z^t            ``DirectionEstimate`` of :func:`zotheory.estimators.gaussian_two_point`
                   over the active tensors; the rule is :func:`zo_sgd.update` (reused)
=================  ================================================================

Citation: F. Wang, L. Shen, L. Ding, C. Xue, Y. Liu, C. Ding, "Simultaneous Computation and
Memory Efficient Zeroth-Order Optimizer for Fine-Tuning Large Language Models" (LeZO),
arXiv:2410.09823 (2024).

Deviations
----------
The paper's equations and algorithm box could not be read (only the abstract, the ICLR 2025
reviews and a secondary summary); this is an interpretation, status "published definition
(interpretation)". What is ours:

* **The hyperparameter.** The paper's "sparse rate rho" is used inconsistently (kept fraction
  in one place, dropped fraction in another); its experiments vary an integer "dropout
  number" (0 .. 40 blocks of OPT-13B). We take that count: ``drop_layers`` = blocks skipped
  per step. At least one block stays active (``drop_layers = len(L)`` would leave only the
  always-active tensors; we reject it).
* **The unit.** Whole transformer blocks (every tensor of a block goes in or out together).
  Everything outside the blocks (token and position embeddings, final norm, head) is always
  active: the paper (Section 5.3, via a reviewer) says embeddings and the head are always
  tuned; final norms and position embeddings are our reading.
* **The sampler.** Uniform, without replacement, a fixed count per step, re-drawn every
  step, from the step's ``generator`` (the exact sampler is not stated in what we could read).
* **No rescaling.** ``x -= gamma g z`` on the active tensors, with no ``L / (L - drop)``
  factor (the follow-up AdaLeZO adds inverse-probability weighting as a new contribution).
  The expected step on a block is therefore ``(L - drop) / L`` of MeZO's.
* **Restore / weight decay.** As :mod:`zotheory.algorithms.zo_sgd`: ``restore="saved"``
  (bitwise) or MeZO's ``"regenerate"`` walk; ``weight_decay`` is MeZO's decoupled decay in
  the move, applied only to the tensors moved this step (default 0, as MeZO's scripts).
* ``z`` is regenerated over the active tensors only (the dropped ones draw nothing, which is
  LeZO's time saving), so the same seed gives the active tensors other ``z`` than MeZO's.

State: per tensor a :class:`zotheory.algorithms.zo_sgd.ZOSGDState` (no buffers); every
tensor's step counter advances each step, dropped or not.

Random stream, per step: the layer draw (skipped when ``drop_layers == 0`` or ``dropped=`` is
given), then one seed (skipped when ``seed=`` is given). The literal
:func:`zotheory.reference.lezo.run` draws with the same calls.

Lists only: LeZO needs a list of tensors with their layer ids (``batch_dims = 0``).
"""

from __future__ import annotations

import dataclasses
import re
from numbers import Integral
from typing import Any, Sequence

import torch

from .._checks import check_positive
from ..random import sample_coordinates
from . import _lists, zo_sgd
from ._zo_common import draw_seed, require_generator

__all__ = ["init", "update", "step", "layer_ids", "check_layers", "draw_dropped", "LAYER_PATTERN"]

#: A transformer block in a parameter name: Llama ``model.layers.3.``, OPT ``decoder.layers.3.``,
#: RoBERTa/BERT ``encoder.layer.3.``, GPT-2 ``transformer.h.3.``, ``blocks.3.`` / ``block.3.``.
LAYER_PATTERN = re.compile(r"\.(layers|layer|h|blocks|block)\.(\d+)\.")

#: The per-tensor rule: ZO-SGD's (the direction ``g z``; the state counts steps).
update = zo_sgd.update


def layer_ids(names: Sequence[str]) -> list[int]:
    """The block index of each parameter name (the first ``.layers.<i>.``-style match of
    :data:`LAYER_PATTERN`, searched in ``"." + name`` so a name may start with the block
    container), or -1 (always active: embeddings, head, final norms) for everything else.
    Prefixes such as peft's ``base_model.model.`` do not matter."""
    if isinstance(names, str):
        raise ValueError("names must be a sequence of parameter names, got a single string")
    out = []
    for i, name in enumerate(names):
        if not isinstance(name, str):
            raise ValueError(f"names[{i}] must be a str, got {type(name).__name__}")
        m = LAYER_PATTERN.search("." + name)
        out.append(int(m.group(2)) if m else -1)
    return out


def _list_only(x: Any) -> None:
    if not _lists.is_list(x):
        raise ValueError("LeZO needs a list of tensors with layer ids (layers=, one per tensor), got a single "
                         "tensor; pass [x] with layers=[-1] for plain ZO-SGD")


def init(x: Sequence[torch.Tensor], *, batch_dims: int = 0) -> list[zo_sgd.ZOSGDState]:
    """One :class:`zo_sgd.ZOSGDState` per tensor (a list of tensors only)."""
    _list_only(x)
    _lists.tensors_of(x, batch_dims)
    return zo_sgd.init(x)


def check_layers(layers: Any, n: int) -> list[int]:
    """``layers`` as a list of ``n`` ints, each >= -1 (ValueError otherwise)."""
    if isinstance(layers, (str, bytes)) or not isinstance(layers, Sequence) and not isinstance(layers, torch.Tensor):
        raise ValueError(f"layers must be a sequence of {n} ints (one layer id per tensor, -1: always active), "
                         f"got {type(layers).__name__}")
    values = layers.tolist() if isinstance(layers, torch.Tensor) else list(layers)
    if len(values) != n:
        raise ValueError(f"layers must hold one layer id per tensor ({n}), got {len(values)}")
    out = []
    for i, v in enumerate(values):
        if not isinstance(v, Integral) or isinstance(v, bool) or int(v) < -1:
            raise ValueError(f"layers[{i}] must be an int >= -1 (-1: always active), got {v!r}")
        out.append(int(v))
    return out


def _check_drop(drop_layers: Any, n_ids: int) -> int:
    high = max(0, n_ids - 1)
    if not isinstance(drop_layers, Integral) or isinstance(drop_layers, bool) or not 0 <= int(drop_layers) <= high:
        raise ValueError(f"drop_layers must be an int in [0, {high}] (at least one of the {n_ids} layers "
                         f"stays active), got {drop_layers!r}")
    return int(drop_layers)


def draw_dropped(ids: Sequence[int], drop_layers: int, generator: torch.Generator | None) -> list[int]:
    """The dropped layer ids of one step: ``drop_layers`` of the sorted distinct ids ``ids``,
    uniformly without replacement (``sample_coordinates``; no draw when ``drop_layers == 0``)."""
    if drop_layers == 0:
        return []
    gen = require_generator(generator, "dropped")
    picks = sample_coordinates(len(ids), drop_layers, gen, device=gen.device)
    return sorted(ids[int(j)] for j in picks.tolist())


def _check_dropped(dropped: Any, ids: Sequence[int], drop_layers: int) -> list[int]:
    try:
        values = dropped.tolist() if isinstance(dropped, torch.Tensor) else list(dropped)
    except TypeError:
        raise ValueError(f"dropped must be a sequence of layer ids, got {type(dropped).__name__}") from None
    known = set(ids)
    if (len(values) != drop_layers or len(set(values)) != len(values)
            or any(isinstance(v, bool) or not isinstance(v, Integral) or int(v) not in known for v in values)):
        raise ValueError(f"dropped must hold drop_layers={drop_layers} distinct layer ids among {sorted(known)}, "
                         f"got {values!r}")
    return sorted(int(v) for v in values)


def step(
    x: Sequence[torch.Tensor],
    oracle: Any,
    state: Any,
    *,
    gamma: float | torch.Tensor | Sequence[float],
    tau: float | torch.Tensor,
    layers: Sequence[int],
    drop_layers: int,
    generator: torch.Generator | None = None,
    restore: str = "saved",
    weight_decay: float | torch.Tensor | Sequence[float] = 0.0,
    batch_dims: int = 0,
    seed: int | None = None,
    dropped: Sequence[int] | None = None,
    inplace: bool = True,
) -> list[zo_sgd.ZOSGDState]:
    """One LeZO iteration on the list ``x`` (the active tensors moved in place); 2 oracle calls.

    ``layers``: one layer id per tensor (-1: always active). Draws the dropped layers, then
    the seed, from ``generator`` (``dropped=`` / ``seed=`` skip their draw). ``oracle`` is a
    zero-argument closure (or has ``value(x)``), evaluated at the perturbed parameters.
    Returns the new per-tensor states. ``inplace`` is accepted for the contract (no buffers).
    """
    from .. import estimators

    _list_only(x)
    xs, states, gammas, decay = _lists.prologue(x, state, gamma, weight_decay, batch_dims)
    check_positive("tau", tau)
    ids_per_tensor = check_layers(layers, len(xs))
    ids = sorted({i for i in ids_per_tensor if i >= 0})
    drop_layers = _check_drop(drop_layers, len(ids))
    if dropped is None:
        gone = set(draw_dropped(ids, drop_layers, generator))
    else:
        gone = set(_check_dropped(dropped, ids, drop_layers))
    if seed is None:
        seed = draw_seed(require_generator(generator, "seed"))
    active = [i for i, layer in enumerate(ids_per_tensor) if layer not in gone]
    sub = [xs[i] for i in active]
    # closure over the whole list: an oracle with value(x) gets every tensor, as the model does
    est = estimators.gaussian_two_point(sub, _lists.closure_of(oracle, xs), tau, seed=seed, restore=restore)
    moved = _lists.apply_directions(
        sub, [states[i] for i in active], [est], lambda i, t, e, s: (t, *update(e[0], s, inplace=True)),
        gamma=[gammas[i] for i in active], weight_decay=[decay[i] for i in active], elementwise=True)
    out = [dataclasses.replace(s, step=s.step + 1) for s in states]  # dropped: not moved, one more step
    for i, s in zip(active, moved):
        out[i] = s
    return out
