r"""Shared-prefix forwards: skip the decoder blocks below the lowest perturbed one.

A zero-order estimator queries the loss at ``x + tau e`` and ``x - tau e``. When every entry
it moves lies in decoder blocks ``>= l`` (a JAGUAR coordinate, a LeZO step on LoRA
adapters), every activation below block ``l`` is the unperturbed one: the hidden states
entering block ``l`` are the same at both points and for every other coordinate of the
step whose lowest block is ``>= l``. :class:`SharedPrefix` computes them once and runs only
blocks ``l..L-1`` plus the head for the other calls. The losses are bitwise the plain
forwards' (the same modules on the same input tensors; tested on CPU for tiny Llama, OPT and
RoBERTa, LoRA and full fine-tuning).

How it knows what moved: the estimators announce each oracle call's perturbation
(:func:`zotheory.estimators.current_perturbation`: the moved tensors, their flat indices
for the coordinate estimators, and a *session*, one per estimator call). Cached hidden
states live for one session only, so nothing is reused across steps or batches (the
weights move between estimator calls). Outside an estimator call (evaluation,
first-order losses, Forward-Grad's jvp) every forward is the plain one.

Lowest perturbed block of a call, for each moved tensor (the minimum over them):

* a parameter of decoder block ``i`` (LoRA adapters included): ``i``;
* a parameter used only after the blocks (final norm, OPT's ``project_out``, the head): ``L``;
* the token-embedding matrix with known indices, when none of the moved rows is a token of
  the batch (padding included): ``L`` (the embedding output is unchanged; a tied head
  still changes, and the head always runs);
* anything else (embeddings, position embeddings, a tensor that is not the model's): no
  sharing, the plain forward.

``L`` is capped at ``L - 1`` (the last block is re-run: there is no hook point between it
and the head that all families share). ``l = 0`` gains nothing and runs the plain forward.

Mechanism (the model's own code path: masks, rotary embeddings, position ids): the block
list (Llama ``model.layers``, OPT ``model.decoder.layers``, RoBERTa ``roberta.encoder.layer``)
is temporarily replaced by its slice ``[l:]`` and a forward pre-hook on block ``l`` swaps
its ``hidden_states`` input for the cached tensor; both are undone in a ``finally``. The
embedding lookup still runs (a gather; its result is discarded). Recording is free: during
a call whose lowest block is ``l``, the blocks below ``l`` run at the unperturbed weights,
so forward pre-hooks store the hidden states entering block ``l`` and every ``g``-th block
below it (``g = ceil(sqrt(L))``) that the call passes; later calls of the session start from
the highest stored block ``<= `` their own ``l``. Memory: at most ``k + L / g`` hidden
states (batch x sequence x hidden) per forward chunk while a session lasts.

Any other model structure (``config.model_type`` not in :data:`FAMILIES`, or a block list
that is not where the family keeps it) falls back to plain forwards, with one warning per
model type on the ``zotheory.llm.prefix`` logger.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from zotheory.estimators import Perturbation, current_perturbation

__all__ = ["FAMILIES", "Plan", "SharedPrefix", "plan_for", "schedule"]

log = logging.getLogger(__name__)
_WARNED: set[str] = set()

#: model_type -> (path of the decoder block list, paths of the modules that run after the
#: blocks, path of the token embedding), relative to the transformers model (peft unwrapped).
FAMILIES: dict[str, tuple[str, tuple[str, ...], str]] = {
    "llama": ("model.layers", ("model.norm", "lm_head"), "model.embed_tokens"),
    "opt": ("model.decoder.layers", ("model.decoder.final_layer_norm", "model.decoder.project_out", "lm_head"),
            "model.decoder.embed_tokens"),
    "roberta": ("roberta.encoder.layer", ("lm_head",), "roberta.embeddings.word_embeddings"),
}


def _base(model):
    return model.get_base_model() if callable(getattr(model, "get_base_model", None)) else model


def _get(module: nn.Module, path: str) -> Any:
    for part in path.split("."):
        module = getattr(module, part, None)
        if module is None:
            return None
    return module


@dataclass(frozen=True)
class Plan:
    """Where a model's blocks are and which block each parameter belongs to."""

    parent: nn.Module  # the module holding the block list
    attr: str  # its attribute name
    blocks: nn.ModuleList
    level: dict[tuple[int, int], int]  # (data_ptr, numel) of a parameter -> block index; -1: before the
    # blocks; len(blocks): after them. Keyed by storage, not identity: the kernels pass detached views.
    embedding: tuple[int, int] | None  # (data_ptr, numel) of the token-embedding matrix (vocab, hidden)

    def lowest_block(self, moved: Perturbation, input_ids: torch.Tensor | None) -> int:
        """The lowest block whose input may differ from the unperturbed one (-1: the embeddings)."""
        n = len(self.blocks)
        low = n
        present = None
        for t, idx in zip(moved.tensors, moved.indices):
            key = _key(t)
            lv = self.level.get(key, -1)
            if lv < 0 and key == self.embedding and idx is not None and input_ids is not None and t.ndim == 2:
                if present is None:
                    present = torch.unique(input_ids.reshape(-1).cpu())
                rows = torch.div(idx, t.shape[1], rounding_mode="floor")
                if not bool(torch.isin(rows, present).any()):
                    lv = n  # rows of tokens the batch does not contain: only a tied head sees them
            if lv < 0:
                return -1
            low = min(low, lv)
        return low


def plan_for(model) -> Plan | None:
    """The :class:`Plan` of a model of a known family (peft-wrapped or not), else ``None``."""
    base = _base(model)
    mtype = getattr(getattr(base, "config", None), "model_type", None)
    family = FAMILIES.get(mtype)
    blocks = _get(base, family[0]) if family else None
    if family is None or not isinstance(blocks, nn.ModuleList) or len(blocks) == 0:
        return None
    path, after, emb_path = family
    parent_path, attr = path.rsplit(".", 1)
    level: dict[int, int] = {}
    n = len(blocks)
    prefix = path + "."
    for name, p in base.named_parameters(remove_duplicate=False):
        if name.startswith(prefix):
            lv = int(name[len(prefix):].split(".", 1)[0])
        elif any(name.startswith(a + ".") for a in after):
            lv = n
        else:
            lv = -1
        level[_key(p)] = min(level.get(_key(p), n), lv)  # a tied weight counts where it is used first
    emb = _get(base, emb_path)
    weight = getattr(emb, "weight", None)
    return Plan(_get(base, parent_path), attr, blocks, level,
                _key(weight) if isinstance(weight, torch.Tensor) and weight.ndim == 2 else None)


def _key(t: torch.Tensor) -> tuple[int, int]:
    return (t.data_ptr(), t.numel())


def schedule(cached, low: int, n: int) -> tuple[int, list[int]]:
    """For a call whose lowest perturbed block is ``low`` (``1 <= low < n``), given the blocks
    whose input is ``cached``: ``(start, record)``: run blocks ``start..n-1`` (``start = 0``:
    the plain forward) and store the inputs of the blocks in ``record`` on the way (``low``
    and every ``ceil(sqrt(n))``-th block passed below it)."""
    start = max((b for b in cached if b <= low), default=0)
    grid = math.ceil(math.sqrt(n))
    return start, [b for b in range(start + 1, low + 1) if b == low or b % grid == 0]


def _hidden(args: tuple, kwargs: dict) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


class SharedPrefix:
    """``model``'s forward that shares the unperturbed blocks within one estimator call.

    ``shared(key, **inputs)`` returns ``model(**inputs)``; ``key`` names the input (one
    per forward chunk of a closure: cached hidden states are per key). Exact: bitwise the
    plain forward's output. ``calls`` counts forwards by how they ran (``plain``,
    ``shared``) for tests and benchmarks.
    """

    def __init__(self, model) -> None:
        self.model = model
        self._plan: Plan | None | bool = False  # False: not built for this session yet
        self._session: object | None = None
        self._cache: dict[Any, dict[int, torch.Tensor]] = {}
        self.calls = {"plain": 0, "shared": 0}

    @property
    def plan(self) -> Plan | None:
        if self._plan is False:
            self._plan = plan_for(self.model)
            if self._plan is None:
                mtype = str(getattr(getattr(_base(self.model), "config", None), "model_type", type(self.model).__name__))
                if mtype not in _WARNED:
                    _WARNED.add(mtype)
                    log.warning("zotheory: shared-prefix forwards do not know the block structure of model type "
                                "%r (known: %s); using plain forwards", mtype, ", ".join(sorted(FAMILIES)))
        return self._plan

    def __call__(self, key: Any, **inputs: Any):
        moved = current_perturbation()
        if moved is not None and moved.session is not self._session:
            # a new estimator call: the weights may have moved (values, or storage: re-plan)
            self._session, self._cache, self._plan = moved.session, {}, False
        plan = self.plan if moved is not None else None
        if plan is None:
            self.calls["plain"] += 1
            return self.model(**inputs)
        n = len(plan.blocks)
        low = min(plan.lowest_block(moved, inputs.get("input_ids")), n - 1)
        if low <= 0:
            self.calls["plain"] += 1
            return self.model(**inputs)
        cache = self._cache.setdefault(key, {})
        start, record = schedule(cache, low, n)
        return self._run(plan, inputs, start, cache, record)

    def _run(self, plan: Plan, inputs: dict, start: int, cache: dict[int, torch.Tensor], record: list[int]):
        hooks = []

        def store(b: int):
            def hook(module, args, kwargs):
                cache[b] = _hidden(args, kwargs)

            return hook

        def replace(h: torch.Tensor):
            def hook(module, args, kwargs):
                if args:
                    return (h,) + tuple(args[1:]), kwargs
                return args, dict(kwargs, hidden_states=h)

            return hook

        try:
            if start > 0:
                setattr(plan.parent, plan.attr, plan.blocks[start:])
                hooks.append(plan.blocks[start].register_forward_pre_hook(replace(cache[start]), with_kwargs=True))
            for b in record:
                hooks.append(plan.blocks[b].register_forward_pre_hook(store(b), with_kwargs=True))
            self.calls["shared" if start > 0 else "plain"] += 1
            return self.model(**inputs)
        finally:
            for h in hooks:
                h.remove()
            setattr(plan.parent, plan.attr, plan.blocks)
