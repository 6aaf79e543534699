r"""Candidate scoring and the training loss (MeZO's protocol, see docs/llm.md).

An example has a ``context`` (the rendered prompt), ``candidates`` (the
continuations) and a ``label`` (the index of the correct one). Anything with
those three attributes works (``zotheory.llm.tasks.Example`` is the real one).

Score of a candidate: the **mean log-probability of its tokens** given the
context (length-normalised log-likelihood); the prediction is the arg-max
(ties go to the lowest index). Training loss of an example: minus the score of
the correct candidate; :func:`candidate_loss` is the mean over the examples.

Tokenisation (docs/llm.md): ``context`` and ``context + candidate`` are
tokenised without special tokens; the candidate's tokens are those of the full
string past the context's token count (a candidate with no token left there is
an error). Special tokens the tokenizer adds around a text (found by
tokenising a probe with and without them) are put back around the sequence.

Inputs longer than the model's positions are **truncated from the left**, as
MeZO does: the row keeps the special tokens, the candidate (or its masks) and
the *end* of the context; the start of the context is dropped until the row
fits :func:`max_positions` (``config.max_position_embeddings``, less the
offset of RoBERTa-style position ids; e.g. 128 for ``tiny-opt``, 129 for
``tiny-roberta``). Without this, learned position embeddings (OPT, RoBERTa)
fail with an index error. Each :func:`score` / :func:`loss_closure` call that
truncates logs a warning on the ``zotheory.llm.scoring`` logger the first time
and whenever the running total doubles (how many examples of the call, and
the total so far); :func:`truncation_count` returns the total.
A causal row keeps at least one context token when the tokenizer adds no BOS.
A candidate that does not fit even with the whole context dropped is a
``ValueError`` naming the example (nothing is cut from a candidate).

Causal LMs (Llama, OPT, ...): one row ``[prefix] + tokens(context + candidate)``
without its last token (no logit is needed after it); the logit at position
``p - 1`` scores the token at ``p``. Rows with the same input are run once, so
single-token candidates of one example share one row (the context's), which
halves the cost of a binary task. Rows are right-padded with an attention mask;
only the needed positions are projected to the vocabulary (``logits_to_keep``)
when the model supports it.

Masked LMs (RoBERTa, ``...ForMaskedLM``): MeZO's prompt-based scoring. The row
is ``[prefix] + tokens(context) + <mask> * n + [suffix]`` with ``n`` the
candidate's token count; the candidate's tokens are scored at the mask
positions (each mask predicts its own token independently, which for the usual
single-token label words is exactly MeZO's). The template is the task's: MeZO's
RoBERTa templates add a trailing period, ours score the plain context.

Numerics: the selected logits are cast to float32 before ``log_softmax`` and
the scores / loss are float32 for every model dtype, so a zero-order
difference ``f(x + tau e) - f(x - tau e)`` is taken in float32 (the estimators
take it in ``promote_types(param dtype, value dtype)``). The logits themselves
are computed in the model's dtype: with bf16/fp16 weights the forward pass's
own rounding (about ``1e-2`` relative in bf16) limits how small a difference
can be resolved; see :mod:`zotheory.optim` for the precision rule.

Gradients: :func:`score` and :func:`accuracy` always run under
``torch.no_grad()``; :func:`candidate_loss` does too unless ``grad=True``
(the first-order references). :func:`loss_closure` tokenises and pads a batch
once and returns the zero-argument closure an optimizer calls 2..2k
times per step.
"""

from __future__ import annotations

import inspect
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

import torch

from .models import is_masked_lm
from .prefix import SharedPrefix

__all__ = ["score", "accuracy", "predict", "candidate_loss", "loss_closure", "evaluate", "encode",
           "max_positions", "truncation_count", "shared_prefix_default"]

log = logging.getLogger(__name__)
_TRUNCATED = [0]  # examples truncated so far in this process (see truncation_count)


def truncation_count() -> int:
    """Examples whose context was truncated from the left (to fit the model's positions) so far
    in this process, counted once per scoring / loss call that encoded them."""
    return _TRUNCATED[0]


def _note_truncations(n: int, of: int, limit: int) -> None:
    before = _TRUNCATED[0]
    _TRUNCATED[0] += n
    if _TRUNCATED[0].bit_length() > before.bit_length():  # the first, then at each doubling
        log.warning("zotheory: truncated %d of %d examples from the left to the model's %d positions "
                    "(the start of the context is dropped; %d truncated so far in this process)",
                    n, of, limit, _TRUNCATED[0])


def max_positions(model) -> int | None:
    """The longest row ``model`` can take: ``config.max_position_embeddings`` (or ``n_positions``),
    less the offset of RoBERTa-style position ids (they start after the padding index);
    ``None`` when the model does not say."""
    base = model.get_base_model() if callable(getattr(model, "get_base_model", None)) else model
    cfg = getattr(base, "config", None)
    n = None
    for key in ("max_position_embeddings", "n_positions", "n_ctx"):
        v = getattr(cfg, key, None)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            n = v
            break
    if n is None:
        return None
    inner = getattr(base, "base_model", base)
    emb = getattr(inner, "embeddings", None)
    pad, pos = getattr(emb, "padding_idx", None), getattr(emb, "position_embeddings", None)
    if isinstance(pad, int) and isinstance(pos, torch.nn.Embedding):
        n = min(n, pos.num_embeddings - pad - 1)
    return n


class ExampleLike(Protocol):
    context: str
    candidates: Sequence[str]
    label: int


@dataclass(frozen=True)
class _Encoded:
    """Rows to run and, per scored (example, candidate), the (row, position, token) targets."""

    rows: list[tuple[int, ...]]
    row_of: list[int]  # per target
    pos_of: list[int]  # logit position per target
    tok_of: list[int]  # token id per target
    seg_of: list[int]  # index of the scored (example, candidate) per target
    pairs: list[tuple[int, int]]  # (example index, candidate index) per segment
    truncated: list[int] = field(default_factory=list)  # examples whose context was cut from the left


def _special_wrap(tok) -> tuple[list[int], list[int]]:
    """Ids the tokenizer puts before and after a text (e.g. BOS, or <s> ... </s>)."""
    probe = "a"
    plain = list(tok(probe, add_special_tokens=False)["input_ids"])
    full = list(tok(probe)["input_ids"])
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return full[:start], full[start + len(plain) :]
    return [], []  # pragma: no cover - a tokenizer that rewrites the text itself


def _ids(tok, text: str) -> list[int]:
    return list(tok(text, add_special_tokens=False)["input_ids"])


def _check_example(i: int, ex: Any) -> None:
    cands = getattr(ex, "candidates", None)
    if not isinstance(getattr(ex, "context", None), str) or not cands:
        raise ValueError(f"examples[{i}] must have a str context and a non-empty candidates sequence")
    label = getattr(ex, "label", None)
    if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < len(cands):
        raise ValueError(f"examples[{i}].label must be an index into its {len(cands)} candidates, got {label!r}")


def encode(tok, examples: Sequence[ExampleLike], *, masked: bool, labels_only: bool = False,
           max_length: int | None = None) -> _Encoded:
    """Token rows and targets for the (example, candidate) pairs (only the labels if ``labels_only``).
    Rows longer than ``max_length`` lose the start of their context (see the module doc)."""
    prefix, suffix = _special_wrap(tok)
    mask_id = tok.mask_token_id
    if masked and mask_id is None:
        raise ValueError("a masked LM needs a tokenizer with a mask token")
    rows: list[tuple[int, ...]] = []
    row_index: dict[tuple[int, ...], int] = {}
    enc = _Encoded(rows, [], [], [], [], [])
    for i, ex in enumerate(examples):
        _check_example(i, ex)
        ctx = _ids(tok, ex.context)
        which = [ex.label] if labels_only else range(len(ex.candidates))
        for c in which:
            full = _ids(tok, ex.context + ex.candidates[c])
            cand = full[len(ctx):]
            if not cand:
                raise ValueError(
                    f"examples[{i}] candidate {c} ({ex.candidates[c]!r}) has no tokens past the context's "
                    f"{len(ctx)} tokens"
                )
            if masked:
                kept = ctx
                if max_length is not None:
                    room = max_length - len(prefix) - len(cand) - len(suffix)
                    kept = _cut_left(ctx, room, 0, i, c, ex, len(cand), max_length)
                start = len(prefix) + len(kept)
                row = tuple(prefix + kept + [mask_id] * len(cand) + suffix)
                positions = [start + j for j in range(len(cand))]
            else:
                kept = full[: len(ctx)]
                if max_length is not None:  # the row is prefix + context + candidate less its last token
                    room = max_length - len(prefix) - len(cand) + 1
                    kept = _cut_left(kept, room, 0 if prefix else 1, i, c, ex, len(cand), max_length)
                seq = prefix + kept + cand
                start = len(prefix) + len(kept)
                if start < 1:
                    raise ValueError(
                        f"examples[{i}] has an empty context and the tokenizer adds no BOS: "
                        "the first candidate token has no logit to score it"
                    )
                row = tuple(seq[:-1])
                positions = [start - 1 + j for j in range(len(cand))]
            if len(kept) < len(ctx) and (not enc.truncated or enc.truncated[-1] != i):
                enc.truncated.append(i)
            r = row_index.setdefault(row, len(rows))
            if r == len(rows):
                rows.append(row)
            seg = len(enc.pairs)
            enc.pairs.append((i, c))
            for p, t in zip(positions, cand):
                enc.row_of.append(r)
                enc.pos_of.append(p)
                enc.tok_of.append(t)
                enc.seg_of.append(seg)
    if enc.truncated and max_length is not None:
        _note_truncations(len(enc.truncated), len(examples), max_length)
    return enc


def _cut_left(ctx: list[int], room: int, keep_at_least: int, i: int, c: int, ex: Any, n_cand: int,
              limit: int) -> list[int]:
    """The last ``room`` tokens of ``ctx`` (all of it when it fits)."""
    if len(ctx) <= room:
        return ctx
    if room < keep_at_least or room < 0:
        raise ValueError(
            f"examples[{i}] candidate {c} ({ex.candidates[c]!r}, {n_cand} tokens) does not fit the model's "
            f"{limit} positions even with the whole context cut; shorten the candidate or use a model "
            f"with more positions")
    return ctx[len(ctx) - room:]


def _model_device(model) -> torch.device:
    return next(model.parameters()).device


def _accepts(model, name: str) -> bool:
    base = model.get_base_model() if callable(getattr(model, "get_base_model", None)) else model
    try:
        return name in inspect.signature(base.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover
        return False


@dataclass
class _Chunk:
    ids: torch.Tensor  # (rows, L) right-padded, on the model's device
    att: torch.Tensor  # (rows, L)
    sel: torch.Tensor  # indices of this chunk's targets in target order
    b_idx: torch.Tensor  # row (within the chunk) per target
    p_idx: torch.Tensor  # logit position per target
    keep: torch.Tensor  # sorted distinct positions needed
    tok: torch.Tensor  # token id per target


def _prepare(tok, enc: _Encoded, batch_rows: int | None, device: torch.device) -> list[_Chunk]:
    """Pad the rows into chunks of at most ``batch_rows`` (one forward pass each)."""
    n_rows = len(enc.rows)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    row_of = torch.tensor(enc.row_of, dtype=torch.long)
    pos_of = torch.tensor(enc.pos_of, dtype=torch.long)
    tok_of = torch.tensor(enc.tok_of, dtype=torch.long)
    size = n_rows if batch_rows is None else max(1, int(batch_rows))
    chunks = []
    for lo in range(0, n_rows, size):
        hi = min(n_rows, lo + size)
        rows = enc.rows[lo:hi]
        L = max(len(r) for r in rows)
        ids = torch.full((len(rows), L), pad, dtype=torch.long)
        att = torch.zeros((len(rows), L), dtype=torch.long)
        for b, r in enumerate(rows):  # right padding
            ids[b, : len(r)] = torch.tensor(r, dtype=torch.long)
            att[b, : len(r)] = 1
        sel = ((row_of >= lo) & (row_of < hi)).nonzero().squeeze(1)
        p_idx = pos_of[sel]
        chunks.append(_Chunk(ids.to(device), att.to(device), sel.to(device), (row_of[sel] - lo).to(device),
                             p_idx.to(device), torch.unique(p_idx).to(device), tok_of[sel].to(device)))
    return chunks


def _target_logprobs(model, chunks: list[_Chunk], n_targets: int, masked: bool, shared=None) -> torch.Tensor:
    """log p(token) at every target, float32, in target order (differentiable if grad is on).
    ``shared``: a :class:`zotheory.llm.prefix.SharedPrefix` of ``model`` to run the forwards."""
    use_keep = (not masked) and _accepts(model, "logits_to_keep")
    out = None
    for i, c in enumerate(chunks):
        L = c.ids.shape[1]
        kwargs: dict[str, Any] = {}
        if not masked:
            kwargs["use_cache"] = False
            if use_keep and c.keep.numel() < L:
                kwargs["logits_to_keep"] = c.keep
        if shared is None:
            logits = model(input_ids=c.ids, attention_mask=c.att, **kwargs).logits
        else:
            logits = shared(i, input_ids=c.ids, attention_mask=c.att, **kwargs).logits
        if logits.shape[1] == L:
            col = c.p_idx
        elif logits.shape[1] == c.keep.numel():
            col = torch.searchsorted(c.keep, c.p_idx)
        else:  # pragma: no cover - a model that misreads logits_to_keep
            raise RuntimeError(f"unexpected logits shape {tuple(logits.shape)} for {L} positions")
        picked = logits[c.b_idx, col].float().log_softmax(-1)
        lp = picked.gather(1, c.tok.unsqueeze(1)).squeeze(1)
        if len(chunks) == 1:
            return lp  # one chunk holds every target, in order
        if out is None:
            out = torch.zeros(n_targets, dtype=torch.float32, device=lp.device)
        out = out.index_put((c.sel,), lp)
    assert out is not None
    return out


def _segment_means(enc: _Encoded, logp: torch.Tensor) -> torch.Tensor:
    seg = torch.tensor(enc.seg_of, dtype=torch.long, device=logp.device)
    n = len(enc.pairs)
    sums = torch.zeros(n, dtype=logp.dtype, device=logp.device).index_add(0, seg, logp)
    counts = torch.zeros(n, dtype=logp.dtype, device=logp.device).index_add(0, seg, torch.ones_like(logp))
    return sums / counts


def score(model, tok, examples: Sequence[ExampleLike], batch_size: int | None = 32) -> torch.Tensor:
    """Length-normalised log-likelihood of every candidate: float32 ``(n_examples, max_candidates)``.

    Entry ``[i, c]`` is the mean log-probability of candidate ``c``'s tokens
    given example ``i``'s context; ``-inf`` past an example's last candidate.
    ``batch_size`` bounds the rows per forward pass (``None``: all at once).
    """
    examples = list(examples)
    if not examples:
        raise ValueError("examples must not be empty")
    masked = is_masked_lm(model)
    enc = encode(tok, examples, masked=masked, max_length=max_positions(model))
    chunks = _prepare(tok, enc, batch_size, _model_device(model))
    with torch.no_grad():
        means = _segment_means(enc, _target_logprobs(model, chunks, len(enc.row_of), masked))
    width = max(len(ex.candidates) for ex in examples)
    out = torch.full((len(examples), width), float("-inf"), dtype=torch.float32, device=means.device)
    ei = torch.tensor([p[0] for p in enc.pairs], device=means.device)
    ci = torch.tensor([p[1] for p in enc.pairs], device=means.device)
    out[ei, ci] = means
    return out


def predict(scores: torch.Tensor) -> torch.Tensor:
    """Arg-max candidate per example (ties: lowest index)."""
    return scores.argmax(dim=1)


def evaluate(model, tok, examples: Sequence[ExampleLike], batch_size: int | None = 32) -> dict[str, float]:
    """``{"accuracy", "loss", "n"}`` from one scoring pass (``loss`` = mean of minus the label's score)."""
    examples = list(examples)
    s = score(model, tok, examples, batch_size)
    labels = torch.tensor([ex.label for ex in examples], device=s.device)
    acc = (predict(s) == labels).double().mean().item()
    loss = (-s[torch.arange(len(examples), device=s.device), labels]).double().mean().item()
    return {"accuracy": acc, "loss": loss, "n": len(examples)}


def accuracy(model, tok, examples: Sequence[ExampleLike], batch_size: int | None = 32) -> float:
    """Fraction of examples whose arg-max candidate is the label."""
    return evaluate(model, tok, examples, batch_size)["accuracy"]


LOSSES = ("nll", "classification")


def shared_prefix_default() -> bool:
    """Whether :func:`loss_closure` shares forward prefixes by default: yes, unless the
    environment sets ``ZOTHEORY_SHARED_PREFIX=0`` (the opt-out for ``zotheory finetune``)."""
    return os.environ.get("ZOTHEORY_SHARED_PREFIX", "1").strip().lower() not in ("0", "false", "no", "off")


def loss_closure(
    model, tok, examples: Sequence[ExampleLike], *, grad: bool = False, batch_size: int | None = None,
    loss: str = "nll", shared_prefix: bool | None = None,
) -> Callable[[], torch.Tensor]:
    """A zero-argument closure returning :func:`candidate_loss` on ``examples``.

    The examples are tokenised and padded once; every call runs the model on the
    model's *current* parameters (what the optimizers need: 2..2k calls per step).
    ``loss="nll"``: minus the mean log-probability of the correct candidate's tokens
    (the label tokens only). ``loss="classification"``: MeZO's
    ``train_as_classification``: cross-entropy of the label over the candidates'
    length-normalised scores (the quantity the prediction is made from); every
    candidate is scored, single-token candidates of one example share a forward row.

    ``shared_prefix`` (default :func:`shared_prefix_default`, i.e. on): inside an estimator's
    oracle calls, run only the decoder blocks from the lowest perturbed one up, reusing the
    unperturbed hidden states below it within the estimator call
    (:class:`zotheory.llm.prefix.SharedPrefix`; bitwise the plain forwards' losses). ``False``:
    always the plain forward.
    """
    examples = list(examples)
    if not examples:
        raise ValueError("examples must not be empty")
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {list(LOSSES)}, got {loss!r}")
    if shared_prefix is None:
        shared_prefix = shared_prefix_default()
    shared = SharedPrefix(model) if shared_prefix and not grad else None
    masked = is_masked_lm(model)
    enc = encode(tok, examples, masked=masked, labels_only=(loss == "nll"), max_length=max_positions(model))
    chunks = _prepare(tok, enc, batch_size, _model_device(model))
    if loss == "classification":
        width = max(len(ex.candidates) for ex in examples)
        ei = torch.tensor([p[0] for p in enc.pairs])
        ci = torch.tensor([p[1] for p in enc.pairs])
        labels = torch.tensor([ex.label for ex in examples])

    def closure() -> torch.Tensor:
        with torch.set_grad_enabled(grad):
            means = _segment_means(enc, _target_logprobs(model, chunks, len(enc.row_of), masked, shared))
            if loss == "nll":
                return -means.mean()
            table = torch.full((len(examples), width), float("-inf"), dtype=means.dtype, device=means.device)
            table = table.index_put((ei.to(means.device), ci.to(means.device)), means)
            return torch.nn.functional.cross_entropy(table, labels.to(means.device))

    closure.shared_prefix = shared  # the SharedPrefix (its call counts), or None
    return closure


class _Functional:
    """A model called with given parameter tensors (``torch.func.functional_call``); every
    other attribute is the model's."""

    def __init__(self, model, names: list[str]) -> None:
        self._model, self._names, self._tensors = model, names, None

    def __getattr__(self, name: str):
        return getattr(self._model, name)

    def __call__(self, *args, **kwargs):
        params = dict(zip(self._names, self._tensors))
        return torch.func.functional_call(self._model, params, args, kwargs, strict=False)


def functional_loss(
    model, tok, examples: Sequence[ExampleLike], params: Sequence[torch.Tensor], *, loss: str = "nll",
    batch_size: int | None = None,
) -> Callable[[tuple[torch.Tensor, ...]], torch.Tensor]:
    """:func:`loss_closure` as a function of the parameters: ``fn(tensors) -> loss`` evaluates
    the model with ``params[i]`` replaced by ``tensors[i]`` (``torch.func.functional_call``),
    so a jvp can differentiate it (Forward-Grad: ``zotheory.optim.ForwardGrad.step(fn)``).
    ``params`` are parameters of ``model`` in the optimizer's order."""
    by_id = {id(p): n for n, p in model.named_parameters()}
    missing = [i for i, p in enumerate(params) if id(p) not in by_id]
    if missing:
        raise ValueError(f"params[{missing[0]}] is not a parameter of the model")
    proxy = _Functional(model, [by_id[id(p)] for p in params])
    closure = loss_closure(proxy, tok, examples, grad=False, batch_size=batch_size, loss=loss, shared_prefix=False)

    def fn(tensors: tuple[torch.Tensor, ...]) -> torch.Tensor:
        if len(tensors) != len(params):
            raise ValueError(f"fn takes {len(params)} tensors (one per parameter), got {len(tensors)}")
        from torch.nn.attention import SDPBackend, sdpa_kernel

        proxy._tensors = tensors
        try:
            # The math attention kernel has forward-mode derivatives (the fused CPU/GPU ones do not).
            with sdpa_kernel([SDPBackend.MATH]):
                return closure()
        finally:
            proxy._tensors = None

    return fn


def candidate_loss(
    model, tok, examples: Sequence[ExampleLike], *, grad: bool = False, batch_size: int | None = None,
    loss: str = "nll",
) -> torch.Tensor:
    """Mean over examples of minus the mean log-probability of the correct candidate's tokens.

    A float32 0-d tensor on the model's device. Under ``torch.no_grad()`` unless
    ``grad=True`` (first-order references). Only the label candidates are run
    (``batch_size`` rows per forward pass; ``None``: all in one).
    """
    return loss_closure(model, tok, examples, grad=grad, batch_size=batch_size, loss=loss)()
