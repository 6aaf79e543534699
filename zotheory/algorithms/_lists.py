"""Kernel steps over a list of tensors (a model's parameters): the plumbing every ``step`` shares.

Every algorithm's ``step(x, oracle, state, ...)`` takes ``x`` as one tensor (``batch_dims``
0 or 1: one run, or a batch of runs along the leading dimension) **or as a list of tensors**
(a model's trainable parameters; ``batch_dims = 0``). For a list:

* ``state`` is the list of per-tensor states that ``init(list)`` returns (one per tensor, in
  list order; each is the algorithm's ordinary single-tensor state);
* ``oracle`` is a zero-argument closure returning the loss at the current values (an object
  with ``value(x)`` works too);
* the **update** hyperparameters (``gamma``, ``beta``, ``weight_decay``, ...) are a number
  or a sequence with one number per tensor: that is how parameter groups reach a kernel;
  the **estimate**'s hyperparameters (``tau``, ``coords_per_step``, ``restore``, ...) are
  one value, because there is one estimate over the whole list.

The algorithm's ``step`` makes one estimator call over the whole list (the estimators
index coordinates over the concatenation of the flattened tensors), then routes the
estimate to the tensors with :func:`apply_directions` (``scale * z`` estimates) or
:func:`zotheory.estimates.split_coordinates` (coordinate estimates): per tensor, the
algorithm's ``update`` and the move :func:`~zotheory.algorithms._zo_common.move`. Nothing
here is an update rule.

Fast paths (each bitwise the plain path, ``tests/test_bench_llm.py``; ``FAST_PATHS = False``
switches them off for those tests):

* elementwise rules (ZO-SGD, ZO-SignSGD, ZO-AdaMM, Forward-Grad) on seeded Gaussian
  directions run update and move piece by piece of ``2^20`` entries
  (:func:`zotheory.directions.iter_direction_chunks`), so their float32 temporaries are one
  piece, not the largest tensor;
* a direction that is a temporary of the update (not the iterate, not a state buffer) has
  ``gamma * D`` formed in its own storage (``move(..., reuse_direction=True)``);
* JAGUAR's sign rule on a sparse momentum moves only its held coordinates
  (``jaguar_signsgd.apply``; the sparse form itself is the state, not a fast path).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import torch

from ..directions import iter_direction_chunks, iter_directions
from ..estimates import DirectionEstimate
from .._checks import check_nonnegative, check_positive
from ._zo_common import ParamSpec, decays, move

#: Switch for the exact fast paths (tests set it to False to compare with the plain paths).
FAST_PATHS = True

Closure = Callable[[], Any]


def is_list(x: Any) -> bool:
    """Whether a kernel's ``x`` is a list of tensors (anything but a single tensor)."""
    return not isinstance(x, torch.Tensor)


def tensors_of(x: Sequence[torch.Tensor], batch_dims: int = 0) -> list[torch.Tensor]:
    """The tensors of a list ``x``, validated; 0-d tensors as shape ``(1,)`` views (writes go through)."""
    if batch_dims != 0:
        raise ValueError(f"batch_dims must be 0 when x is a list of tensors, got {batch_dims!r}")
    try:
        xs = list(x)
    except TypeError:
        raise ValueError(f"x must be a tensor or a sequence of tensors, got {type(x).__name__}") from None
    if not xs:
        raise ValueError("x must hold at least one tensor, got an empty sequence")
    out = []
    for i, t in enumerate(xs):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"x[{i}] must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise ValueError(f"x[{i}] must be floating-point, got dtype {t.dtype}")
        t = t.detach()
        out.append(t.view(1) if t.ndim == 0 else t)
    return out


def closure_of(oracle: Any, x: Any) -> Closure:
    """A zero-argument closure for the estimators: ``oracle`` itself, or ``lambda: oracle.value(x)``."""
    value = getattr(oracle, "value", None)
    if callable(value):
        return lambda: value(x)
    if callable(oracle):
        return oracle
    raise ValueError(
        f"oracle must be a zero-argument closure or have a value(x) method, got {type(oracle).__name__}"
    )


def per_tensor(name: str, value: Any, n: int, check: Callable[[str, Any], Any] | None = None) -> list[Any]:
    """``value`` for each of ``n`` tensors: a number (shared) or a sequence of ``n`` values."""
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(
                f"{name} must be a number or a sequence of {n} values (one per tensor), got {len(value)} values"
            )
        values = list(value)
    else:
        values = [value] * n
    if check is not None:
        for v in values:
            check(name, v)
    return values


def init_states(x: Sequence[torch.Tensor], init_one: Callable[[torch.Tensor], Any]) -> list[Any]:
    """``[init_one(t) for t in x]`` over the validated tensors of a list."""
    return [init_one(t) for t in tensors_of(x)]


def check_states(xs: list[torch.Tensor], states: Any) -> list[Any]:
    """``states`` must be a list with one state per tensor (what ``init(list)`` returns)."""
    if isinstance(states, (list, tuple)) and len(states) == len(xs):
        return list(states)
    got = f"{len(states)} states" if isinstance(states, (list, tuple)) else type(states).__name__
    raise ValueError(f"state must be the list init(x) returns, one state per tensor ({len(xs)}), got {got}")


def prologue(
    x: Any, state: Any, gamma: Any, weight_decay: Any, batch_dims: int
) -> tuple[list[torch.Tensor], list[Any], list[Any], list[Any]]:
    """The start of every list step: the tensors, their states, and ``gamma`` and
    ``weight_decay`` per tensor (validated: ``gamma > 0``, ``weight_decay >= 0``)."""
    xs = tensors_of(x, batch_dims)
    states = check_states(xs, state)
    n = len(xs)
    return (xs, states, per_tensor("gamma", gamma, n, check_positive),
            per_tensor("weight_decay", weight_decay, n, check_nonnegative))


def gradients_of(xs: list[torch.Tensor], oracle: Any, grad: Sequence[torch.Tensor] | None) -> list[torch.Tensor]:
    """First-order methods on a list: the gradients given (``grad=``, one per tensor) or
    ``oracle.grad(xs)``; checked to match the tensors and to be finite."""
    if grad is None:
        fn = getattr(oracle, "grad", None)
        if not callable(fn):
            raise ValueError("a first-order step on a list of tensors needs grad= (one gradient per tensor) "
                             "or an oracle with a grad(x) method")
        grad = fn(xs)
    grads = list(grad) if not isinstance(grad, torch.Tensor) else [grad]
    if len(grads) != len(xs):
        raise ValueError(f"grad must hold one gradient per tensor ({len(xs)}), got {len(grads)}")
    out = []
    for i, (g, t) in enumerate(zip(grads, xs)):
        if not isinstance(g, torch.Tensor) or g.numel() != t.numel():
            raise ValueError(f"grad[{i}] must be a tensor of shape {tuple(t.shape)}")
        if not bool(torch.isfinite(g).all()):
            from ..estimators import NonFiniteOracleError

            raise NonFiniteOracleError(f"the gradient of x[{i}] is not finite")
        out.append(g.detach().reshape(t.shape))
    return out


def apply_gradients(
    xs: list[torch.Tensor],
    states: list[Any],
    grads: list[torch.Tensor],
    update_one: Callable[[int, torch.Tensor, torch.Tensor, Any], "tuple[torch.Tensor, torch.Tensor, Any]"],
    *,
    gamma: Sequence[Any],
    weight_decay: Sequence[Any],
) -> list[Any]:
    """First-order rules on a list: per tensor ``update_one(i, x_i, grad_i, state_i) ->
    (target, D, new_state)`` and the move. Every gradient is checked before anything moves."""
    out = []
    for i, (x, state, g) in enumerate(zip(xs, states, grads)):
        target, direction, new_state = update_one(i, x, g, state)
        move(target, gamma[i], direction, 0, weight_decay[i],
             reuse_direction=is_temporary(direction, target, new_state) and direction is not g)
        out.append(new_state)
    return out


def _storage_ptr(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


def is_temporary(direction: torch.Tensor, x: torch.Tensor, state: Any) -> bool:
    """Whether ``direction`` owns its storage: not ``x``, not a buffer of ``state`` (so a move
    may form ``gamma * D`` in it)."""
    if not FAST_PATHS or not direction.is_floating_point() or direction.shape != x.shape or direction.requires_grad:
        return False
    ptr = _storage_ptr(direction)
    if ptr == _storage_ptr(x):
        return False
    for f in dataclasses.fields(state):
        value = getattr(state, f.name)
        if isinstance(value, torch.Tensor) and _storage_ptr(value) == ptr:
            return False
    return True


UpdateOne = Callable[[int, torch.Tensor, list, Any], "tuple[torch.Tensor, torch.Tensor, Any]"]


def _piece_state(state: Any, numel: int, lo: int, hi: int) -> Any | None:
    """A state restricted to entries ``lo:hi`` (views of its buffers), or None if it cannot be."""
    updates: dict[str, Any] = {}
    for f in dataclasses.fields(state):
        value = getattr(state, f.name)
        if isinstance(value, ParamSpec):
            updates[f.name] = ParamSpec((hi - lo,), value.dtype, value.device)
        elif isinstance(value, torch.Tensor):
            if value.numel() != numel or not value.is_contiguous():
                return None
            updates[f.name] = value.view(-1)[lo:hi]
    return dataclasses.replace(state, **updates)


def _apply_in_pieces(xs, states, estimates, update_one, gammas, decay) -> list[Any] | None:
    """Elementwise rules on seeded CPU directions: update and move piece by piece.

    ``z`` comes from :func:`iter_direction_chunks` (bitwise the per-tensor draw) and the
    rule's ``update`` runs on each piece with the state restricted to it, so the float32
    temporaries (``z``, the direction, the moments' new values) are one piece instead of
    the largest tensor. Same operations entry by entry, so the same bits. None where it
    does not apply.
    """
    if any(e.seed is None or e.batch_dims != 0 or e.distribution == "sphere" for e in estimates):
        return None
    if not all(x.is_contiguous() for x in xs):
        return None
    numels = [x.numel() for x in xs]
    if any(_piece_state(s, n, 0, n) is None for s, n in zip(states, numels)):
        return None
    out = list(states)
    streams = [iter_direction_chunks(xs, e.seed, e.distribution) for e in estimates]
    for parts in zip(*streams):
        i, lo, hi = parts[0][:3]
        if any(part[:3] != (i, lo, hi) for part in parts):  # pragma: no cover - same tensors, same pieces
            raise RuntimeError("direction pieces of the estimates disagree")
        piece_state = _piece_state(states[i], numels[i], lo, hi)
        pieces = [dataclasses.replace(e, seed=None, z=part[3]) for e, part in zip(estimates, parts)]
        x = xs[i].view(-1)[lo:hi]
        target, direction, _ = update_one(i, x, pieces, piece_state)
        move(target, gammas[i], direction, 0, decay[i], reuse_direction=is_temporary(direction, target, piece_state))
        if hi == numels[i]:  # last piece of tensor i: one step of its state
            out[i] = dataclasses.replace(states[i], step=states[i].step + 1)
    return out


def apply_directions(
    xs: list[torch.Tensor],
    states: list[Any],
    estimates: Sequence[DirectionEstimate],
    update_one: UpdateOne,
    *,
    gamma: Sequence[Any],
    weight_decay: Sequence[Any],
    elementwise: bool,
) -> list[Any]:
    """Route list-level ``scale * z`` estimates to the tensors: per tensor ``i``,
    ``update_one(i, x_i, [estimate restricted to x_i, ...], state_i) -> (target, D, new_state)``
    and ``move(target, gamma[i], D, weight_decay=weight_decay[i])``. ``z`` is regenerated
    tensor by tensor (never the whole list at once). ``elementwise=True`` (the rule acts
    entry by entry, its state buffers have the tensor's shape) allows the piecewise path.
    Returns the new states.
    """
    if elementwise and FAST_PATHS:
        done = _apply_in_pieces(xs, states, estimates, update_one, gamma, weight_decay)
        if done is not None:
            return done
    streams = []
    for e in estimates:
        if e.z is not None:
            zs = [e.z] if isinstance(e.z, torch.Tensor) else list(e.z)
            streams.append(iter(zs))
        else:
            streams.append(iter_directions(xs, e.seed, e.distribution))
    out = []
    for i, (x, state, zs) in enumerate(zip(xs, states, zip(*streams))):
        pieces = [dataclasses.replace(e, seed=None, z=z) for e, z in zip(estimates, zs)]
        target, direction, new_state = update_one(i, x, pieces, state)
        move(target, gamma[i], direction, 0, weight_decay[i],
             reuse_direction=is_temporary(direction, target, new_state))
        out.append(new_state)
    return out


def shared_value(name: str, values: Sequence[Any]) -> Any:
    """The one value of an estimate hyperparameter given per tensor (all equal), else ValueError."""
    first = values[0]
    if any(v != first for v in values[1:]):
        raise ValueError(f"{name} must be the same for every tensor (one estimate over the list), got {list(values)}")
    return first


__all__ = [
    "FAST_PATHS", "is_list", "tensors_of", "closure_of", "per_tensor", "init_states", "check_states",
    "prologue", "gradients_of", "apply_gradients", "is_temporary", "apply_directions", "shared_value", "decays",
]
