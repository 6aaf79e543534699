r"""``torch.optim.Optimizer`` shells over the zotheory kernels, for full fine-tuning and LoRA.

Every shell acts on the list of trainable parameters (one parameter group).
A zero-order shell's ``step(closure)`` calls :mod:`zotheory.estimators` once
over the whole list (the closure returns the loss on the current batch; no
``backward``), then, tensor by tensor, the algorithm's pure
``zotheory.algorithms.<name>.update(...)`` and the move ``x <- x - lr * D``
(:func:`zotheory.algorithms._zo_common.move`, the move every kernel makes).
No update rule is written a second time here. The first-order references
(``fo_sgd``, ``adam``) call the closure under ``enable_grad``, run ``backward``
themselves and pass ``p.grad`` to the same ``update`` functions.

=================  ====================================  ======================  ===============================
method             estimate (oracle calls per step)      update per tensor       optimizer state (numbers)
=================  ====================================  ======================  ===============================
jaguar_signsgd     ``jaguar_coordinates`` k coords (2k)  ``jaguar_signsgd``      d  (momentum m, fp32, dense)
  mode="block"     ``jaguar_block`` (2)                  ``jaguar_signsgd``      d
jaguar_muon        ``jaguar_coordinates`` k coords (2k)  ``jaguar_muon`` (2-D)   d  (momentum M, fp32, dense)
  mode="block"     ``jaguar_block`` (2)                  ``jaguar_muon`` (2-D)   d
zo_sgd (MeZO)      ``gaussian_two_point`` (2)            ``zo_sgd``              0
zo_signsgd         ``gaussian_two_point`` x q (2q)       ``zo_signsgd``          0
zo_adamm           ``gaussian_two_point`` (2)            ``zo_adamm``            3d (m, v, v_hat, fp32)
zo_muon            ``gaussian_two_point`` (2)            ``zo_muon`` (2-D)       0
fo_sgd             ``p.grad`` (1 forward + backward)     ``fo_sgd``              0  (+ d gradients)
adam               ``p.grad`` (1 forward + backward)     ``adam``                2d (m, v, fp32)
=================  ====================================  ======================  ===============================

``d`` is the number of trainable parameters; buffers are kept in
``promote_types(param dtype, float32)``. Every shell also holds one CPU
``torch.Generator`` (coordinates and MeZO seeds are drawn from it) and two
counters. JAGUAR's momentum is dense (one buffer the size of the trainable
parameters); it is non-zero only at coordinates sampled so far, so a sparse
representation (indices + values) would be exact and far smaller on a model:
future work for the *state*; the *time* of the sign move is already proportional
to the non-zero entries (exact sparse execution, see ``_JaguarBase``). Transient
memory per step: the Gaussian methods with ``restore="saved"`` keep one copy of
the trainable parameters during the estimate (see below); ``z`` is regenerated
in pieces of 2^20 entries for large CPU tensors
(:func:`zotheory.directions.iter_direction_chunks`, bitwise the whole draw), and
the elementwise rules (ZO-SGD, ZO-SignSGD, ZO-AdaMM) also run their update piece
by piece, so their float32 temporaries are one piece, not the largest tensor
(ZO-Muon orthogonalizes whole matrices: one matrix's worth); JAGUAR saves only
the perturbed entries; its dense moves (block mode, Muon) materialise one
tensor's direction at a time.

Speed (measured by ``zotheory.benchmarks.llm_step``; every fast path is bitwise the
plain one, ``tests/test_bench_llm.py``): the estimators perturb in place on the
regenerated ``z`` (no temporaries), the JAGUAR coordinate split (``split_coordinates``)
is one stable sort (not a mask per tensor), and ``lr * D`` is formed in ``D``'s storage
when ``D`` is a temporary.

JAGUAR SignSGD in its pseudocode form (Algorithm 1)
---------------------------------------------------
Coordinates are drawn uniformly over the concatenation of all trainable
parameters (``sample_coordinates`` over ``d``), the estimate is split per tensor
(:func:`zotheory.estimates.split_coordinates`) and ``jaguar_signsgd.update``
writes ``m_i <- beta m_i + (1 - beta) g_i`` at the sampled entries only; then
**every entry of every tensor moves by** ``-lr * sign(m)`` (entries whose
momentum is still 0 do not move). ``coords_per_step = 1`` is Algorithm 1
exactly. On a model (``d ~ 1e5..1e8``) one coordinate per step touches a
negligible fraction of the weights, so the **default is** ``coords_per_step = 8``
(each with its own central difference): **16 forward passes per step**, 8x
the cost of a ZO-SGD step. At a fixed forward-pass budget a larger ``k`` gives
the same number of sampled coordinates in fewer steps, hence less of the drift
described next; compare methods at equal ``forward_passes`` (the training log
records them). Drift: every coordinate with non-zero momentum moves by ``lr``
at every step, however long ago it was sampled, so weights drift by about
``lr * t`` (``shared/PAPER.md``). The shell keeps the pseudocode exact; the
training loop offers a named ``lr_schedule`` (``"linear"``, ``"power"``: the
theorems' ``gamma ~ t^{-3/4}``) to study it, never a silent fix.

``mode="block"`` is the authors' released-code estimate (10% rows x 10% cols of
each 2-D tensor, 10% of each 1-D one, moved jointly by ``+-tau``; one scalar
for the whole block; 2 forward passes): a named comparison, **not Algorithm 1**.
``reset_momentum=True`` additionally zeroes the momentum before every write, as
the released code did (so only the block moves); default ``False`` (momentum
persists as in the pseudocode). The released code's extra SGD momentum is not
reproduced.

JAGUAR Muon (Algorithm 2) and ZO-Muon (Algorithm 3) on a model
--------------------------------------------------------------
JAGUAR Muon draws coordinates over the concatenation like SignSGD. Each 2-D
parameter keeps its momentum matrix and moves by ``-lr * NS(M)``
(``jaguar_muon.update``; ``orthogonalization="ns3"`` with ``K = 10`` by default,
the pseudocode's). ZO-Muon moves each 2-D parameter by
``-lr * NS(g * Z)`` (``zo_muon.update``). Non-matrix parameters (biases, norms,
``non_matrix=``): ``"sign"`` (default) gives them the method's sign sibling on
the same estimate -- ``jaguar_signsgd.update`` (same momentum rule, ``sign(m)``)
for JAGUAR Muon, ``zo_signsgd.update`` (``sign(g z)``) for ZO-Muon -- in the
spirit of Muon practice, which hands non-matrix weights to another optimizer;
``"column"`` views them with ``as_matrix(t, rule="column")`` (a vector ``v``
moves by ``-lr * v / ||v||``; tensors of rank > 2 become ``(shape[0], -1)``).
Nothing crashes on a non-matrix parameter. With LoRA every trainable tensor is
a matrix.

Gaussian methods: restore and seeds
-----------------------------------
``z`` is never stored: a seed is drawn from the shell's generator per estimate
(``_zo_common.draw_seed``, the kernels' own draw) and ``z`` is regenerated
tensor by tensor (:func:`zotheory.directions.iter_directions`) for the estimate
and again for the update. ``restore="saved"`` (default) keeps a copy of the
trainable parameters during the estimate and writes it back: **bitwise**, at
the cost of one extra copy of the trainable weights (negligible with LoRA, one
model copy for full fine-tuning). ``restore="regenerate"`` is MeZO's walk
``+tau z, -2 tau z, +tau z``: no copy, but the parameters drift by a few ulps
per step (large in bf16/fp16); choose it for memory parity with MeZO in full
fine-tuning.

Precision rule
--------------
Perturbations are computed in ``promote_types(param dtype, float32)`` from the
saved values and cast to the parameter dtype; the parameters are restored from
the saved values (bitwise in fp32/bf16/fp16). The loss the closure returns is
float32 (:mod:`zotheory.llm.scoring`), so the difference ``f+ - f-`` and the
division by ``2 tau`` are float32 arithmetic. Momenta/moments are float32 for
bf16/fp16 parameters. The move ``lr * D`` is computed in float32 and cast to
the parameter dtype before the subtraction: with bf16 weights a move below
half an ulp of a weight (e.g. ``lr = 1e-6`` on weights ~0.02) is lost, and a
perturbation ``tau`` is realised only to the parameter's precision
(``fl(x + tau) - x`` may differ from ``tau``; the divisor stays ``2 tau`` as in
the pseudocode). Train in float32 (the loop's default) unless memory forces bf16.

Random stream and exact resume
------------------------------
Each shell owns a CPU ``torch.Generator`` seeded by ``seed=`` (device-independent
draws; coordinates and seeds are moved to the parameters' device). Its state,
every kernel state, the hyperparameters and the counters are in
:meth:`state_dict`; :meth:`load_state_dict` restores them bitwise, so a resumed
run continues identically.

Return value of ``step``: the mean of the closure values of this step
(``f(x +- tau e)``, ``f(x +- tau z)``: an ``O(tau^2)`` proxy of the batch loss
at no extra forward pass) for zero-order shells, the loss for first-order
ones. A non-finite closure value raises
:class:`zotheory.estimators.NonFiniteOracleError` with the parameters restored
and no state changed (first-order: before any parameter moves).
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable, Iterable, Sequence

import torch

from zotheory import estimators
from zotheory._checks import check_choice, check_in_range, check_int_at_least, check_positive
from zotheory.algorithms import (
    adam,
    fo_sgd,
    jaguar_muon,
    jaguar_signsgd,
    zo_adamm,
    zo_muon,
    zo_sgd,
    zo_signsgd,
)
from zotheory.algorithms._zo_common import ParamSpec, draw_seed, move
from zotheory.directions import iter_direction_chunks, iter_directions
from zotheory.estimates import COORDINATE_MODES, CoordinateEstimate, DirectionEstimate, split_coordinates
from zotheory.estimators import NonFiniteOracleError
from zotheory.orthogonalize import METHODS as ORTHOGONALIZATIONS
from zotheory.orthogonalize import as_matrix

__all__ = [
    "METHODS",
    "OPTIMIZERS",
    "ShellOptimizer",
    "ZeroOrderOptimizer",
    "FirstOrderOptimizer",
    "JaguarSignSGD",
    "JaguarMuon",
    "ZOSGD",
    "ZOSignSGD",
    "ZOAdaMM",
    "ZOMuon",
    "FOSGD",
    "Adam",
    "make_optimizer",
    "hyperparameter_names",
    "state_numel",
    "NonFiniteOracleError",
]

Closure = Callable[[], torch.Tensor | float]


def _kernel_view(p: torch.Tensor) -> torch.Tensor:
    """A detached alias of ``p`` (0-d tensors viewed as shape (1,)); writes go to ``p``."""
    v = p.detach()
    return v.view(1) if v.ndim == 0 else v


def _state_fields(state: Any) -> dict[str, Any]:
    """A kernel state as a plain dict (tensors and ints; the ParamSpec is rebuilt from the parameter)."""
    return {
        f.name: getattr(state, f.name)
        for f in dataclasses.fields(state)
        if not isinstance(getattr(state, f.name), ParamSpec)
    }


def _storage_ptr(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


def _move_owned(x: torch.Tensor, lr: Any, direction: torch.Tensor, state: Any) -> None:
    """``move(x, lr, direction, 0)``, forming ``lr * D`` in ``D``'s own storage when ``D`` is a
    temporary (shares no storage with ``x`` or the kernel state) and ``lr`` a number.

    ``move`` computes ``x.sub_((lr * D).to(x.dtype))``; the in-place product gives the same
    bits without allocating a second tensor the size of ``D``.
    """
    owned = (
        isinstance(lr, (int, float)) and not isinstance(lr, bool)
        and direction.is_floating_point() and direction.shape == x.shape and not direction.requires_grad
    )
    if owned:
        ptr = _storage_ptr(direction)
        if ptr == _storage_ptr(x):
            owned = False
        else:
            for value in _state_fields(state).values():
                if isinstance(value, torch.Tensor) and _storage_ptr(value) == ptr:
                    owned = False
                    break
    if not owned:
        move(x, lr, direction, 0)
        return
    with torch.no_grad():
        x.sub_(direction.mul_(float(lr)).to(x.dtype))


class ShellOptimizer(torch.optim.Optimizer):
    """Common plumbing: one parameter group, a generator, counters, kernel states, state_dict."""

    method: str = ""
    zero_order: bool = True

    def __init__(self, params: Iterable[torch.Tensor], defaults: dict[str, Any], seed: int) -> None:
        super().__init__(params, defaults)
        if len(self.param_groups) != 1:
            raise ValueError(
                f"{type(self).__name__} takes one parameter group (hyperparameters are global "
                f"to the estimate), got {len(self.param_groups)}"
            )
        params_list = self.param_groups[0]["params"]
        if not params_list:
            raise ValueError("params must hold at least one trainable tensor")
        for i, p in enumerate(params_list):
            if not p.is_floating_point():
                raise ValueError(f"params[{i}] must be floating-point, got dtype {p.dtype}")
        seed = check_int_at_least("seed", seed, 0)
        self.generator = torch.Generator(device="cpu")
        self.generator.manual_seed(seed)
        self.steps = 0  # completed steps
        self.oracle_calls = 0  # closure evaluations (forward passes on a batch), failed ones included
        self._states: list[Any] = [self._init_state(i, _kernel_view(p)) for i, p in enumerate(params_list)]

    # -- to specialise ---------------------------------------------------------------------

    def _init_state(self, index: int, view: torch.Tensor) -> Any:
        raise NotImplementedError

    def _state_kind(self, index: int) -> str:
        return self.method

    # -- helpers ---------------------------------------------------------------------------

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if getattr(self, "param_groups", None):
            raise ValueError(f"{type(self).__name__} takes one parameter group")
        super().add_param_group(param_group)

    @property
    def params(self) -> list[torch.Tensor]:
        return list(self.param_groups[0]["params"])

    @property
    def hp(self) -> dict[str, Any]:
        """The hyperparameters of the (single) group, as read at every step."""
        return {k: v for k, v in self.param_groups[0].items() if k != "params"}

    def _views(self) -> list[torch.Tensor]:
        return [_kernel_view(p) for p in self.param_groups[0]["params"]]

    @property
    def kernel_states(self) -> list[Any]:
        """The per-tensor kernel states (``zotheory.algorithms.<name>.<Name>State``), in param order."""
        return list(self._states)

    # -- state_dict -------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything a bitwise resume needs. Tensors are referenced, not copied."""
        return {
            "method": self.method,
            "hyperparameters": self.hp,
            "generator": self.generator.get_state(),
            "steps": self.steps,
            "oracle_calls": self.oracle_calls,
            "shapes": [list(p.shape) for p in self.params],
            "kinds": [self._state_kind(i) for i in range(len(self._states))],
            "states": [_state_fields(s) for s in self._states],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` of the same method over parameters of the same shapes."""
        if state_dict.get("method") != self.method:
            raise ValueError(f"state_dict is for method {state_dict.get('method')!r}, this is {self.method!r}")
        shapes = [list(p.shape) for p in self.params]
        if [list(s) for s in state_dict["shapes"]] != shapes:
            raise ValueError("state_dict was saved for parameters of other shapes (or another count)")
        kinds = [self._state_kind(i) for i in range(len(self._states))]
        if list(state_dict["kinds"]) != kinds:
            raise ValueError(f"state_dict per-tensor rules {state_dict['kinds']} differ from {kinds}")
        hyper = dict(state_dict["hyperparameters"])
        missing = sorted(set(self.hp) - set(hyper))
        if missing:
            raise ValueError(f"state_dict lacks hyperparameter(s) {missing}")
        new_states = []
        for i, (state, saved) in enumerate(zip(self._states, state_dict["states"])):
            updates = {}
            for name, value in saved.items():
                current = getattr(state, name)
                if isinstance(current, torch.Tensor):
                    if not isinstance(value, torch.Tensor) or value.shape != current.shape or value.dtype != current.dtype:
                        raise ValueError(f"state_dict states[{i}].{name} does not match the buffer")
                    updates[name] = value.detach().to(current.device).clone()
                else:
                    updates[name] = value
            new_states.append(dataclasses.replace(state, **updates))
        self._states = new_states
        self.param_groups[0].update(hyper)
        self.generator.set_state(state_dict["generator"].clone())
        self.steps = int(state_dict["steps"])
        self.oracle_calls = int(state_dict["oracle_calls"])
        self._after_load()

    def _after_load(self) -> None:
        pass


# ======================================================================= zero-order


class ZeroOrderOptimizer(ShellOptimizer):
    """Base of the zero-order shells: ``step(closure)`` = estimate, then per-tensor update and move."""

    zero_order = True

    def estimate(self, closure: Closure):
        """Draw from the generator and run the estimator over all trainable tensors.

        The parameters are bitwise unchanged afterwards (``restore="saved"``).
        Counts closure calls in :attr:`oracle_calls`.
        """
        raise NotImplementedError

    def apply_estimate(self, estimate) -> None:
        """Per-tensor ``update`` and the move ``x <- x - lr * D``."""
        raise NotImplementedError

    def _counting(self, closure: Closure, values: list[torch.Tensor]) -> Closure:
        def wrapped():
            self.oracle_calls += 1
            v = closure()
            values.append(v.detach() if isinstance(v, torch.Tensor) else torch.tensor(float(v)))
            return v

        return wrapped

    @torch.no_grad()
    def step(self, closure: Closure | None = None) -> torch.Tensor:  # type: ignore[override]
        if closure is None or not callable(closure):
            raise ValueError(f"{type(self).__name__}.step needs a closure returning the loss (no backward)")
        values: list[torch.Tensor] = []
        est = self.estimate(self._counting(closure, values))
        self.apply_estimate(est)
        self.steps += 1
        return torch.stack([v.reshape(()).float() for v in values]).mean()


def _empty_coordinates(mode: str, device: torch.device) -> CoordinateEstimate:
    """No sampled entry in this tensor: ``update`` writes nothing and returns the direction of m."""
    return CoordinateEstimate(
        indices=torch.empty(0, dtype=torch.long, device=device),
        values=torch.empty(0, dtype=torch.float32, device=device),
        mode=mode,
        oracle_calls=0,
    )


class _JaguarBase(ZeroOrderOptimizer):
    """Coordinate estimates over the concatenation; per-tensor momentum; skip never-touched tensors.

    Sparse execution of the sign move (exact): for a tensor on the sign rule (every
    tensor of JAGUAR SignSGD, the non-matrix ones of JAGUAR Muon with
    ``non_matrix="sign"``) the shell keeps the *support*, the sorted flat indices where
    the momentum may be non-zero (the union of the indices written so far). While it
    holds at most ``1 / SPARSE_FRACTION`` of the tensor, the step writes the momentum
    with the kernel's ``jaguar_signsgd.write_momentum`` and moves only the support by
    ``-lr * sign(m)``: off the support ``m = +0``, ``sign(m) = +0`` and the dense move
    ``x - lr * 0`` leaves ``x`` bitwise unchanged, so the result is the dense update's,
    bit for bit, in time proportional to the support rather than to the tensor. A
    larger support (e.g. ``mode="block"`` after a few steps) switches the tensor to
    the dense path (``jaguar_signsgd.update`` and ``move``).
    """

    SPARSE_FRACTION = 16

    def __init__(self, params, defaults, seed):
        super().__init__(params, defaults, seed)
        self._touched = [False] * len(self._states)  # momentum known to be all zero while False
        # per tensor: sorted flat indices that may hold non-zero momentum; None = dense
        self._support: list[torch.Tensor | None] = [
            torch.empty(0, dtype=torch.long, device=p.device) for p in self.params
        ]

    def _after_load(self) -> None:
        # count_nonzero / nonzero read the buffer directly: a boolean mask per tensor, freed
        # between small long-lived results, fragments the heap (measured: +0.7 GiB of RSS kept
        # after a load on a 1.3B-parameter model).
        self._touched, self._support = [], []
        for s in self._states:
            m = s.momentum.reshape(-1)
            count = int(torch.count_nonzero(m))
            self._touched.append(count > 0)
            self._support.append(torch.nonzero(m).reshape(-1) if count * self.SPARSE_FRACTION <= m.numel() else None)

    def _sign_rule(self, view: torch.Tensor) -> bool:
        """Whether this tensor moves by ``-lr * sign(m)`` (``jaguar_signsgd.update``)."""
        return True

    def _draw_estimate(self, views, closure, mode, block_fraction=0.1):
        hp = self.hp
        numel = sum(v.numel() for v in views)
        if mode == "block":
            return estimators.jaguar_block(views, closure, hp["tau"], fraction=block_fraction, generator=self.generator)
        k = hp["coords_per_step"]
        if k > numel:
            raise ValueError(f"coords_per_step must be <= the number of trainable entries {numel}, got {k}")
        return estimators.jaguar_coordinates(views, closure, hp["tau"], k=k, generator=self.generator)

    def _update_tensor(self, i: int, view: torch.Tensor, piece: CoordinateEstimate) -> torch.Tensor:
        raise NotImplementedError

    def _sparse_sign_step(self, i: int, view: torch.Tensor, piece: CoordinateEstimate, lr: float) -> bool:
        """The sign rule's update on the support only; False (nothing done) when not applicable."""
        support = self._support[i]
        state = self._states[i]
        m = state.momentum
        if (support is None or not self._sign_rule(view) or not view.is_contiguous() or not m.is_contiguous()
                or not isinstance(lr, (int, float)) or isinstance(lr, bool)):
            return False
        if piece.indices.numel():
            support = torch.cat([support, piece.indices.reshape(-1).to(support.device)]).unique()
        if support.numel() * self.SPARSE_FRACTION > m.numel():
            self._support[i] = None  # dense from now on (until a reset or a load)
            return False
        check_choice("estimate.mode", piece.mode, COORDINATE_MODES)
        check_in_range("beta", self.hp["beta"], 0.0, 1.0, low_closed=True, high_closed=False)
        if piece.indices.numel():
            jaguar_signsgd.write_momentum(m, piece.indices, piece.values, self.hp["beta"], 0)
        self._states[i] = dataclasses.replace(state, step=state.step + 1)
        self._support[i] = support
        if support.numel():
            direction = torch.sign(m.view(-1)[support])  # jaguar_signsgd.update's sign(m), on the support
            x = view.view(-1)
            x[support] = x[support].sub_((float(lr) * direction).to(x.dtype))  # move(), on the support
        return True

    def apply_estimate(self, estimate: CoordinateEstimate) -> None:
        views = self._views()
        pieces = split_coordinates(estimate, [v.numel() for v in views])
        lr = self.hp["lr"]
        reset = self.hp.get("reset_momentum", False)
        for i, (view, piece) in enumerate(zip(views, pieces)):
            if reset and self._touched[i]:
                support = self._support[i]
                if support is None:
                    self._states[i].momentum.zero_()
                else:  # zero where it may be non-zero: the same all-zero buffer
                    self._states[i].momentum.view(-1)[support] = 0
                self._support[i] = torch.empty(0, dtype=torch.long, device=view.device)
                self._touched[i] = False
            if piece is None and not self._touched[i]:
                # m == 0 for this tensor: the update would return a zero direction and the
                # move x - lr * 0 == x bitwise; only the kernel's step counter advances.
                self._states[i] = dataclasses.replace(self._states[i], step=self._states[i].step + 1)
                continue
            if piece is None:
                piece = _empty_coordinates(estimate.mode, view.device)
            else:
                self._touched[i] = True
            if self._sparse_sign_step(i, view, piece, lr):
                continue
            target, direction = self._update_tensor(i, view, piece)
            _move_owned(target, lr, direction, self._states[i])


class JaguarSignSGD(_JaguarBase):
    """JAGUAR SignSGD (Algorithm 1) over a model's trainable parameters; see the module doc.

    ``lr`` (gamma), ``tau``, ``beta`` (default 0.9), ``coords_per_step`` (k, default 8:
    2k forward passes per step; 1 is Algorithm 1 exactly), ``mode`` (``"coordinate"``
    = the pseudocode, ``"block"`` = the authors' released code, not Algorithm 1),
    ``block_fraction`` (block mode, default 0.1), ``reset_momentum`` (block-mode
    comparison with the released code; default False), ``seed``.
    State: one dense float32 momentum the size of the trainable parameters.
    """

    method = "jaguar_signsgd"

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        lr: float,
        *,
        tau: float = 1e-3,
        beta: float = 0.9,
        coords_per_step: int = 8,
        mode: str = "coordinate",
        block_fraction: float = 0.1,
        reset_momentum: bool = False,
        seed: int = 0,
    ) -> None:
        check_positive("lr", lr)
        check_positive("tau", tau)
        check_in_range("beta", beta, 0.0, 1.0)
        coords_per_step = check_int_at_least("coords_per_step", coords_per_step, 1)
        check_choice("mode", mode, ("coordinate", "block"))
        check_in_range("block_fraction", block_fraction, 0.0, 1.0, low_closed=False, high_closed=True)
        if not isinstance(reset_momentum, bool):
            raise ValueError(f"reset_momentum must be a bool, got {reset_momentum!r}")
        defaults = dict(lr=lr, tau=tau, beta=beta, coords_per_step=coords_per_step, mode=mode,
                        block_fraction=block_fraction, reset_momentum=reset_momentum)
        super().__init__(params, defaults, seed)

    def _init_state(self, index, view):
        return jaguar_signsgd.init(view)

    def estimate(self, closure: Closure) -> CoordinateEstimate:
        hp = self.hp
        return self._draw_estimate(self._views(), closure, hp["mode"], hp["block_fraction"])

    def _update_tensor(self, i, view, piece):
        direction, self._states[i] = jaguar_signsgd.update(piece, self._states[i], beta=self.hp["beta"], inplace=True)
        return view, direction


NON_MATRIX_RULES = ("sign", "column")


class JaguarMuon(_JaguarBase):
    """JAGUAR Muon (Algorithm 2) over a model's trainable parameters; see the module doc.

    ``lr``, ``tau``, ``beta`` (0.9), ``coords_per_step`` (8), ``mode`` (``"coordinate"``
    = the pseudocode, ``"block"`` = the authors' released-code estimate, as for JAGUAR
    SignSGD), ``block_fraction`` (0.1), ``orthogonalization``
    (``"ns3"`` default, ``"exact"``, ``"ns5"``), ``ns_steps`` (None = method default,
    10 for ns3), ``non_matrix`` (``"sign"`` default: JAGUAR SignSGD's update for
    non-2-D tensors; ``"column"``: ``as_matrix(t, "column")``), ``seed``.
    State: one dense float32 momentum per tensor (d numbers in all).
    """

    method = "jaguar_muon"

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        lr: float,
        *,
        tau: float = 1e-3,
        beta: float = 0.9,
        coords_per_step: int = 8,
        mode: str = "coordinate",
        block_fraction: float = 0.1,
        orthogonalization: str = "ns3",
        ns_steps: int | None = None,
        non_matrix: str = "sign",
        seed: int = 0,
    ) -> None:
        check_positive("lr", lr)
        check_positive("tau", tau)
        check_in_range("beta", beta, 0.0, 1.0)
        coords_per_step = check_int_at_least("coords_per_step", coords_per_step, 1)
        check_choice("mode", mode, ("coordinate", "block"))
        check_in_range("block_fraction", block_fraction, 0.0, 1.0, low_closed=False, high_closed=True)
        check_choice("orthogonalization", orthogonalization, ORTHOGONALIZATIONS)
        if ns_steps is not None:
            check_int_at_least("ns_steps", ns_steps, 1)
        check_choice("non_matrix", non_matrix, NON_MATRIX_RULES)
        self._non_matrix = non_matrix
        defaults = dict(lr=lr, tau=tau, beta=beta, coords_per_step=coords_per_step, mode=mode,
                        block_fraction=block_fraction, orthogonalization=orthogonalization,
                        ns_steps=ns_steps, non_matrix=non_matrix)
        super().__init__(params, defaults, seed)

    def _rule(self, view: torch.Tensor) -> str:
        if view.ndim == 2:
            return "matrix"
        return "sign" if self._non_matrix == "sign" else "column"

    def _sign_rule(self, view: torch.Tensor) -> bool:
        return self._rule(view) == "sign"

    def _init_state(self, index, view):
        rule = self._rule(view)
        if rule == "sign":
            return jaguar_signsgd.init(view)
        return jaguar_muon.init(as_matrix(view, "column") if rule == "column" else view)

    def _state_kind(self, index):
        return self._rule(_kernel_view(self.params[index]))

    def estimate(self, closure: Closure) -> CoordinateEstimate:
        hp = self.hp
        return self._draw_estimate(self._views(), closure, hp["mode"], hp["block_fraction"])

    def _update_tensor(self, i, view, piece):
        hp = self.hp
        if self._rule(view) == "sign":
            direction, self._states[i] = jaguar_signsgd.update(piece, self._states[i], beta=hp["beta"], inplace=True)
            return view, direction
        target = view if view.ndim == 2 else as_matrix(view, "column")  # a view: moves write to the param
        direction, self._states[i] = jaguar_muon.update(
            piece, self._states[i], beta=hp["beta"], orthogonalization=hp["orthogonalization"],
            ns_steps=hp["ns_steps"], inplace=True,
        )
        return target, direction


class _GaussianBase(ZeroOrderOptimizer):
    """Two-point Gaussian estimates over the list; z regenerated per tensor for the update."""

    def _check_common(self, lr, tau, restore):
        check_positive("lr", lr)
        check_positive("tau", tau)
        check_choice("restore", restore, estimators.RESTORE_MODES)

    def estimate(self, closure: Closure) -> list[DirectionEstimate]:
        hp = self.hp
        views = self._views()
        seeds = [draw_seed(self.generator) for _ in range(hp.get("queries", 1))]
        return [
            estimators.gaussian_two_point(views, closure, hp["tau"], seed=s, restore=hp["restore"])
            for s in seeds
        ]

    def _update_tensor(self, i: int, view: torch.Tensor, pieces: list[DirectionEstimate]):
        raise NotImplementedError

    # True for rules that act entry by entry (their update of a piece of a tensor is the
    # piece of their update): such shells apply the estimate piece by piece (see below).
    _elementwise = False

    def _piece_state(self, state: Any, numel: int, lo: int, hi: int) -> Any | None:
        """The kernel state restricted to entries ``lo:hi`` (views of its buffers), or None."""
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

    def _apply_in_pieces(self, views: list[torch.Tensor], estimate: list[DirectionEstimate]) -> bool:
        """Elementwise rules on CPU Gaussian directions: update and move piece by piece.

        ``z`` comes from :func:`zotheory.directions.iter_direction_chunks` (bitwise the
        per-tensor draw) and the kernel's ``update`` runs on each piece with the state
        restricted to it, so the float32 temporaries of a step (``z``, the direction, the
        moments' new values) are one piece of 2^20 entries instead of the largest tensor
        (an embedding: 100M+ entries on a 1B model). Same operations entry by entry, so the
        same bits. Returns False (nothing done) where it does not apply.
        """
        if not self._elementwise or any(e.seed is None or e.batch_dims != 0 or e.distribution == "sphere"
                                        for e in estimate):
            return False
        if not all(v.is_contiguous() for v in views):
            return False
        numels = [v.numel() for v in views]
        pieces_ok = [self._piece_state(s, n, 0, n) is not None for s, n in zip(self._states, numels)]
        if not all(pieces_ok):
            return False
        lr = self.hp["lr"]
        streams = [iter_direction_chunks(views, e.seed, e.distribution) for e in estimate]
        done = -1
        for parts in zip(*streams):
            i, lo, hi = parts[0][:3]
            if any(part[:3] != (i, lo, hi) for part in parts):  # pragma: no cover - same params, same pieces
                raise RuntimeError("direction pieces of the queries disagree")
            state = self._states[i]
            piece_state = self._piece_state(state, numels[i], lo, hi)
            pieces = [
                DirectionEstimate(scale=e.scale, distribution=e.distribution, z=part[3], oracle_calls=e.oracle_calls)
                for e, part in zip(estimate, parts)
            ]
            x = views[i].view(-1)[lo:hi]
            self._states[i] = piece_state
            try:
                target, direction = self._update_tensor(i, x, pieces)
            finally:
                self._states[i] = state
            _move_owned(target, lr, direction, piece_state)
            if hi == numels[i]:  # last piece of tensor i: one step of its kernel
                self._states[i] = dataclasses.replace(state, step=state.step + 1)
                done = i
        assert done == len(views) - 1
        return True

    def apply_estimate(self, estimate: list[DirectionEstimate]) -> None:
        views = self._views()
        if self._apply_in_pieces(views, estimate):
            return
        lr = self.hp["lr"]
        z_streams = [iter_directions(views, e.seed, e.distribution) for e in estimate]
        for i, (view, zs) in enumerate(zip(views, zip(*z_streams))):
            pieces = [
                DirectionEstimate(scale=e.scale, distribution=e.distribution, z=z, oracle_calls=e.oracle_calls)
                for e, z in zip(estimate, zs)
            ]
            target, direction = self._update_tensor(i, view, pieces)
            _move_owned(target, lr, direction, self._states[i])


class ZOSGD(_GaussianBase):
    """ZO-SGD / MeZO: ``x <- x - lr * g z``. ``lr``, ``tau`` (1e-3), ``restore`` ("saved"), ``seed``. No state."""

    method = "zo_sgd"
    _elementwise = True

    def __init__(self, params, lr: float, *, tau: float = 1e-3, restore: str = "saved", seed: int = 0) -> None:
        self._check_common(lr, tau, restore)
        super().__init__(params, dict(lr=lr, tau=tau, restore=restore), seed)

    def _init_state(self, index, view):
        return zo_sgd.init(view)

    def _update_tensor(self, i, view, pieces):
        direction, self._states[i] = zo_sgd.update(pieces[0], self._states[i], inplace=True)
        return view, direction


class ZOSignSGD(_GaussianBase):
    """ZO-SignSGD: ``x <- x - lr * sign(mean_q g_j z_j)``. ``queries`` (q, default 1: 2 forward passes). No state."""

    method = "zo_signsgd"
    _elementwise = True

    def __init__(self, params, lr: float, *, tau: float = 1e-3, queries: int = 1, restore: str = "saved",
                 seed: int = 0) -> None:
        self._check_common(lr, tau, restore)
        queries = check_int_at_least("queries", queries, 1)
        super().__init__(params, dict(lr=lr, tau=tau, queries=queries, restore=restore), seed)

    def _init_state(self, index, view):
        return zo_signsgd.init(view)

    def _update_tensor(self, i, view, pieces):
        direction, self._states[i] = zo_signsgd.update(pieces, self._states[i], inplace=True)
        return view, direction


class ZOAdaMM(_GaussianBase):
    """ZO-AdaMM: AMSGrad moments on the Gaussian estimate. ``beta1`` 0.9, ``beta2`` 0.999, ``eps`` 1e-8. State 3d."""

    method = "zo_adamm"
    _elementwise = True

    def __init__(self, params, lr: float, *, tau: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8, restore: str = "saved", seed: int = 0) -> None:
        self._check_common(lr, tau, restore)
        check_in_range("beta1", beta1, 0.0, 1.0)
        check_in_range("beta2", beta2, 0.0, 1.0)
        check_positive("eps", eps)
        super().__init__(params, dict(lr=lr, tau=tau, beta1=beta1, beta2=beta2, eps=eps, restore=restore), seed)

    def _init_state(self, index, view):
        return zo_adamm.init(view)

    def _update_tensor(self, i, view, pieces):
        hp = self.hp
        direction, self._states[i] = zo_adamm.update(
            pieces[0], self._states[i], beta1=hp["beta1"], beta2=hp["beta2"], eps=hp["eps"], inplace=True
        )
        return view, direction


class ZOMuon(_GaussianBase):
    """ZO-Muon (Algorithm 3): 2-D tensors move by ``-lr * NS(g Z)``; ``non_matrix`` as JAGUAR Muon
    (``"sign"``: ``zo_signsgd.update``). ``orthogonalization`` ("ns3"), ``ns_steps``. No state."""

    method = "zo_muon"

    def __init__(self, params, lr: float, *, tau: float = 1e-3, orthogonalization: str = "ns3",
                 ns_steps: int | None = None, non_matrix: str = "sign", restore: str = "saved",
                 seed: int = 0) -> None:
        self._check_common(lr, tau, restore)
        check_choice("orthogonalization", orthogonalization, ORTHOGONALIZATIONS)
        if ns_steps is not None:
            check_int_at_least("ns_steps", ns_steps, 1)
        check_choice("non_matrix", non_matrix, NON_MATRIX_RULES)
        self._non_matrix = non_matrix
        super().__init__(params, dict(lr=lr, tau=tau, orthogonalization=orthogonalization, ns_steps=ns_steps,
                                      non_matrix=non_matrix, restore=restore), seed)

    def _rule(self, view):
        if view.ndim == 2:
            return "matrix"
        return "sign" if self._non_matrix == "sign" else "column"

    def _init_state(self, index, view):
        rule = self._rule(view)
        if rule == "sign":
            return zo_signsgd.init(view)
        return zo_muon.init(view if rule == "matrix" else as_matrix(view, "column"))

    def _state_kind(self, index):
        return self._rule(_kernel_view(self.params[index]))

    def _update_tensor(self, i, view, pieces):
        hp = self.hp
        rule = self._rule(view)
        if rule == "sign":
            direction, self._states[i] = zo_signsgd.update(pieces, self._states[i], inplace=True)
            return view, direction
        target = view if rule == "matrix" else as_matrix(view, "column")
        piece = pieces[0]
        if rule == "column":
            piece = dataclasses.replace(piece, z=piece.z.reshape(target.shape))
        direction, self._states[i] = zo_muon.update(
            piece, self._states[i], orthogonalization=hp["orthogonalization"], ns_steps=hp["ns_steps"], inplace=True
        )
        return target, direction


# ======================================================================= first-order


class FirstOrderOptimizer(ShellOptimizer):
    """First-order references: the closure returns the loss; the shell zeroes grads, runs backward,
    checks finiteness, then applies ``update`` per tensor. Grads are set to None after the step."""

    zero_order = False

    @torch.no_grad()
    def step(self, closure: Closure | None = None) -> torch.Tensor:  # type: ignore[override]
        if closure is None or not callable(closure):
            raise ValueError(f"{type(self).__name__}.step needs a closure returning the loss")
        params = self.params
        for p in params:
            p.grad = None
        with torch.enable_grad():
            self.oracle_calls += 1
            loss = closure()
            if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                raise ValueError("the closure must return the loss as a one-element tensor")
            if not bool(torch.isfinite(loss.detach()).all()):
                raise NonFiniteOracleError(f"the loss f(x) is not finite: {loss.item()}")
            loss.backward()
        grads = []
        for i, p in enumerate(params):
            g = p.grad if p.grad is not None else torch.zeros_like(p)
            if not bool(torch.isfinite(g).all()):
                for q in params:
                    q.grad = None
                raise NonFiniteOracleError(f"the gradient of params[{i}] is not finite")
            grads.append(g.view(1) if g.ndim == 0 else g)
        lr = self.hp["lr"]
        for i, (view, g) in enumerate(zip(self._views(), grads)):
            direction = self._update_tensor(i, g)
            move(view, lr, direction, 0)
        for p in params:
            p.grad = None
        self.steps += 1
        return loss.detach()

    def _update_tensor(self, i: int, grad: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class FOSGD(FirstOrderOptimizer):
    """FO-SGD reference: ``x <- x - lr * grad``. No state."""

    method = "fo_sgd"

    def __init__(self, params, lr: float, *, seed: int = 0) -> None:
        check_positive("lr", lr)
        super().__init__(params, dict(lr=lr), seed)

    def _init_state(self, index, view):
        return fo_sgd.init(view)

    def _update_tensor(self, i, grad):
        direction, self._states[i] = fo_sgd.update(grad, self._states[i], inplace=True)
        return direction


class Adam(FirstOrderOptimizer):
    """Adam reference (Kingma & Ba, bias-corrected, no weight decay). State 2d."""

    method = "adam"

    def __init__(self, params, lr: float, *, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                 seed: int = 0) -> None:
        check_positive("lr", lr)
        check_in_range("beta1", beta1, 0.0, 1.0)
        check_in_range("beta2", beta2, 0.0, 1.0)
        check_positive("eps", eps)
        super().__init__(params, dict(lr=lr, beta1=beta1, beta2=beta2, eps=eps), seed)

    def _init_state(self, index, view):
        return adam.init(view)

    def _update_tensor(self, i, grad):
        hp = self.hp
        direction, self._states[i] = adam.update(
            grad, self._states[i], beta1=hp["beta1"], beta2=hp["beta2"], eps=hp["eps"], inplace=True
        )
        return direction


# ======================================================================= registry

OPTIMIZERS: dict[str, type[ShellOptimizer]] = {
    cls.method: cls
    for cls in (JaguarSignSGD, JaguarMuon, ZOSGD, ZOSignSGD, ZOAdaMM, ZOMuon, FOSGD, Adam)
}
METHODS = tuple(OPTIMIZERS)


def hyperparameter_names(method: str) -> tuple[str, ...]:
    """Keyword hyperparameters the method's shell accepts (besides ``params`` and ``lr``)."""
    check_choice("method", method, METHODS)
    sig = inspect.signature(OPTIMIZERS[method].__init__)
    return tuple(n for n, p in sig.parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY)


def make_optimizer(method: str, params: Iterable[torch.Tensor], *, lr: float, **hyperparameters: Any) -> ShellOptimizer:
    """The shell for ``method`` over ``params``; unknown hyperparameter names raise ``ValueError``."""
    check_choice("method", method, METHODS)
    valid = hyperparameter_names(method)
    unknown = sorted(set(hyperparameters) - set(valid))
    if unknown:
        raise ValueError(f"unknown hyperparameter(s) {unknown} for method {method!r}; valid: {sorted(valid)}")
    return OPTIMIZERS[method](params, lr, **hyperparameters)


def state_numel(optimizer: ShellOptimizer) -> int:
    """Numbers held in the optimizer's per-tensor state buffers (the table in the module doc)."""
    total = 0
    for s in optimizer.kernel_states:
        for value in _state_fields(s).values():
            if isinstance(value, torch.Tensor):
                total += value.numel()
    return total
