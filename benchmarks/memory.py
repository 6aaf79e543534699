r"""Peak memory per optimizer, one fresh process per measurement, and a model-size sweep.

Protocol (:func:`run`)
----------------------
Each (method, mode) is measured in a **fresh subprocess** (``python -m
zotheory.benchmarks.memory --worker SPEC``) that

1. imports torch / transformers / peft (``rss_baseline``: the interpreter's own cost);
2. builds a random-weight OPT model in **bfloat16** on the meta device, ``to_empty`` on the
   CPU, re-ties the embeddings and fills every tensor in place from a 1 Mi-entry random
   pool (no temporary the size of a tensor, so the build's own peak is the weights):
   ``rss_after_build`` / ``peak_after_build``;
3. for ``lora``, wraps it with peft LoRA (``r = 8``, ``alpha = 16``, q/v; adapters in fp32);
4. makes the optimizer (``state_numel`` is :func:`zotheory.optim.state_numel`, the
   function behind the documented state-size table) and runs **2 steps** on one batch of
   **16 sequences x 64 tokens** (classification loss at the last position, as
   :mod:`zotheory.benchmarks.llm_step`); ``inference`` runs 2 forward passes under
   ``torch.no_grad()`` instead;
5. reports ``peak_rss`` = ``VmHWM`` of ``/proc/self/status`` at the end (the process's peak
   RSS, nothing subtracted) as one JSON line, with ``ru_maxrss`` next to it. They agree unless
   the parent was bigger than the worker: Linux carries the pre-``execve`` high-water mark
   (the parent's RSS at fork) into ``ru_maxrss``, which then over-reports a small worker
   started from a parent holding a model (as :func:`scaling` does).

Each method's ``ratio_to_inference = peak_rss / peak_rss(inference, same mode)``; the
``net_*`` columns subtract ``rss_baseline`` from both. ``state_bytes`` is the optimizer
state (:func:`zotheory.optim.state_nbytes`: fp32 buffers, 12 bytes a sparse JAGUAR entry); ``saved_copy_bytes`` is the
transient copy of the trainable weights that ``restore="saved"`` (the default) keeps
during a Gaussian estimate. The **target** (issue 5) is that a zero-order method needs
the inference peak plus its state: ``excess_over_inference_plus_state = (peak_rss -
state_bytes - saved_copy_bytes) / peak_rss(inference) - 1 <= 5%``.

Options fixed for memory runs (they do not change what is held in memory): JAGUAR
``coords_per_step = 1``, its momentum set as after a long run (:func:`long_run_state`:
``state_k x state_steps`` coordinates, default 1 x 20,000, every tensor touched, so JAGUAR Muon
orthogonalizes every matrix; each tensor's state in the form the kernel's switch rule gives,
sparse for the large ones); Muon ``ns_steps = 1`` (the Newton-Schulz iteration allocates the
same buffers at every iteration, so the peak does not depend on ``K``; ``K = 10`` would cost
about 10 CPU-minutes per ZO-Muon step at OPT-1.3B size on one core). Gaussian methods are
measured with ``restore="saved"`` and, in full fine-tuning, also ``"regenerate"`` (MeZO's
copy-free walk; what memory parity with MeZO needs).

A method that cannot fit is a result, not a crash: before each launch the parent compares
an estimate of the run's needs (:func:`estimate_bytes`: weights, trainable copy, state,
gradients, activations, update temporaries) with ``MemAvailable`` and records
``skipped: would need X GiB (Y GiB available)`` (keeping :data:`MARGIN` free); a launched
worker runs under ``RLIMIT_DATA`` = what was available minus half the margin, so an
allocation beyond it fails in the worker (``MemoryError`` / allocator ``RuntimeError``:
reported as ``failed: ...``) rather than waking the kernel's OOM killer; one killed anyway
reports ``killed (signal N)``.

Sizes: :data:`OPT_CONFIGS` (``opt-1.3b``: hidden 2048, 24 layers, 32 heads, ffn 8192, vocab
50272, max_pos 2048; ``opt-350m``, ``opt-125m``, ``opt-16m``, ``opt-2m``). ``run(quick=True)``
uses ``opt-16m`` and a subset of methods; ``run(quick=False)`` uses ``opt-1.3b``.

:func:`scaling` sweeps model size: step time (in process, interleaved with the forward pass:
``zo_sgd`` and ``jaguar_signsgd`` k=1, LoRA and FT, bf16, batch 16 x 32) and peak memory
(subprocesses: inference, ``zo_sgd``, ``adam``, FT); :func:`plot` draws both against the
parameter count (log-log) into ``figures/bench_llm_scaling.png``.

The paper's Table 3 (GPU, fp16, OPT-1.3B, peak GPU memory) is in :data:`PAPER_TABLE3`;
:func:`paper_comparison` puts our ratios next to its ratios (to ZO-SGD).

:func:`sparse_goal` (issue 13, item 1): JAGUAR SignSGD's peak with the state that 1,000 and
20,000 steps of ``k = 8`` leave, against ZO-SGD (both restores), FT and LoRA, same protocol;
goal ``peak <= 1.01 x ZO-SGD``.
"""

from __future__ import annotations

import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

__all__ = [
    "OPT_CONFIGS",
    "METHODS",
    "QUICK_METHODS",
    "PAPER_TABLE3",
    "opt_config",
    "build_opt",
    "estimate_bytes",
    "measure",
    "run",
    "scaling",
    "paper_comparison",
    "plot",
    "long_run_state",
    "sparse_goal",
]

GiB = 2**30
MARGIN = 1 * GiB  # memory left free for the rest of the machine when deciding to launch a run

OPT_CONFIGS: dict[str, dict[str, Any]] = {
    # facebook/opt-* config.json sizes (dropout off; ReLU; learned positions)
    "opt-1.3b": dict(hidden_size=2048, num_hidden_layers=24, num_attention_heads=32, ffn_dim=8192,
                     vocab_size=50272, max_position_embeddings=2048, word_embed_proj_dim=2048),
    "opt-350m": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, ffn_dim=4096,
                     vocab_size=50272, max_position_embeddings=2048, word_embed_proj_dim=512,
                     do_layer_norm_before=False),
    "opt-125m": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, ffn_dim=3072,
                     vocab_size=50272, max_position_embeddings=2048, word_embed_proj_dim=768),
    "opt-16m": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, ffn_dim=1024,
                    vocab_size=50272, max_position_embeddings=2048, word_embed_proj_dim=256),
    "opt-2m": dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, ffn_dim=512,
                   vocab_size=8192, max_position_embeddings=512, word_embed_proj_dim=128),
}

# (label, method, mode filter, hyperparameters); label is the `method` column
METHODS: tuple[tuple[str, str, tuple[str, ...], dict], ...] = (
    ("inference", "inference", ("ft", "lora"), {}),
    ("fo_sgd", "fo_sgd", ("ft", "lora"), {}),
    ("adam", "adam", ("ft", "lora"), {}),
    ("zo_sgd", "zo_sgd", ("ft", "lora"), {}),
    ("zo_sgd[regenerate]", "zo_sgd", ("ft",), dict(restore="regenerate")),
    ("zo_adamm", "zo_adamm", ("ft", "lora"), {}),
    ("zo_adamm[regenerate]", "zo_adamm", ("ft",), dict(restore="regenerate")),
    ("jaguar_signsgd", "jaguar_signsgd", ("ft", "lora"), dict(coords_per_step=1)),
    ("jaguar_muon", "jaguar_muon", ("ft", "lora"), dict(coords_per_step=1, ns_steps=1)),
    ("zo_muon", "zo_muon", ("ft", "lora"), dict(ns_steps=1)),
    ("zo_muon[regenerate]", "zo_muon", ("ft",), dict(ns_steps=1, restore="regenerate")),
)
# the quick smoke run: 6 small subprocesses, 2 at a time (~30-60 s on 2 busy cores)
QUICK_METHODS = {"ft": ("inference", "adam", "zo_sgd", "jaguar_signsgd"), "lora": ("inference", "zo_sgd")}

# The paper's Table 3 (shared/PAPER.md): peak GPU memory, OPT-1.3B, fp16, GB; ranges as (low, high).
PAPER_TABLE3 = {
    ("fo_sgd", "ft"): (12.2, 12.2), ("fo_sgd", "lora"): (5.9, 5.9),
    ("zo_sgd", "ft"): (4.17, 4.17), ("zo_sgd", "lora"): (4.13, 4.13),
    ("jaguar_signsgd", "ft"): (4.17, 4.17), ("jaguar_signsgd", "lora"): (4.13, 4.13),
    ("zo_adamm", "ft"): (9.0, 13.0), ("zo_adamm", "lora"): (4.1, 6.1),
}

COLUMNS = ("benchmark", "method", "optimizer", "mode", "model", "params", "trainable", "dtype", "batch", "seq_len",
           "steps", "status", "rss_baseline", "rss_after_build", "peak_after_build", "peak_rss", "ru_maxrss", "state_numel",
           "state_bytes", "saved_copy_bytes", "documented_state_numel", "estimated_bytes", "ratio_to_inference",
           "net_ratio_to_inference", "excess_over_inference_plus_state", "seconds", "hyperparameters")

# d multiples of the documented table in zotheory.optim (state numbers per trainable number)
DOCUMENTED_STATE = {"inference": 0, "fo_sgd": 0, "adam": 2, "zo_sgd": 0, "zo_signsgd": 0, "zo_adamm": 3,
                    "jaguar_signsgd": 0, "jaguar_muon": 0, "zo_muon": 0}  # JAGUAR: 2 t k numbers (sparse), not d


# ----------------------------------------------------------------------------- model


def opt_config(name: str | dict):
    from transformers import OPTConfig

    values = dict(OPT_CONFIGS[name]) if isinstance(name, str) else dict(name)
    return OPTConfig(dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, pad_token_id=1, bos_token_id=2,
                     eos_token_id=2, **values)


def count_params(name: str | dict) -> int:
    """Parameters of the (tied) OPT model, from shapes on the meta device (no memory)."""
    import torch
    from transformers import OPTForCausalLM

    with torch.device("meta"):
        model = OPTForCausalLM(opt_config(name))
    model.tie_weights()
    return sum(p.numel() for p in model.parameters())


def build_opt(name: str | dict, *, dtype="bfloat16", seed: int = 0, pool_size: int = 2**20):
    """Random-weight ``OPTForCausalLM`` without a build transient: meta -> to_empty -> fill in place.

    Weights are filled chunk by chunk from one random pool of ``pool_size`` N(0, 0.02) values
    (layer-norm weights 1, biases 0): values do not matter for memory, only finiteness.
    """
    import torch
    from transformers import OPTForCausalLM

    from zotheory.llm.models import parse_dtype

    dt = parse_dtype(dtype)
    with torch.device("meta"):
        model = OPTForCausalLM(opt_config(name))
    model.to(dtype=dt)
    model.to_empty(device="cpu")
    model.tie_weights()
    g = torch.Generator().manual_seed(seed)
    pool = (torch.randn(pool_size, generator=g) * 0.02).to(dt)
    with torch.no_grad():
        for n, p in model.named_parameters():
            flat = p.view(-1)
            if "layer_norm" in n and n.endswith("weight"):
                flat.fill_(1)
            elif n.endswith("bias"):
                flat.zero_()
            else:
                for lo in range(0, flat.numel(), pool_size):
                    hi = min(flat.numel(), lo + pool_size)
                    flat[lo:hi].copy_(pool[: hi - lo])
        for b in model.buffers():  # none in OPT; keep any future buffer finite
            if b.is_floating_point():
                b.zero_()
    model.eval()
    return model


# ----------------------------------------------------------------------------- worker


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _maxrss_bytes() -> int:
    """``getrusage(RUSAGE_SELF).ru_maxrss`` in bytes (Linux reports KiB).

    Linux keeps the high-water mark of the address space a process had *before* ``execve``
    (the parent's, at fork time) in ``ru_maxrss``, so in a child started from a big parent
    it can exceed anything the child allocated. :func:`_hwm_bytes` does not.
    """
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _hwm_bytes() -> int:
    """``VmHWM`` of ``/proc/self/status``: the peak RSS of this process's own address space."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return _maxrss_bytes()  # pragma: no cover - not Linux


def _worker(spec: dict) -> dict:
    """Run one measurement in this (fresh) process; returns the JSON-able result."""
    if spec.get("data_limit"):
        resource.setrlimit(resource.RLIMIT_DATA, (int(spec["data_limit"]), int(spec["data_limit"])))
    import torch

    torch.set_num_threads(int(spec.get("threads", 1)))
    import transformers  # noqa: F401  (imports counted in the baseline)
    import peft  # noqa: F401

    from zotheory import optim
    from zotheory.llm.models import apply_lora, trainable_parameters

    from .llm_step import make_batch, make_closure

    out: dict[str, Any] = dict(rss_baseline=_rss_bytes())
    t0 = time.perf_counter()
    model = build_opt(spec["config"], dtype=spec.get("dtype", "bfloat16"))
    out.update(rss_after_build=_rss_bytes(), peak_after_build=_hwm_bytes(),
               params=sum(p.numel() for p in model.parameters()))
    if spec["mode"] == "lora":
        model = apply_lora(model, r=8, alpha=16)
    params = trainable_parameters(model)
    out["trainable"] = sum(p.numel() for p in params)
    out["trainable_bytes"] = sum(p.numel() * p.element_size() for p in params)
    data = make_batch(model.config.vocab_size, spec.get("batch", 16), spec.get("seq_len", 64))
    closure = make_closure(model, data)
    method = spec["method"]
    steps = int(spec.get("steps", 2))
    if method == "inference":
        out["state_numel"] = out["state_nbytes"] = 0
        with torch.no_grad():
            for _ in range(steps):
                closure()
    else:
        opt = optim.make_optimizer(method, params, lr=1e-6, **spec.get("hp", {}))
        # JAGUAR as after a long run (every tensor touched), set in the kernel's own form
        out["held"] = long_run_state(opt, "block" if spec.get("hp", {}).get("mode") == "block" else "k",
                                     steps=int(spec.get("state_steps", 20000)), k=spec.get("state_k"))
        out["state_numel"] = optim.state_numel(opt)
        out["state_nbytes"] = optim.state_nbytes(opt)
        for _ in range(steps):
            opt.step(closure)
    out["peak_rss"] = _hwm_bytes()
    out["ru_maxrss"] = _maxrss_bytes()
    out["seconds"] = time.perf_counter() - t0
    out["status"] = "ok"
    return out


def _worker_main(arg: str) -> None:
    spec = json.loads(arg)
    try:
        result = _worker(spec)
    except (MemoryError, RuntimeError) as err:  # allocator failures: a result, not a crash
        result = dict(status=f"failed: {type(err).__name__}: {str(err)[:200]}", peak_rss=_hwm_bytes())
    print("RESULT " + json.dumps(result), flush=True)


# ----------------------------------------------------------------------------- a long run's state


def long_run_state(opt, case: str = "k", *, steps: int = 20000, k: int | None = None, seed: int = 1) -> int:
    """Set JAGUAR's momentum as a run of ``steps`` steps leaves it, without the run; returns
    the number of entries held.

    ``"k"``: ``k x steps`` coordinates drawn uniformly (with repeats, as a run draws them)
    over the concatenation of the trainable tensors (``k``: the optimizer's
    ``coords_per_step`` unless given), plus one entry of every tensor (every tensor touched),
    with N(0, 1) values; each tensor's state takes the form the kernel's switch rule gives
    that many entries (:func:`zotheory.algorithms.jaguar_signsgd.with_entries`: sparse below
    1/16 of the tensor, so nothing of the weights' size is allocated). ``"block"``: every
    entry non-zero (dense, filled in place). Other optimizers are left as they are (0).
    """
    import torch

    from zotheory.algorithms import jaguar_signsgd

    if opt.method not in ("jaguar_signsgd", "jaguar_muon"):
        return 0
    g = torch.Generator().manual_seed(seed)
    params = opt.params
    numels = [p.numel() for p in params]
    total = sum(numels)
    held = 0
    flat = None
    if case != "block":
        k = int(opt.hp["coords_per_step"] if k is None else k)
        flat = torch.randint(0, total, (min(total, k * steps),), generator=g)
    lo = 0
    with torch.no_grad():
        for p, c in zip(params, numels):
            state = opt.state[p]["kernel"]
            if flat is None:
                state = jaguar_signsgd.to_dense(state)
                state.momentum.normal_(generator=g)
            else:
                local = flat[(flat >= lo) & (flat < lo + c)] - lo
                local = torch.cat([local, torch.randint(0, c, (1,), generator=g)]).unique()
                state = jaguar_signsgd.with_entries(state, local, torch.randn(local.numel(), generator=g))
            opt.state[p]["kernel"] = state
            held += jaguar_signsgd.held(state)
            lo += c
    return held


def sparse_goal(config: str = "opt-1.3b", *, state_steps: Sequence[int] = (1000, 20000), k: int = 8,
                modes: Iterable[str] = ("ft", "lora"), progress: bool = True, check_memory: bool = True,
                batch: int = 16, seq_len: int = 64, steps: int = 2):
    """Issue 13, item 1: JAGUAR SignSGD's peak RSS after ``state_steps`` steps of ``k``
    coordinates against ZO-SGD (``restore`` saved and regenerate), one fresh subprocess each.

    JAGUAR's state is :func:`long_run_state` (``k x state_steps`` draws); the ``steps`` measured
    steps use ``coords_per_step = 1`` (2 forwards each instead of ``2k``: the step itself holds
    ``k`` saved values more or less, nothing else). ``ratio`` is the peak over the smaller
    ZO-SGD peak of the same mode (the copy-free walk in FT); the goal is ``ratio <= 1.01``.
    """
    import pandas as pd

    n_params = count_params(config)
    rows = []
    for mode in modes:
        todo = [("zo_sgd", "zo_sgd", {}, None), ("zo_sgd[regenerate]", "zo_sgd", dict(restore="regenerate"), None)]
        todo += [(f"jaguar_signsgd@{n}", "jaguar_signsgd", dict(coords_per_step=1), n) for n in state_steps]
        for label, method, hp, n in todo:
            t0 = time.perf_counter()
            res = measure(config, method, mode, hp, batch=batch, seq_len=seq_len, steps=steps,
                          check_memory=check_memory, n_params=n_params, state_steps=n or 0, state_k=k)
            row = dict(benchmark="sparse_goal", method=label, mode=mode, model=config, state_steps=n, k=k if n else None,
                       hyperparameters=json.dumps(hp, sort_keys=True), **res)
            rows.append(row)
            if progress:
                peak = row.get("peak_rss")
                print(f"[sparse_goal] {config} {mode:4s} {label:22s} {str(row.get('status'))[:60]} "
                      f"peak {peak / GiB if isinstance(peak, (int, float)) else float('nan'):.3f} GiB "
                      f"held {row.get('held')} [{time.perf_counter() - t0:.0f}s]", flush=True)
    df = pd.DataFrame(rows)
    ratio, met, ref_label = [], [], []
    for r in df.to_dict("records"):
        ref = df[(df["mode"] == r["mode"]) & df["method"].str.startswith("zo_sgd") & (df["status"] == "ok")]
        if r["status"] != "ok" or not len(ref):
            ratio.append(math.nan), met.append(None), ref_label.append(None)
            continue
        best = ref.loc[ref["peak_rss"].idxmin()]
        ratio.append(r["peak_rss"] / best["peak_rss"])
        ref_label.append(best["method"])
        met.append(bool(ratio[-1] <= 1.01) if r["method"].startswith("jaguar") else None)
    df["ratio_to_zo_sgd"], df["zo_sgd_reference"], df["goal_met"] = ratio, ref_label, met
    return df


# ----------------------------------------------------------------------------- parent


def _available_bytes() -> int | None:
    from zotheory.llm.models import available_memory_bytes

    return available_memory_bytes("cpu")


def estimate_bytes(config: str | dict, method: str, mode: str, hp: dict | None = None, *, batch: int = 16,
                   seq_len: int = 64, n_params: int | None = None) -> int:
    """A generous estimate of a run's peak (bytes), to decide whether to launch it.

    interpreter + bf16 weights + trainable fp32 (LoRA) + state (fp32, documented table) +
    saved copy (``restore="saved"``) + gradients and activations (first order) + update
    temporaries (a few fp32 copies of the largest tensor).
    """
    hp = hp or {}
    cfg = OPT_CONFIGS[config] if isinstance(config, str) else config
    n = n_params if n_params is not None else count_params(config)
    h, L, ffn, V = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["ffn_dim"], cfg["vocab_size"]
    weights = 2 * n
    if mode == "lora":
        d = L * 2 * 8 * (h + h)  # q and v: A (8 x h) and B (h x 8)
        train_bytes = 4 * d
    else:
        d = n
        train_bytes = 2 * n
    largest = max(V * cfg["word_embed_proj_dim"], h * ffn) if mode == "ft" else 8 * h
    tokens = batch * seq_len
    total = int(0.8 * GiB) + weights + (train_bytes if mode == "lora" else 0)
    total += 4 * d * DOCUMENTED_STATE[method]
    if method in ("zo_sgd", "zo_adamm", "zo_muon", "zo_signsgd") and hp.get("restore", "saved") == "saved":
        total += train_bytes
    if method in ("fo_sgd", "adam"):
        total += train_bytes  # gradients
        total += 2 * tokens * L * (12 * h + 2 * ffn)  # saved activations (bf16), generous
    if method != "inference":  # update temporaries (fp32): whole matrices for Muon / first order
        total += 4 * 4 * (largest if method in ("adam", "fo_sgd", "zo_muon", "jaguar_muon") else min(largest, 2**22))
    total += 4 * tokens * max(h, ffn) * 4  # forward working set
    return int(total)


def measure(config: str | dict, method: str, mode: str, hp: dict | None = None, *, batch: int = 16,
            seq_len: int = 64, steps: int = 2, dtype: str = "bfloat16", threads: int = 1, timeout: float = 3600,
            check_memory: bool = True, n_params: int | None = None, state_steps: int = 20000,
            state_k: int | None = None) -> dict:
    """One measurement in a fresh subprocess (or a ``skipped`` record when it would not fit).

    JAGUAR starts from :func:`long_run_state` of ``state_steps`` steps of ``state_k``
    coordinates (default: the optimizer's ``coords_per_step``)."""
    spec = dict(config=config, method=method, mode=mode, hp=hp or {}, batch=batch, seq_len=seq_len, steps=steps,
                dtype=dtype, threads=threads, state_steps=state_steps, state_k=state_k)
    need = estimate_bytes(config, method, mode, hp, batch=batch, seq_len=seq_len, n_params=n_params)
    base = dict(estimated_bytes=need)
    if check_memory:
        avail = _available_bytes()
        if avail is not None and need > avail - MARGIN:
            return dict(base, status=f"skipped: would need {need / GiB:.1f} GiB ({avail / GiB:.1f} GiB available, "
                                     f"{MARGIN / GiB:.0f} GiB kept free)")
        if avail is not None:
            # an allocation past this fails inside the worker (reported) instead of waking the OOM killer
            spec["data_limit"] = int(avail - MARGIN // 2)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="false",
               PYTHONWARNINGS="ignore", TRANSFORMERS_VERBOSITY="error")
    cmd = [sys.executable, "-m", "zotheory.benchmarks.memory", "--worker", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return dict(base, status=f"timeout after {timeout:.0f} s")
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return dict(base, **json.loads(line[len("RESULT "):]))
    if proc.returncode < 0:
        return dict(base, status=f"killed (signal {-proc.returncode})")
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
    return dict(base, status=f"failed: rc {proc.returncode}: {tail[0][:200]}")


def _finish(rows: list[dict]):
    """Ratios to the inference run of the same (model, mode)."""
    import pandas as pd

    df = pd.DataFrame(rows)
    for c in COLUMNS:
        if c not in df.columns:
            df[c] = math.nan
    ref = {}
    for r in rows:
        if r["method"] == "inference" and r.get("status") == "ok":
            ref[(r["model"], r["mode"])] = (r["peak_rss"], r["rss_baseline"])

    def ratio(r, net=False):
        key = (r["model"], r["mode"])
        if r.get("status") != "ok" or key not in ref:
            return math.nan
        peak, base = ref[key]
        return (r["peak_rss"] - r["rss_baseline"]) / (peak - base) if net else r["peak_rss"] / peak

    df["ratio_to_inference"] = [ratio(r) for r in df.to_dict("records")]
    df["net_ratio_to_inference"] = [ratio(r, True) for r in df.to_dict("records")]
    excess = []
    for r in df.to_dict("records"):
        key = (r["model"], r["mode"])
        if r.get("status") != "ok" or key not in ref:
            excess.append(math.nan)
            continue
        extra = (r.get("state_bytes") or 0) + (r.get("saved_copy_bytes") or 0)
        excess.append((r["peak_rss"] - extra) / ref[key][0] - 1)
    df["excess_over_inference_plus_state"] = excess
    return df[list(COLUMNS)]


def run(quick: bool = True, progress: bool = True, *, methods: Sequence[str] | None = None,
        modes: Iterable[str] = ("ft", "lora"), config: str | None = None, batch: int = 16, seq_len: int = 64,
        steps: int = 2, check_memory: bool = True, jobs: int | None = None):
    """Peak RSS per (method, mode), one fresh subprocess each; a tidy DataFrame (:data:`COLUMNS`).

    ``jobs`` subprocesses run at a time (default 2 for ``quick``, 1 otherwise: a full-size
    run needs most of the machine's memory by itself; peaks are per process either way).
    """
    from concurrent.futures import ThreadPoolExecutor

    config = config or ("opt-16m" if quick else "opt-1.3b")
    jobs = jobs if jobs is not None else (2 if quick else 1)
    n_params = count_params(config)

    def wanted(mode: str, label: str) -> bool:
        if methods is not None:
            return label in methods
        return label in QUICK_METHODS.get(mode, ()) if quick else True

    todo = [(mode, label, method, hp) for mode in modes for label, method, mode_filter, hp in METHODS
            if mode in mode_filter and wanted(mode, label)]

    def one(item) -> dict:
        mode, label, method, hp = item
        t0 = time.perf_counter()
        res = measure(config, method, mode, hp, batch=batch, seq_len=seq_len, steps=steps,
                      check_memory=check_memory, n_params=n_params)
        row = dict(benchmark="memory", method=label, optimizer=method, mode=mode, model=config,
                   dtype="bfloat16", batch=batch, seq_len=seq_len, steps=steps,
                   hyperparameters=json.dumps(hp, sort_keys=True), params=n_params)
        row.update(res)
        if row.get("status") == "ok":
            row["state_bytes"] = int(row["state_nbytes"])  # fp32 buffers; a sparse JAGUAR entry 8 + 4 bytes
            gaussian = method in ("zo_sgd", "zo_signsgd", "zo_adamm", "zo_muon")
            saved = gaussian and hp.get("restore", "saved") == "saved"
            row["saved_copy_bytes"] = int(row["trainable_bytes"]) if saved else 0
            row["documented_state_numel"] = DOCUMENTED_STATE[method] * int(row["trainable"])
        if progress:
            peak = row.get("peak_rss")
            peak_s = f"peak {peak / GiB:.2f} GiB" if isinstance(peak, (int, float)) and peak == peak else ""
            print(f"[memory] {config} {mode:4s} {label:22s} {row['status'][:70]:10s} {peak_s} "
                  f"[{time.perf_counter() - t0:.0f}s]", flush=True)
        return row

    if jobs <= 1:
        rows = [one(item) for item in todo]
    else:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            rows = list(pool.map(one, todo))
    return _finish(rows)


# ----------------------------------------------------------------------------- scaling


SCALING_SIZES_FULL = ("opt-16m", "opt-125m", "opt-350m", "opt-1.3b")
SCALING_SIZES_QUICK = ("opt-2m", "opt-16m")


def _step_times(config: str, *, reps: int, warmup: int, batch: int, seq_len: int, progress: bool) -> list[dict]:
    """Seconds per step of zo_sgd and jaguar_signsgd (k=1), LoRA and FT, with the forward floor, in process."""
    import gc

    import torch

    from zotheory import optim
    from zotheory.llm.models import apply_lora, trainable_parameters

    from .llm_step import _with_cpu_time, make_batch, make_closure
    from .timing import interleaved_times

    rows = []
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for mode in ("lora", "ft"):
            model = build_opt(config)
            if mode == "lora":
                model = apply_lora(model, r=8, alpha=16)
            closure = make_closure(model, make_batch(model.config.vocab_size, batch, seq_len))

            def forward() -> None:
                with torch.no_grad():
                    closure()

            for method, case, hp in (("zo_sgd", "saved", {}), ("jaguar_signsgd", "k=1", dict(coords_per_step=1))):
                opt = optim.make_optimizer(method, trainable_parameters(model), lr=1e-7, **hp)
                long_run_state(opt, "k")
                fns, cpu = _with_cpu_time({"forward": forward, "step": lambda: opt.step(closure)})
                t = interleaved_times(fns, reps=reps, warmup=warmup)
                c = {k: sorted(v[warmup:])[len(v[warmup:]) // 2] for k, v in cpu.items()}
                rows.append(dict(benchmark="scaling", kind="step_time", model=config, method=method, case=case,
                                 mode=mode, params=sum(p.numel() for p in model.parameters()),
                                 seconds_per_step=t["step"], forward_seconds=t["forward"],
                                 ratio_to_floor=t["step"] / (2 * t["forward"]),
                                 cpu_ratio_to_floor=c["step"] / (2 * c["forward"]), batch=batch, seq_len=seq_len,
                                 reps=reps, dtype="bfloat16"))
                if progress:
                    print(f"[scaling] {config} {mode:4s} {method:15s} step {t['step']:.3f}s "
                          f"forward {t['forward']:.3f}s ratio {rows[-1]['ratio_to_floor']:.3f}", flush=True)
                del opt, fns
                gc.collect()
            del model, closure
            gc.collect()
    finally:
        torch.set_num_threads(old)
    return rows


def scaling(quick: bool = True, progress: bool = True, *, sizes: Sequence[str] | None = None,
            memory_methods: Sequence[str] = ("inference", "zo_sgd", "adam"), reuse=None, reps: int | None = None,
            check_memory: bool = True):
    """Step time (zo_sgd, jaguar_signsgd; LoRA, FT) and peak memory (inference, zo_sgd, adam; FT) vs size.

    ``reuse``: a :func:`run` DataFrame whose ``ok`` FT rows are used instead of re-measuring
    the same (model, method) memory points. Returns one tidy DataFrame with ``kind`` in
    ``{"step_time", "peak_memory"}``.
    """
    import pandas as pd

    sizes = tuple(sizes) if sizes is not None else (SCALING_SIZES_QUICK if quick else SCALING_SIZES_FULL)
    known = [m[0] for m in METHODS if "ft" in m[2]]
    unknown = [m for m in memory_methods if m not in known]
    if unknown:
        raise ValueError(f"unknown memory_methods {unknown}; full fine-tuning methods are {known}")
    unknown = [c for c in sizes if c not in OPT_CONFIGS]
    if unknown:
        raise ValueError(f"unknown sizes {unknown}; known OPT configs are {sorted(OPT_CONFIGS)}")
    rows: list[dict] = []
    reused = {}
    if reuse is not None and len(reuse):
        for r in reuse.to_dict("records"):
            if r.get("mode") == "ft" and r.get("status") == "ok":
                reused[(r["model"], r["method"])] = r
    for config in sizes:
        big = count_params(config) > 500e6
        r = reps if reps is not None else (3 if big else 5)
        rows += _step_times(config, reps=r, warmup=1, batch=16, seq_len=32, progress=progress)
        mem_rows = []
        for label in memory_methods:
            if (config, label) in reused:
                mem_rows.append(dict(reused[(config, label)]))
                continue
            res = run(quick=False, progress=progress, methods=[label], modes=("ft",), config=config,
                      check_memory=check_memory)
            mem_rows += res.to_dict("records")
        for m in mem_rows:
            rows.append(dict(benchmark="scaling", kind="peak_memory", model=config, method=m["method"], case="",
                             mode="ft", params=m["params"], peak_rss=m.get("peak_rss"), status=m.get("status"),
                             rss_after_build=m.get("rss_after_build"), rss_baseline=m.get("rss_baseline"),
                             batch=m.get("batch"), seq_len=m.get("seq_len"), dtype="bfloat16"))
    return pd.DataFrame(rows)


def plot(dfs, figures_dir: str | Path = "figures") -> Path:
    """``figures/bench_llm_scaling.png``: step time and peak memory vs parameters (log-log)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    df = pd.concat(list(dfs), ignore_index=True) if isinstance(dfs, (list, tuple)) else dfs
    df = df[df["benchmark"] == "scaling"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.4))
    st = df[df["kind"] == "step_time"]
    styles = {"lora": "--", "ft": "-"}
    colors = {"zo_sgd": "C0", "jaguar_signsgd": "C1", "forward x2": "0.5", "inference": "0.3", "adam": "C3"}
    for (method, mode), g in st.groupby(["method", "mode"]):
        g = g.sort_values("params")
        ax1.plot(g["params"], g["seconds_per_step"], styles[mode], marker="o", color=colors.get(method),
                 label=f"{method} ({mode.upper() if mode == 'ft' else 'LoRA'})")
    floor = st[st["method"] == "zo_sgd"].groupby(["params", "mode"])["forward_seconds"].median().reset_index()
    for mode, g in floor.groupby("mode"):
        g = g.sort_values("params")
        ax1.plot(g["params"], 2 * g["forward_seconds"], styles[mode], marker=".", color="0.6",
                 label=f"floor: 2 forwards ({mode.upper() if mode == 'ft' else 'LoRA'})")
    ax1.set(xscale="log", yscale="log", xlabel="parameters", ylabel="seconds per step (1 CPU thread)",
            title="Step time vs model size (OPT shapes, bf16, 16x32 tokens)")
    ax1.grid(True, which="both", alpha=0.3)
    ax1.legend(fontsize=7)
    pm = df[(df["kind"] == "peak_memory") & (df["status"] == "ok")]
    for method, g in pm.groupby("method"):
        g = g.sort_values("params")
        ax2.plot(g["params"], g["peak_rss"] / GiB, marker="o", color=colors.get(method), label=f"{method} (FT)")
    if len(pm):
        w = pm.drop_duplicates("params").sort_values("params")
        ax2.plot(w["params"], 2 * w["params"] / GiB, ":", color="0.6", label="bf16 weights")
    ax2.set(xscale="log", yscale="log", xlabel="parameters", ylabel="peak RSS (GiB)",
            title="Peak memory vs model size (full fine-tuning, bf16)")
    ax2.grid(True, which="both", alpha=0.3)
    ax2.legend(fontsize=7)
    fig.tight_layout()
    out = Path(figures_dir) / "bench_llm_scaling.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=130)
    plt.close(fig)
    return out


# ----------------------------------------------------------------------------- paper


def paper_comparison(df):
    """Our peak ratios to ZO-SGD next to the paper's Table 3 ratios (OPT-1.3B), per mode."""
    import pandas as pd

    rows = []
    for mode in ("ft", "lora"):
        sub = df[(df["mode"] == mode) & (df["status"] == "ok")].set_index("method")
        if "zo_sgd" not in sub.index:
            continue
        ours_ref = sub.loc["zo_sgd", "peak_rss"]
        ours_ref_regen = sub.loc["zo_sgd[regenerate]", "peak_rss"] if "zo_sgd[regenerate]" in sub.index else math.nan
        p_ref = PAPER_TABLE3[("zo_sgd", mode)][0]
        for method in ("fo_sgd", "zo_adamm", "jaguar_signsgd", "zo_sgd"):
            lo, hi = PAPER_TABLE3[(method, mode)]
            ours = sub.loc[method, "peak_rss"] if method in sub.index else math.nan
            rows.append(dict(mode=mode, method=method, paper_gb=f"{lo:g}" if lo == hi else f"{lo:g}-{hi:g}",
                             paper_ratio_to_zo_sgd=(lo / p_ref if lo == hi else f"{lo / p_ref:.2f}-{hi / p_ref:.2f}"),
                             ours_gib=ours / GiB, ours_ratio_to_zo_sgd=ours / ours_ref,
                             ours_ratio_to_zo_sgd_regenerate=ours / ours_ref_regen))
    return pd.DataFrame(rows)


if __name__ == "__main__":  # pragma: no cover
    if len(sys.argv) >= 3 and sys.argv[1] == "--worker":
        _worker_main(sys.argv[2])
        sys.exit(0)
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true")
    ap.add_argument("--scaling", action="store_true", help="also run the model-size sweep and plot it")
    ap.add_argument("--sparse-goal", action="store_true",
                    help="only the issue-13 check: JAGUAR SignSGD after 1,000 / 20,000 steps vs ZO-SGD (OPT-1.3B)")
    ap.add_argument("--out", default=None, help="directory for memory.parquet / scaling.parquet")
    ap.add_argument("--figures", default="figures")
    args = ap.parse_args()
    import pandas as pd

    if args.sparse_goal:
        goal = sparse_goal("opt-1.3b" if args.full else "opt-16m")
        with pd.option_context("display.width", 220, "display.max_columns", 40):
            print(goal[["mode", "method", "status", "peak_rss", "state_nbytes", "held", "ratio_to_zo_sgd",
                        "zo_sgd_reference", "goal_met"]].to_string(index=False))
        if args.out:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            goal.to_parquet(Path(args.out) / "sparse_goal.parquet")
        sys.exit(0)
    mem = run(quick=not args.full)
    with pd.option_context("display.width", 220, "display.max_columns", 40):
        print(mem[["method", "mode", "status", "peak_rss", "ratio_to_inference", "state_numel",
                   "excess_over_inference_plus_state"]].to_string(index=False))
        print(paper_comparison(mem).to_string(index=False))
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        mem.to_parquet(Path(args.out) / "memory.parquet")
    if args.scaling:
        sc = scaling(quick=not args.full, reuse=mem)
        if args.out:
            sc.to_parquet(Path(args.out) / "scaling.parquet")
        print(plot([sc], args.figures))
