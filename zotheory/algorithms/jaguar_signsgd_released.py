"""JAGUAR SignSGD as the authors' released code runs it (a named variant, not Algorithm 1).

Pseudocode ("Version R" of ``OurTrainer.zo_jaguar_step``, repository ``evseevgrv/ZO_LLM``,
``trainer.py`` at commits 45a674941bfe47906554fab93ea19d8179914324 and
4623781dc00117cbd7b8ae7be4bf073d79e31c0b; written out in
:mod:`zotheory.reference.jaguar_signsgd_released`)::

    for t = 0, 1, ..., T - 1:
        for every tensor p, in list order (all draws before any perturbation):
            1-D, length n:  S_p = randperm(n)[: max(1, n // 10)]
            2-D, R x C:     rows = randperm(R)[: max(1, R // 10)], then
                            cols = randperm(C)[: max(1, C // 10)];  S_p = rows x cols
        S = union of the S_p;  e_S = its indicator
        rho = ( f^(x^t + tau e_S, xi^t) - f^(x^t - tau e_S, xi^t) ) / (2 tau)     (one scalar)
        m = 0;  m_S = beta m_S + (1 - beta) rho;  d^t = sign(m)       (+-1 on S, 0 elsewhere)
        torch.optim.SGD(lr=gamma, momentum=mu).step() with grad d^t:
            b^t = d^t (t = 0),  b^t = mu b^{t-1} + d^t (t > 0)
            x^{t+1} = x^t - gamma b^t

Symbols -> arguments

=================  ================================================================
released code      code
=================  ================================================================
learning_rate      ``step(..., gamma=)`` (a number, or one per tensor)
zo_tau             ``step(..., tau=)``, > 0
zo_beta            ``step(..., beta=)``, in [0, 1) (default 0.9); no effect on the
                   direction after the reset (see below)
momentum           ``step(..., momentum=)``: torch SGD's momentum mu, in [0, 1)
                   (default 0.9)
10%                ``step(..., block_fraction=)`` (default 0.1): a tensor of ``n``
                   rows / entries gets ``estimators._block_count(n, block_fraction)``
                   of them, ``max(1, n // 10)`` for 0.1
S                  drawn with ``torch.randperm(n, generator=generator)`` per tensor
                   (or given as ``indices=``, global flat indices over the list)
rho                the block estimate of :func:`zotheory.estimators.jaguar_block`
m (p.grad)         ``JaguarSignSGDReleasedState.momentum`` (reset every step)
SGD buffer b       ``JaguarSignSGDReleasedState.sgd_buffer`` (``None`` before step 1)
=================  ================================================================

Citation: the code released with E. Petrov, G. Evseev, A. Antonov, A. Veprikov, P. Plyusnin,
N. Bushkov, S. Moiseev, A. Beznosikov, "Leveraging Coordinate Momentum in SignSGD and Muon:
Memory-Optimized Zero-Order LLM Fine-Tuning", arXiv:2506.04430 (2025): ``evseevgrv/ZO_LLM``
``trainer.py`` ``zo_jaguar_step`` @45a6749 (Version R). It is not the paper's Algorithm 1
(:mod:`zotheory.algorithms.jaguar_signsgd`): the JAGUAR momentum is zeroed every step, so
the direction is the sign of this step's block estimate only, and torch SGD's heavy-ball
momentum acts on that direction.

The rule is composed from :mod:`zotheory.algorithms.jaguar_signsgd`:
:func:`jaguar_signsgd.reset` then :func:`jaguar_signsgd.update` (``beta`` as given; after the
reset ``m_S = (1 - beta) rho``, whose sign is ``sign(rho)`` for every ``beta`` in [0, 1)),
then torch SGD's momentum (dampening 0, no Nesterov), then :func:`_zo_common.move`.

Deviations
----------
* **Random stream.** The released code seeds the global RNG each step
  (``torch.manual_seed(np.random.randint(1e9))``) and calls ``randperm(n, device=p.device)``;
  we call ``randperm(n, generator=generator)`` on the given generator (on its device): the
  same draws when the generator is in the global RNG's state (the test seeds both alike).
* **Shapes the released code did not handle.** A tensor of rank > 2 is viewed as
  ``(shape[0], -1)`` (the released code unpacks ``R, C = p.shape`` and would fail); a 0-d
  tensor is one entry and draws nothing.
* **10% generalised** to ``block_fraction`` (0.1 is the released code's ``n // 10``).
* **Buffers.** The JAGUAR buffer (the released ``p.grad``) and the SGD buffer are kept in
  ``promote_types(x.dtype, float32)``; the released code kept both in the parameter dtype
  (fp16 with ``--load_float16``). The direction is the same (``sign`` of a non-zero float)
  unless ``(1 - beta) rho`` underflows in fp16; the SGD buffer is rounded less often.
* **The move** is :func:`_zo_common.move`, ``x - fl(gamma * b)``; torch's
  ``param.add_(buf, alpha=-lr)`` may fuse the multiply-add on the CPU, so parameters agree
  with torch SGD to a rounding (the buffers and directions bitwise).
* ``weight_decay``: our decoupled decay in the move (MeZO's); the released code had none
  (default 0). The SGD buffer is kept even for ``momentum = 0`` (torch keeps none then;
  ``b = 0 * b + d = d``, the same step).
* ``beta`` default 0.9 (the direction does not depend on it); ``momentum`` default 0.9, the
  value ``shared/PAPER.md`` states and the wandb runs used; the released ``run.py`` default
  is 0.0 (pass ``momentum=0.0`` for it).

Lists only (a model's parameters, ``batch_dims = 0``); 2 oracle calls per step.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from .._checks import check_in_range, check_momentum, check_positive
from ..estimates import CoordinateEstimate, split_coordinates
from ..estimators import _block_count
from . import _lists, jaguar_signsgd
from ._zo_common import move, require_generator

__all__ = ["JaguarSignSGDReleasedState", "init", "update", "step", "draw_block"]


@dataclass
class JaguarSignSGDReleasedState:
    """``momentum``: the JAGUAR buffer (the released ``p.grad``), shape of ``x``;
    ``sgd_buffer``: torch SGD's momentum buffer (None before the first step); ``step``;
    ``batch_dims`` (0). The JAGUAR buffer stays dense (:mod:`jaguar_signsgd`'s dense form):
    after the reset it holds this step's block, more than the sparse form's 1/16."""

    momentum: torch.Tensor
    sgd_buffer: torch.Tensor | None = None
    step: int = 0
    batch_dims: int = 0


def _jaguar_state(s: JaguarSignSGDReleasedState) -> jaguar_signsgd.JaguarSignSGDState:
    return jaguar_signsgd.JaguarSignSGDState(momentum=s.momentum, step=s.step, batch_dims=s.batch_dims)


def _list_only(x: Any) -> None:
    if not _lists.is_list(x):
        raise ValueError("jaguar_signsgd_released needs a list of tensors (a model's parameters), got a single "
                         "tensor; pass [x]")


def init(x: Sequence[torch.Tensor], *, batch_dims: int = 0) -> list[JaguarSignSGDReleasedState]:
    """Per tensor: a zero JAGUAR buffer (``promote_types(dtype, float32)``), no SGD buffer yet."""
    _list_only(x)
    out = []
    for t in _lists.tensors_of(x, batch_dims):
        j = jaguar_signsgd.to_dense(jaguar_signsgd.init(t))
        out.append(JaguarSignSGDReleasedState(momentum=j.momentum, sgd_buffer=None, step=0, batch_dims=0))
    return out


def update(
    estimate: CoordinateEstimate | None,
    state: JaguarSignSGDReleasedState,
    *,
    beta: float | torch.Tensor,
    momentum: float | torch.Tensor,
    inplace: bool = False,
) -> tuple[torch.Tensor, JaguarSignSGDReleasedState]:
    """The released rule on one tensor: returns ``(b^t, new_state)``, the SGD buffer (the move
    is ``x - gamma b^t``).

    ``reset`` + ``update`` of :mod:`jaguar_signsgd` (the direction ``d = sign(m)``, ``m`` zeroed
    then written on the block), then torch SGD's momentum: ``b = d.clone()`` at the first
    step, ``b = momentum * b + d`` after. ``estimate`` None: no entry of this tensor sampled
    (``d = 0``). ``inplace=False`` leaves ``state``'s buffers untouched.
    """
    check_momentum("momentum", momentum)
    if not inplace:
        state = dataclasses.replace(
            state, momentum=state.momentum.clone(),
            sgd_buffer=None if state.sgd_buffer is None else state.sgd_buffer.clone())
    if estimate is None:
        estimate = jaguar_signsgd._empty_estimate("block", state.momentum.device)
    j = jaguar_signsgd.reset(_jaguar_state(state))
    direction, j = jaguar_signsgd.update(estimate, j, beta=beta, inplace=True)
    if state.sgd_buffer is None:  # torch: buf = torch.clone(d_p).detach()
        buf = direction.clone()
    else:  # torch: buf.mul_(momentum).add_(d_p, alpha=1 - dampening), dampening = 0
        buf = state.sgd_buffer
        if buf.shape != direction.shape or buf.dtype != direction.dtype:
            raise ValueError(f"state.sgd_buffer must have shape {tuple(direction.shape)} and dtype "
                             f"{direction.dtype}, got {tuple(buf.shape)} {buf.dtype}")
        m = momentum.to(buf.dtype) if isinstance(momentum, torch.Tensor) else float(momentum)
        buf.mul_(m).add_(direction)
    new_state = JaguarSignSGDReleasedState(momentum=j.momentum, sgd_buffer=buf, step=j.step, batch_dims=0)
    return buf, new_state


def draw_block(xs: Sequence[torch.Tensor], block_fraction: float, generator: torch.Generator,
               zero_dim: Sequence[bool] | None = None) -> torch.Tensor:
    """The released block over a list: per tensor in order, ``randperm`` prefixes from
    ``generator`` (1-D: entries; rank >= 2: rows then columns of the ``(shape[0], -1)`` view;
    0-d, flagged in ``zero_dim``: the one entry, no draw). Returns the global flat indices
    over the concatenation (sorted within each tensor)."""
    gen = require_generator(generator, "indices")
    chunks, offset = [], 0
    for i, t in enumerate(xs):
        if (zero_dim is not None and zero_dim[i]) or t.ndim == 0:
            local = torch.zeros(1, dtype=torch.long)
        elif t.ndim == 1:
            n = t.shape[0]
            local = torch.randperm(n, generator=gen, device=gen.device)[: _block_count(n, block_fraction)].cpu()
        else:
            n_rows = t.shape[0]
            n_cols = t.numel() // n_rows
            rows = torch.randperm(n_rows, generator=gen, device=gen.device)[: _block_count(n_rows, block_fraction)]
            cols = torch.randperm(n_cols, generator=gen, device=gen.device)[: _block_count(n_cols, block_fraction)]
            local = (rows.cpu()[:, None] * n_cols + cols.cpu()[None, :]).reshape(-1)
        chunks.append(local.sort().values + offset)
        offset += t.numel()
    return torch.cat(chunks)


def step(
    x: Sequence[torch.Tensor],
    oracle: Any,
    state: Any,
    *,
    gamma: float | torch.Tensor | Sequence[float],
    tau: float | torch.Tensor,
    beta: float | torch.Tensor | Sequence[float] = 0.9,
    momentum: float | torch.Tensor | Sequence[float] = 0.9,
    block_fraction: float = 0.1,
    generator: torch.Generator | None = None,
    weight_decay: float | torch.Tensor | Sequence[float] = 0.0,
    batch_dims: int = 0,
    indices: torch.Tensor | None = None,
    inplace: bool = True,
) -> list[JaguarSignSGDReleasedState]:
    """One step of the released code on the list ``x`` (moved in place); 2 oracle calls.

    Draws the block from ``generator`` (``indices=``: global flat indices, no draw), estimates
    with one joint ``+-tau`` perturbation of the block (:func:`estimators.jaguar_block`,
    parameters restored bitwise), then per tensor :func:`update` and ``x <- x - gamma b``.
    """
    from .. import estimators

    _list_only(x)
    zero_dim = [isinstance(t, torch.Tensor) and t.ndim == 0 for t in x] if isinstance(x, (list, tuple)) else None
    xs, states, gammas, decay = _lists.prologue(x, state, gamma, weight_decay, batch_dims)
    n = len(xs)
    betas = _lists.per_tensor("beta", beta, n, check_momentum)
    momenta = _lists.per_tensor("momentum", momentum, n, check_momentum)
    check_positive("tau", tau)
    check_in_range("block_fraction", block_fraction, 0.0, 1.0, low_closed=False, high_closed=True)
    for i, (t, s) in enumerate(zip(xs, states)):
        if not isinstance(s, JaguarSignSGDReleasedState) or s.momentum.shape != t.shape:
            raise ValueError(f"state[{i}] must be the JaguarSignSGDReleasedState init(x) made for x[{i}] "
                             f"(shape {tuple(t.shape)})")
    if indices is None:
        indices = draw_block(xs, float(block_fraction), generator, zero_dim)
    est = estimators.jaguar_block(xs, _lists.closure_of(oracle, xs), tau, indices=indices)
    out = []
    for i, piece in enumerate(split_coordinates(est, [t.numel() for t in xs])):
        buf, new_state = update(piece, states[i], beta=betas[i], momentum=momenta[i], inplace=inplace)
        move(xs[i], gammas[i], buf, 0, decay[i])
        out.append(new_state)
    return out
