r"""Cost of one optimizer step on a language model, against the forward-pass floor and MeZO.

A zero-order step cannot cost less than the forward passes it needs: 2 for a two-point
method (ZO-SGD, ZO-SignSGD with ``q = 1``, ZO-AdaMM, ZO-Muon, JAGUAR ``mode="block"``),
``2k`` for JAGUAR with ``k`` coordinates. :func:`run` times one step of every zero-order
optimizer of :mod:`zotheory.optim` and divides it by that floor, measured in the same
process, interleaved with the steps (:func:`zotheory.benchmarks.timing.interleaved_times`),
so that load on the shared machine cancels in the ratio::

    ratio_to_floor = seconds_per_step / (n_forwards * forward_seconds)

``n_forwards`` is counted (``optimizer.oracle_calls / optimizer.steps``), not assumed.

Model and batch
---------------
``quick=False``: a random-weight Llama with SmolLM2-135M's shape (:data:`SMOLLM2_135M`,
the values of the asset's ``config.json``: hidden 576, 30 layers, 9 heads / 3 KV heads,
ffn 1536, vocab 49152, tied embeddings; 134.5M parameters) in float32 (the training
loop's default). ``quick=True``: a tiny Llama (:data:`QUICK_LLAMA`, 0.2M parameters) so the
whole run takes seconds. Batch: 16 rows of 32 random token ids (fixed seed, full attention
mask). The loss is MeZO's classification loss for single-token label words: the logits at
the last position only (``logits_to_keep`` = that position as an index tensor, as
:mod:`zotheory.llm.scoring` passes it),
log-softmax in float32, cross-entropy over two candidate tokens. Full fine-tuning (``ft``)
trains every weight; ``lora`` trains peft adapters (``r = 8``, ``alpha = 16``, q/v
projections: :func:`zotheory.llm.models.apply_lora`).

Cases (``method`` / ``case``)
-----------------------------
``jaguar_signsgd`` ``k=1`` (Algorithm 1) and ``block`` (the released-code estimate);
``jaguar_muon`` ``k=1``; ``zo_sgd`` ``saved`` (default restore) and ``regenerate``
(MeZO's copy-free walk); ``zo_signsgd``, ``zo_adamm``, ``zo_muon`` (default options);
and the anchor ``mezo_faithful`` (:func:`mezo_step`). JAGUAR is timed in its **steady
state**: before timing, its momentum is loaded (through ``load_state_dict``) with what a
long run leaves, i.e. non-zero entries at ``kT`` random coordinates for ``k=1`` with
``T = 20000`` (the paper's step count) plus at least one entry in every tensor, and
non-zero everywhere for ``block`` (each block covers 1% of every tensor, so after a few
hundred steps almost every entry has been written). A freshly made JAGUAR optimizer
would be faster than that (tensors with all-zero momentum are skipped).

The MeZO anchor
---------------
:func:`mezo_step` is MeZO's trainer step (Malladi et al. 2023, ``large_models/trainer.py``:
``zo_step`` then ``zo_update``) transcribed, not imported: four passes of
``torch.manual_seed(seed); for p in params: z = torch.normal(0, 1, p.shape, dtype=p.dtype)``
(perturb by ``+1, -2, +1`` times ``eps z`` out of place, ``param.data = param.data + ...``,
then regenerate ``z`` for ``param.data = param.data - lr * (g z + weight_decay * param.data)``),
the forward passes under ``torch.inference_mode()``. It is a benchmark anchor, not
library code. ``ratio_to_mezo`` (on the ``zo_sgd`` rows) is our step's time over it.

Measures (all from the same process; the machine is shared, so several views of one ratio)
------------------------------------------------------------------------------------------
* ``ratio_to_floor``: median wall seconds of the step over median wall seconds of
  ``n_forwards`` forward passes, both from one ``interleaved_times`` call (the definition).
* ``paired_ratio_to_floor``: median over repetitions of step_r / (n x forward_r), each step
  next to its forward pass in time (slow phases of the machine cancel pair by pair).
* ``cpu_ratio_to_floor``: the same with thread CPU seconds (``time.thread_time``; one
  thread, so all the work), insensitive to the process being descheduled.
* ``overhead_ratio_to_floor = 1 + overhead / (n x cpu forward)``: ``overhead_cpu_seconds`` is the
  CPU time of a step whose oracle costs nothing (a constant closure), i.e. everything the
  optimizer does besides the forward passes; the least noisy estimate of the ratio.
* The ``*_to_mezo`` columns compare ``zo_sgd`` with the anchor the same four ways.

Columns: ``benchmark, method, case, mode, model, params, trainable, n_forwards,
seconds_per_step, forward_seconds, floor_seconds, ratio_to_floor, paired_ratio_to_floor,
cpu_seconds_per_step, cpu_forward_seconds, cpu_ratio_to_floor, overhead_cpu_seconds,
overhead_ratio_to_floor, mezo_seconds, ratio_to_mezo, paired_ratio_to_mezo, cpu_ratio_to_mezo,
overhead_ratio_to_mezo, batch, seq_len, threads, device, reps``.
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from typing import Callable, Iterable, Sequence

import torch

from .timing import interleaved_times

__all__ = [
    "SMOLLM2_135M",
    "QUICK_LLAMA",
    "CASES",
    "COLUMNS",
    "llama_config",
    "build_llama",
    "make_batch",
    "make_closure",
    "mezo_step",
    "steady_state",
    "run",
    "overhead_breakdown",
    "profile_step",
    "SHARED_CASES",
    "SHARED_COLUMNS",
    "run_shared",
    "expected_forwards",
]

# SmolLM2-135M's config.json (~/.cache/zotheory/models/smollm2-135m/config.json), copied so
# that the benchmark needs no asset.
SMOLLM2_135M = dict(
    vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
    num_attention_heads=9, num_key_value_heads=3, head_dim=64, max_position_embeddings=8192,
    tie_word_embeddings=True, rms_norm_eps=1e-5, hidden_act="silu", attention_bias=False,
    mlp_bias=False, bos_token_id=1, eos_token_id=2, pad_token_id=2,
)
QUICK_LLAMA = dict(SMOLLM2_135M, vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=256)

# (method, case, hyperparameters); lr is set by run()
CASES: tuple[tuple[str, str, dict], ...] = (
    ("jaguar_signsgd", "k=1", dict(coords_per_step=1)),
    ("jaguar_signsgd", "block", dict(mode="block")),
    ("jaguar_muon", "k=1", dict(coords_per_step=1)),
    ("zo_sgd", "saved", dict(restore="saved")),
    ("zo_sgd", "regenerate", dict(restore="regenerate")),
    ("zo_signsgd", "q=1", dict()),
    ("zo_adamm", "default", dict()),
    ("zo_muon", "default", dict()),
)

COLUMNS = ("benchmark", "method", "case", "mode", "model", "params", "trainable", "n_forwards",
           "seconds_per_step", "forward_seconds", "floor_seconds", "ratio_to_floor", "paired_ratio_to_floor",
           "cpu_seconds_per_step", "cpu_forward_seconds", "cpu_ratio_to_floor", "overhead_cpu_seconds",
           "overhead_ratio_to_floor", "mezo_seconds", "ratio_to_mezo", "paired_ratio_to_mezo", "cpu_ratio_to_mezo",
           "overhead_ratio_to_mezo", "batch", "seq_len", "threads", "device", "reps")

STEADY_STEPS = 20000  # the paper's (MeZO's) step count: JAGUAR k=1's momentum support after a run


def llama_config(quick: bool):
    from transformers import LlamaConfig

    values = dict(QUICK_LLAMA if quick else SMOLLM2_135M)
    theta = 100000.0
    cfg = LlamaConfig(**values)
    # transformers >= 5 keeps rope_theta in rope_parameters; older versions take rope_theta
    if hasattr(cfg, "rope_parameters") and isinstance(getattr(cfg, "rope_parameters", None), dict):
        cfg.rope_parameters["rope_theta"] = theta
    else:  # pragma: no cover - older transformers
        cfg.rope_theta = theta
    return cfg


def build_llama(quick: bool, *, seed: int = 0, dtype: torch.dtype = torch.float32,
                device: str | torch.device = "cpu"):
    """A random-weight ``LlamaForCausalLM`` (SmolLM2-135M's shape, or the quick one), eval mode."""
    from transformers import LlamaForCausalLM

    cfg = llama_config(quick)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(cfg)
    model.to(device=device, dtype=dtype)
    model.eval()
    return model


def make_batch(vocab_size: int, batch: int = 16, seq_len: int = 32, *, seed: int = 0,
               device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Fixed random token ids, a full attention mask, two candidate tokens and labels."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab_size, (batch, seq_len), generator=g)
    labels = torch.randint(0, 2, (batch,), generator=g)
    cands = torch.tensor([3, 4])  # the two label words' ids (any two fixed ids)
    return dict(input_ids=ids.to(device), attention_mask=torch.ones_like(ids).to(device),
                candidates=cands.to(device), labels=labels.to(device))


def make_closure(model, batch: dict[str, torch.Tensor], *, shared_prefix: bool = False) -> Callable[[], torch.Tensor]:
    """MeZO's classification loss on single-token candidates (float32 scalar), in the ambient grad mode.

    ``shared_prefix``: run the forwards through :class:`zotheory.llm.prefix.SharedPrefix` (as
    ``zotheory.llm.scoring.loss_closure`` does by default; the closure's ``shared_prefix``
    attribute is it), else plain (this benchmark's other rows)."""
    from zotheory.llm.prefix import SharedPrefix

    shared = SharedPrefix(model) if shared_prefix else None
    ids, att, cands, labels = batch["input_ids"], batch["attention_mask"], batch["candidates"], batch["labels"]
    # The last position as an index tensor (as zotheory.llm.scoring passes it): an int
    # logits_to_keep slices a non-contiguous view, and with a frozen lm_head (LoRA)
    # torch.matmul then expands the weight to (batch, hidden, vocab) and copies it.
    keep = torch.tensor([ids.shape[1] - 1], device=ids.device)

    def closure() -> torch.Tensor:
        kw = dict(input_ids=ids, attention_mask=att, use_cache=False, logits_to_keep=keep)
        logits = (model(**kw) if shared is None else shared(0, **kw)).logits[:, -1]
        logp = logits.float().log_softmax(-1)[:, cands]
        return torch.nn.functional.cross_entropy(logp, labels)

    closure.shared_prefix = shared
    return closure


# ------------------------------------------------------------------------------- MeZO anchor


def mezo_step(named_params: Sequence[tuple[str, torch.nn.Parameter]], closure: Callable[[], torch.Tensor], *,
              lr: float, eps: float, seed: int, weight_decay: float = 0.0) -> float:
    """One step of MeZO's trainer (``zo_step`` + ``zo_update``), transcribed; returns ``projected_grad``.

    Four regenerations of ``z`` from ``torch.manual_seed(seed)`` (the global generator, as
    MeZO does; the caller's global RNG state is not restored, as in MeZO). ``named_params``
    are the trainable ``(name, parameter)`` pairs in order; names decide MeZO's
    weight-decay exemption (``bias``/``layer_norm``/``layernorm``).
    """

    def zo_perturb_parameters(scaling_factor: float) -> None:
        torch.manual_seed(seed)
        for _, param in named_params:
            z = torch.normal(mean=0, std=1, size=param.data.size(), device=param.data.device, dtype=param.data.dtype)
            param.data = param.data + scaling_factor * z * eps

    def zo_forward() -> torch.Tensor:
        with torch.inference_mode():
            return closure().detach()

    zo_perturb_parameters(1)
    loss1 = zo_forward()
    zo_perturb_parameters(-2)
    loss2 = zo_forward()
    projected_grad = ((loss1 - loss2) / (2 * eps)).item()
    zo_perturb_parameters(1)
    # zo_update
    torch.manual_seed(seed)
    for name, param in named_params:
        z = torch.normal(mean=0, std=1, size=param.data.size(), device=param.data.device, dtype=param.data.dtype)
        if "bias" not in name and "layer_norm" not in name and "layernorm" not in name:
            param.data = param.data - lr * (projected_grad * z + weight_decay * param.data)
        else:
            param.data = param.data - lr * (projected_grad * z)
    return projected_grad


# ------------------------------------------------------------------------------- steady state


def steady_state(opt, case: str, *, steps: int = STEADY_STEPS, seed: int = 1, in_place: bool = False) -> int:
    """Load JAGUAR momentum as a long run leaves it; returns the number of entries held.

    ``block``: every entry non-zero. ``k=...``: ``k * steps`` random coordinates over the
    concatenation, plus one entry of every tensor (every tensor touched), each tensor in the
    form JAGUAR's switch rule gives (sparse below 1/16 of it): :func:`.memory.long_run_state`.
    Non-JAGUAR optimizers are left as they are; returns 0. ``in_place`` is kept for callers
    (the states are always set in place, without a copy of the weights' size).
    """
    from .memory import long_run_state

    return long_run_state(opt, "block" if case == "block" else "k", steps=steps, seed=seed)


# ------------------------------------------------------------------------------- the benchmark


def _peek_seed(generator: torch.Generator) -> int:
    from zotheory.algorithms._zo_common import draw_seed

    g = torch.Generator()
    g.set_state(generator.get_state())
    return draw_seed(g)


def _with_cpu_time(fns: dict[str, Callable[[], object]], wall: dict[str, list[float]] | None = None):
    """Wrap each function to record its thread CPU seconds per call (all calls, warm-up first),
    and its wall seconds per call into ``wall`` when given."""
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    if wall is not None:
        wall.update({k: [] for k in fns})

    def wrap(key, fn):
        def timed():
            w0, t0 = time.perf_counter(), time.thread_time()
            out = fn()
            cpu[key].append(time.thread_time() - t0)
            if wall is not None:
                wall[key].append(time.perf_counter() - w0)
            return out

        return timed

    return {k: wrap(k, fn) for k, fn in fns.items()}, cpu


def _free_oracle() -> Callable[[], torch.Tensor]:
    """A closure that costs nothing (two alternating constants): a step with it is pure optimizer work."""
    count = [0]

    def closure() -> torch.Tensor:
        count[0] += 1
        return torch.tensor(0.5 + 1e-4 * (count[0] % 2))

    return closure


def _overhead_seconds(fn: Callable[[], object], reps: int = 3) -> float:
    """Median thread CPU seconds of ``fn`` (one warm-up call; a slow ``fn`` is timed once more only)."""
    t0 = time.thread_time()
    fn()
    first = time.thread_time() - t0
    times = []
    for _ in range(1 if first > 2.0 else reps):
        t0 = time.thread_time()
        fn()
        times.append(time.thread_time() - t0)
    return statistics.median(times)


def _model_name(quick: bool) -> str:
    return "tiny-llama (quick)" if quick else "smollm2-135m shape (random)"


def _build(mode: str, quick: bool, device, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    from zotheory.llm.models import apply_lora

    model = build_llama(quick, device=device, dtype=dtype)
    if mode == "lora":
        model = apply_lora(model, r=8, alpha=16)
    return model


def run(quick: bool = True, progress: bool = True, *, modes: Iterable[str] = ("lora", "ft"),
        cases: Sequence[tuple[str, str, dict]] = CASES, reps: int | None = None, warmup: int = 1,
        batch: int = 16, seq_len: int = 32, threads: int = 1, device: str = "cpu", lr: float = 1e-7,
        tau: float = 1e-3):
    """Seconds per step of each case, its floor (n_forwards x forward, interleaved) and the MeZO anchor.

    Returns a tidy DataFrame with :data:`COLUMNS`. ``reps`` defaults to 7 (quick) / 5 (full),
    after ``warmup`` calls of each timed function. ``lr`` is small so the model stays finite
    over the timed steps (speed does not depend on it).
    """
    import pandas as pd

    from zotheory import optim
    from zotheory.llm.models import named_trainable_parameters, trainable_parameters

    reps = (7 if quick else 5) if reps is None else int(reps)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    rows = []
    try:
        for mode in modes:
            if mode not in ("lora", "ft"):
                raise ValueError(f"mode must be 'lora' or 'ft', got {mode!r}")
            model = _build(mode, quick, device)
            data = make_batch(model.config.vocab_size, batch, seq_len, device=device)
            closure = make_closure(model, data)
            named = named_trainable_parameters(model)
            params = [p for _, p in named]
            n_params = sum(p.numel() for p in model.parameters())
            n_train = sum(p.numel() for p in params)

            def forward() -> None:
                with torch.no_grad():
                    closure()

            for method, case, hp in cases:
                t0 = time.perf_counter()
                opt = optim.make_optimizer(method, trainable_parameters(model), lr=lr, **dict(dict(tau=tau), **hp))
                steady_state(opt, case)
                fns: dict[str, Callable[[], object]] = {"forward": forward, "step": lambda: opt.step(closure)}
                anchor = method == "zo_sgd" and hp.get("restore", "saved") == "saved"
                if anchor:
                    seed_rng = torch.Generator().manual_seed(1234)

                    def mezo() -> None:
                        s = int(torch.randint(0, 1_000_000_000, (1,), generator=seed_rng))
                        mezo_step(named, closure, lr=lr, eps=tau, seed=s)

                    fns["mezo"] = mezo
                calls0, steps0 = opt.oracle_calls, opt.steps
                wall: dict[str, list[float]] = {}
                timed, cpu = _with_cpu_time(fns, wall)
                times = interleaved_times(timed, reps=reps, warmup=warmup)
                cpu_t = {k: statistics.median(v[warmup:]) for k, v in cpu.items()}
                n_fwd = (opt.oracle_calls - calls0) / max(1, opt.steps - steps0)
                floor = n_fwd * times["forward"]
                cpu_floor = n_fwd * cpu_t["forward"]

                def paired(key: str, n: float) -> float:
                    # median over repetitions of step_r / (n * forward_r), forward_r timed next to it
                    return statistics.median(a / (n * b) for a, b in zip(wall[key][warmup:], wall["forward"][warmup:]))

                free = _free_oracle()
                overhead = _overhead_seconds(lambda: opt.step(free))
                if anchor:
                    mezo_overhead = _overhead_seconds(
                        lambda: mezo_step(named, free, lr=lr, eps=tau, seed=int(torch.randint(0, 10**9, (1,)))))
                row = dict(
                    benchmark="llm_step", method=method, case=case, mode=mode, model=_model_name(quick),
                    params=n_params, trainable=n_train, n_forwards=n_fwd, seconds_per_step=times["step"],
                    forward_seconds=times["forward"], floor_seconds=floor, ratio_to_floor=times["step"] / floor,
                    paired_ratio_to_floor=paired("step", n_fwd),
                    cpu_seconds_per_step=cpu_t["step"], cpu_forward_seconds=cpu_t["forward"],
                    cpu_ratio_to_floor=cpu_t["step"] / cpu_floor,
                    overhead_cpu_seconds=overhead, overhead_ratio_to_floor=1 + overhead / cpu_floor,
                    cpu_ratio_to_mezo=cpu_t["step"] / cpu_t["mezo"] if anchor else math.nan,
                    mezo_seconds=times.get("mezo", math.nan),
                    ratio_to_mezo=times["step"] / times["mezo"] if anchor else math.nan,
                    paired_ratio_to_mezo=(statistics.median(a / b for a, b in zip(wall["step"][warmup:],
                                                                                   wall["mezo"][warmup:]))
                                          if anchor else math.nan),
                    overhead_ratio_to_mezo=((cpu_floor + overhead) / (2 * cpu_t["forward"] + mezo_overhead)
                                            if anchor else math.nan),
                    batch=batch, seq_len=seq_len, threads=torch.get_num_threads(), device=str(device), reps=reps,
                )
                rows.append(row)
                if anchor:
                    rows.append(dict(row, method="mezo_faithful", case="anchor", n_forwards=2.0,
                                     seconds_per_step=times["mezo"], floor_seconds=2 * times["forward"],
                                     ratio_to_floor=times["mezo"] / (2 * times["forward"]),
                                     paired_ratio_to_floor=paired("mezo", 2.0), ratio_to_mezo=1.0,
                                     paired_ratio_to_mezo=1.0, cpu_seconds_per_step=cpu_t["mezo"],
                                     cpu_ratio_to_floor=cpu_t["mezo"] / (2 * cpu_t["forward"]), cpu_ratio_to_mezo=1.0,
                                     overhead_cpu_seconds=mezo_overhead,
                                     overhead_ratio_to_floor=1 + mezo_overhead / (2 * cpu_t["forward"]),
                                     overhead_ratio_to_mezo=1.0))
                if progress:
                    extra = (f"  vs MeZO {row['ratio_to_mezo']:.3f} (paired {row['paired_ratio_to_mezo']:.3f}, "
                             f"overhead-based {row['overhead_ratio_to_mezo']:.3f})" if anchor else "")
                    print(f"[llm_step] {mode:4s} {method:15s} {case:10s} step {times['step']:.4f}s "
                          f"floor {floor:.4f}s ({n_fwd:g} fwd) ratio {row['ratio_to_floor']:.3f} "
                          f"(paired {row['paired_ratio_to_floor']:.3f}, cpu {row['cpu_ratio_to_floor']:.3f}, "
                          f"overhead-based {row['overhead_ratio_to_floor']:.3f}){extra} "
                          f"[{time.perf_counter() - t0:.0f}s]", flush=True)
                del opt, fns
                gc.collect()
            del model, closure, named, params
            gc.collect()
    finally:
        torch.set_num_threads(old_threads)
    return pd.DataFrame(rows, columns=list(COLUMNS))


# ------------------------------------------------------------------------ shared-prefix forwards

#: (method, case, hyperparameters) of the shared-prefix benchmark (issue 13, item 2); LeZO's
#: ``drop=L-1`` keeps one random block per step (``drop_layers`` set from the model by run_shared).
SHARED_CASES: tuple[tuple[str, str, dict], ...] = (
    ("jaguar_signsgd", "k=1", dict(coords_per_step=1)),
    ("jaguar_signsgd", "k=8", dict(coords_per_step=8)),
    ("lezo", "default", dict()),
    ("lezo", "drop=L-1", dict()),
)

SHARED_COLUMNS = ("benchmark", "method", "case", "mode", "model", "trainable", "n_forwards", "steps",
                  "shared_forwards_per_step", "plain_forwards_per_step", "cpu_shared_forwards_per_step",
                  "cpu_plain_forwards_per_step", "blocks_forwards_per_step", "expected_forwards_per_step",
                  "forward_seconds", "batch", "seq_len", "threads", "reps")


def _case_hp(method: str, case: str, hp: dict, n_layers: int) -> dict:
    return dict(hp, drop_layers=n_layers - 1) if (method, case) == ("lezo", "drop=L-1") else dict(hp)


def expected_forwards(model, batch: dict[str, torch.Tensor], method: str, hp: dict, *, samples: int = 2000,
                      seed: int = 0) -> float:
    """Blocks a step runs with shared prefixes, in units of one forward's blocks, averaged over
    ``samples`` random steps drawn as the optimizer draws them: JAGUAR's ``k`` coordinates
    uniform over all trainable entries (their lowest block from
    :meth:`zotheory.llm.prefix.Plan.lowest_block`, with this batch's tokens), LeZO's active
    blocks (``drop_layers`` dropped uniformly). The cache policy is the one the forwards use
    (:func:`zotheory.llm.prefix.schedule`). What the parameter distribution predicts: the
    embedding, position ids, mask and head are not counted (they run on every call)."""
    from zotheory.algorithms import lezo
    from zotheory.estimators import Perturbation
    from zotheory.llm.models import named_trainable_parameters
    from zotheory.llm.prefix import plan_for, schedule
    from zotheory.random import sample_coordinates

    plan = plan_for(model)
    n = len(plan.blocks)
    named = named_trainable_parameters(model)
    params = [p for _, p in named]
    offsets = torch.tensor([0] + [p.numel() for p in params]).cumsum(0)
    g = torch.Generator().manual_seed(seed)
    ids = batch["input_ids"]

    def cost(lows: list[int]) -> int:
        cached: set[int] = set()
        blocks = 0
        for low in lows:  # each perturbation: f+ then f-
            low = min(low, n - 1)
            if low <= 0:
                blocks += 2 * n
                continue
            start, record = schedule(cached, low, n)
            cached.update(record)
            blocks += (n - start) + (n - low)
        return blocks

    total = 0
    for _ in range(samples):
        if method == "lezo":
            layers = lezo.layer_ids([name for name, _ in named])
            ids_all = sorted({i for i in layers if i >= 0})
            drop = hp.get("drop_layers")
            drop = len(ids_all) // 2 if drop is None else drop
            gone = set(lezo.draw_dropped(ids_all, drop, g))
            active = tuple(p for p, i in zip(params, layers) if i not in gone)
            lows = [plan.lowest_block(Perturbation(None, active, (None,) * len(active)), ids)]
        else:
            flat = sample_coordinates(int(offsets[-1]), int(hp.get("coords_per_step", 8)), g)
            lows = []
            for i in flat.tolist():
                t = int(torch.searchsorted(offsets, torch.tensor(i), right=True)) - 1
                p = Perturbation(None, (params[t],), (torch.tensor([i - int(offsets[t])]),))
                lows.append(plan.lowest_block(p, ids))
        total += cost(lows)
    return total / samples / n


def run_shared(quick: bool = True, progress: bool = True, *, modes: Iterable[str] = ("lora", "ft"),
               cases: Sequence[tuple[str, str, dict]] = SHARED_CASES, reps: int = 3, warmup: int = 1,
               steps: dict[str, int] | None = None, batch: int = 16, seq_len: int = 32, lr: float = 1e-7,
               tau: float = 1e-3, samples: int = 2000):
    """A step with shared-prefix forwards in units of one (plain) forward, against the same step
    with plain forwards: two optimizers made alike (same seed: the same draws, step for step),
    one on a :func:`make_closure` ``(shared_prefix=True)`` closure, one on a plain one, and one
    plain forward, timed interleaved (``reps`` rounds after ``warmup``; each round runs
    ``steps[case]`` steps of each optimizer, default 8 for ``k=1``, 4 for LeZO and 1 for ``k=8``,
    since a step's cost depends on its random draw). ``*_forwards_per_step`` = mean step time
    / mean forward time (wall; ``cpu_*``: thread CPU time); ``blocks_forwards_per_step``: the
    decoder blocks the shared steps ran (counted by hooks) / blocks per forward;
    ``expected_forwards_per_step``: :func:`expected_forwards` (from the parameter distribution).
    The optimizers start fresh (JAGUAR's momentum empty, not :func:`steady_state`): the move's
    cost is a few thousandths of the forwards either way (the ``k=1`` rows of :func:`run`).
    """
    import pandas as pd

    from zotheory import optim
    from zotheory.llm.models import trainable_parameters
    from zotheory.llm.prefix import plan_for

    old_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rows = []
    try:
        for mode in modes:
            model = _build(mode, quick, "cpu")
            data = make_batch(model.config.vocab_size, batch, seq_len)
            plain, shared = make_closure(model, data), make_closure(model, data, shared_prefix=True)
            blocks = plan_for(model).blocks
            ran = [0]
            hooks = [b.register_forward_pre_hook(lambda *a: ran.__setitem__(0, ran[0] + 1)) for b in blocks]

            def forward() -> None:
                with torch.no_grad():
                    plain()

            for method, case, hp in cases:
                t0 = time.perf_counter()
                hp = _case_hp(method, case, hp, len(blocks))
                m = (steps or {}).get(case, {"k=1": 8, "k=8": 1}.get(case, 4))
                opts = {}
                for key in ("shared", "plain"):
                    named = model.named_parameters() if method == "lezo" else trainable_parameters(model)
                    if method == "lezo":
                        named = [(nm, p) for nm, p in named if p.requires_grad]
                    opts[key] = optim.make_optimizer(method, named, lr=lr, tau=tau, **hp)
                counted = [0, 0]  # blocks run by the shared steps, shared steps

                def step_shared() -> None:
                    before = ran[0]
                    for _ in range(m):
                        opts["shared"].step(shared)
                    counted[0] += ran[0] - before
                    counted[1] += m

                def step_plain() -> None:
                    for _ in range(m):
                        opts["plain"].step(plain)

                wall: dict[str, list[float]] = {}
                timed, cpu = _with_cpu_time({"forward": forward, "shared": step_shared, "plain": step_plain}, wall)
                interleaved_times(timed, reps=reps, warmup=warmup)
                w = {k: statistics.fmean(v[warmup:]) for k, v in wall.items()}
                c = {k: statistics.fmean(v[warmup:]) for k, v in cpu.items()}
                n_fwd = opts["plain"].oracle_calls / opts["plain"].steps
                row = dict(
                    benchmark="llm_step_shared", method=method, case=case, mode=mode, model=_model_name(quick),
                    trainable=sum(p.numel() for p in trainable_parameters(model)), n_forwards=n_fwd, steps=m,
                    shared_forwards_per_step=w["shared"] / m / w["forward"],
                    plain_forwards_per_step=w["plain"] / m / w["forward"],
                    cpu_shared_forwards_per_step=c["shared"] / m / c["forward"],
                    cpu_plain_forwards_per_step=c["plain"] / m / c["forward"],
                    blocks_forwards_per_step=counted[0] / counted[1] / len(blocks),
                    expected_forwards_per_step=expected_forwards(model, data, method, hp, samples=samples),
                    forward_seconds=w["forward"], batch=batch, seq_len=seq_len, threads=torch.get_num_threads(),
                    reps=reps)
                rows.append(row)
                if progress:
                    print(f"[llm_step shared] {mode:4s} {method:15s} {case:9s} shared "
                          f"{row['shared_forwards_per_step']:.3f} fwd (cpu {row['cpu_shared_forwards_per_step']:.3f}, "
                          f"blocks {row['blocks_forwards_per_step']:.3f}, expected "
                          f"{row['expected_forwards_per_step']:.3f}) plain {row['plain_forwards_per_step']:.3f} "
                          f"(cpu {row['cpu_plain_forwards_per_step']:.3f}) [{time.perf_counter() - t0:.0f}s]",
                          flush=True)
                del opts
                gc.collect()
            for h in hooks:
                h.remove()
            del model, plain, shared
            gc.collect()
    finally:
        torch.set_num_threads(old_threads)
    return pd.DataFrame(rows, columns=list(SHARED_COLUMNS))


def overhead_breakdown(quick: bool = True, *, mode: str = "ft", reps: int = 3, batch: int = 16, seq_len: int = 32,
                       lr: float = 1e-7, tau: float = 1e-3, dtype: torch.dtype = torch.float32):
    """Where a Gaussian two-point step's time goes beyond its two forwards: thread CPU seconds.

    Components, each timed on the model's trainable tensors (median of ``reps`` after one
    warm-up, one thread): ``forward`` (one forward pass, the floor's unit), ``draw_z`` (one
    pass of the seeded Gaussian generator over every trainable entry, in the pieces
    :func:`zotheory.directions.iter_direction_chunks` yields: what each use of ``z`` costs),
    ``copy_pass`` (one read + write pass over the weights: a ``clone``), and the optimizer
    overheads with a free oracle (:func:`_free_oracle`): ``zo_sgd[saved]`` (ours, default),
    ``zo_sgd[regenerate]`` and ``mezo_faithful``. A two-point step needs ``z`` at three
    points (``x + tau z``, ``x - tau z``, the update) and cannot keep it between them without
    a parameter-sized buffer, so ``3 x draw_z`` is the floor of its overhead at constant
    memory; MeZO draws four times. ``per_floor`` divides by the two forwards (a step's ratio
    to the floor is 1 + its overhead's ``per_floor``); ``draws_equivalent`` by ``draw_z``.
    ``dtype``: the weights' dtype (``z`` is drawn in float32 either way, the ZO arithmetic rule).
    Returns a tidy DataFrame (one row per component).
    """
    import pandas as pd

    from zotheory.directions import iter_direction_chunks
    from zotheory import optim
    from zotheory.llm.models import trainable_parameters

    torch.set_num_threads(1)
    model = _build(mode, quick, "cpu", dtype)
    closure = make_closure(model, make_batch(model.config.vocab_size, batch, seq_len))
    params = trainable_parameters(model)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]

    def forward():
        with torch.no_grad():
            closure()

    def draw():
        for *_, z in iter_direction_chunks(params, 12345, "gaussian"):
            del z

    def copy_pass():
        with torch.no_grad():
            return [p.detach().clone() for p in params]

    opts = {label: optim.make_optimizer("zo_sgd", params, lr=lr, tau=tau, restore=restore)
            for label, restore in (("zo_sgd[saved]", "saved"), ("zo_sgd[regenerate]", "regenerate"))}
    free = _free_oracle()
    fns: dict[str, Callable[[], object]] = {"forward": forward, "draw_z": draw, "copy_pass": copy_pass}
    fns.update({label: (lambda o=o: o.step(free)) for label, o in opts.items()})
    fns["mezo_faithful"] = lambda: mezo_step(named, free, lr=lr, eps=tau, seed=7)
    rows = []
    for label, fn in fns.items():
        rows.append(dict(benchmark="llm_step_breakdown", component=label, mode=mode, model=_model_name(quick),
                         dtype=str(dtype).removeprefix("torch."),
                         params=sum(p.numel() for p in model.parameters()),
                         trainable=sum(p.numel() for p in params),
                         cpu_seconds=_overhead_seconds(fn, reps=reps)))
    df = pd.DataFrame(rows)
    sec = dict(zip(df["component"], df["cpu_seconds"]))
    floor = 2 * sec["forward"]
    df["per_floor"] = df["cpu_seconds"] / floor  # overheads: the step's ratio to the floor is 1 + this
    df["draws_equivalent"] = df["cpu_seconds"] / sec["draw_z"]
    return df


def profile_step(method: str, case_hp: dict | None = None, *, mode: str = "ft", quick: bool = False,
                 case: str = "k=1", steps: int = 2, row_limit: int = 20, lr: float = 1e-7) -> str:
    """torch.profiler table (self CPU time) of ``steps`` optimizer steps of one case, after one warm-up."""
    from torch.profiler import ProfilerActivity, profile

    from zotheory import optim
    from zotheory.llm.models import trainable_parameters

    torch.set_num_threads(1)
    model = _build(mode, quick, "cpu")
    closure = make_closure(model, make_batch(model.config.vocab_size))
    opt = optim.make_optimizer(method, trainable_parameters(model), lr=lr, **(case_hp or {}))
    steady_state(opt, case)
    opt.step(closure)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            opt.step(closure)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=row_limit)


if __name__ == "__main__":  # pragma: no cover
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="SmolLM2-135M shape (default: the quick config)")
    ap.add_argument("--out", default=None, help="write the table to this parquet/csv file")
    ap.add_argument("--modes", default="lora,ft")
    ap.add_argument("--shared-prefix", action="store_true",
                    help="the shared-prefix rows (run_shared: JAGUAR k = 1 / 8, LeZO) instead of the floor rows")
    args = ap.parse_args()
    import pandas as pd

    if args.shared_prefix:
        df = run_shared(quick=not args.full, modes=args.modes.split(","))
        with pd.option_context("display.width", 200, "display.max_columns", 30):
            print(df[["mode", "method", "case", "shared_forwards_per_step", "cpu_shared_forwards_per_step",
                      "blocks_forwards_per_step", "expected_forwards_per_step", "plain_forwards_per_step"]]
                  .to_string(index=False))
        if args.out:
            (df.to_parquet if args.out.endswith(".parquet") else df.to_csv)(args.out)
        raise SystemExit(0)
    df = run(quick=not args.full, modes=args.modes.split(","))

    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(df[["method", "case", "mode", "n_forwards", "seconds_per_step", "floor_seconds", "ratio_to_floor",
                  "ratio_to_mezo"]].to_string(index=False))
    if args.out:
        (df.to_parquet if args.out.endswith(".parquet") else df.to_csv)(args.out)
