r"""Data-parallel ZO fine-tuning: bytes on the wire per step and step time, 1 vs 2 processes.

``run(quick=True)`` returns tidy rows (``benchmark, case, metric, value, unit, note``):

* **Bytes per step, measured.** Each case is trained under ``torchrun --nproc-per-node 2``
  (gloo, CPU) by :func:`zotheory.llm.train.train`; the data-parallel context counts every
  collective of the training steps (:class:`zotheory.llm.distributed.CommStats`: calls x
  ``numel * element_size`` of the tensor each rank hands in). ``zo_bytes_per_step`` is what
  our ZO step sends (16 bytes per oracle call); ``ddp_bytes_per_step`` is what first-order DDP
  would all-reduce (every trainable gradient: ``sum numel * element_size``); for the Adam case
  it is measured (our first-order path all-reduces the gradients exactly as DDP would).
  Evaluation traffic (one float64 triple per evaluation) is not part of a step.
* **Bytes per step, SmolLM2-135M shape.** The model is built from SmolLM2-135M's config on the
  ``meta`` device (no weights, no download) to count its trainable tensors (LoRA r = 8 on
  q/v, and full fine-tuning); ZO bytes are the measured 16 bytes per oracle call times the
  calls per step. These rows are counts, not a run.
* **All-reduce latency.** Median time of one all-reduce of the 16-byte pair between the 2
  processes (``timing.median_time``: 15 repetitions of 20 calls after 20 warm-up calls).
* **Step time, 1 vs 2 processes.** The same run (global batch 16: 8 + 8 examples in 2
  processes) with one plain process and with ``torchrun --nproc-per-node 2``; a step's time is
  rank 0's ``step_time`` in ``log.parquet`` (the two oracle calls *and* the all-reduces; the
  evaluation is outside it). Per run: median over the steps after ``warmup`` steps (>= 5
  steps); the 1- and 2-process runs alternate (``reps`` each; the value is the median over
  reps). The 2 processes each use one thread (``OMP_NUM_THREADS=1``), and so does the single
  process, so the ideal speedup is 2 on a machine with >= 2 free cores.

Model for the timings: a random-weight Llama (``tiny_model("llama", hidden_size=384,
num_layers=4)``, 5.4M weights) on a synthetic two-label task; the numbers are the machine's
(``os.cpu_count()`` is in the ``note`` column).

Command: ``python -m zotheory.benchmarks.distributed [--full] [--out FILE.csv]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

BENCHMARK = "distributed"
HIDDEN, LAYERS = 384, 4
BENCH_MODEL = f"bench-llama-h{HIDDEN}-l{LAYERS}"

#: (case name, method, lora, optimizer hyperparameters)
CASES = (
    ("full/zo_sgd", "zo_sgd", False, {}),
    ("lora/zo_sgd", "zo_sgd", True, {}),
    ("lora/jaguar_signsgd_k8", "jaguar_signsgd", True, {"coords_per_step": 8}),
    ("lora/adam", "adam", True, {}),
)
QUICK_CASES = ("full/zo_sgd", "lora/jaguar_signsgd_k8", "lora/adam")


class SyntheticTask:
    """Two-label sentences from a fixed generator (no data files)."""

    GOOD = ("great", "moving", "funny", "warm", "sharp")
    BAD = ("dull", "bad", "boring", "flat", "clumsy")
    NOUNS = ("film", "plot", "cast", "script", "score", "ending")

    def __init__(self, n_train: int = 256, n_eval: int = 16) -> None:
        import torch

        from zotheory.llm.tasks import Example

        self.data = {}
        for k, (name, n) in enumerate((("train", n_train), ("dev", n_eval), ("test", n_eval))):
            g = torch.Generator().manual_seed(7 + k)
            out = []
            for i in range(n):
                pos = bool(torch.randint(0, 2, (1,), generator=g))
                words = self.GOOD if pos else self.BAD
                w = words[int(torch.randint(0, len(words), (1,), generator=g))]
                noun = self.NOUNS[int(torch.randint(0, len(self.NOUNS), (1,), generator=g))]
                out.append(Example(f"The {noun} of this movie is {w}, all in all. It was", (" terrible", " great"),
                               int(pos), f"{name}{i}"))
            self.data[name] = out

    def split(self, name: str):
        return list(self.data[name])


def _patch_bench_model() -> None:
    """``load_model("bench-llama-h<H>-l<L>")`` builds ``tiny_model("llama", hidden_size=H, num_layers=L)``."""
    from zotheory.llm import models

    real = models.load_model

    def load_model(name_or_path, *, dtype="float32", device="cpu", seed=0):
        name = str(name_or_path)
        if name.startswith("bench-llama-h"):
            h, l = name[len("bench-llama-h"):].split("-l")
            return models.tiny_model("llama", seed, hidden_size=int(h), num_layers=int(l), dtype=dtype,
                                     device=device)
        return real(name_or_path, dtype=dtype, device=device, seed=seed)

    models.load_model = load_model


def _worker(spec_path: str) -> int:
    """Train every case of the spec (under torchrun: data-parallel; else one plain process)."""
    import torch

    torch.set_num_threads(1)
    _patch_bench_model()
    from zotheory.llm import distributed
    from zotheory.llm.train import TrainConfig, train

    spec = json.loads(Path(spec_path).read_text())
    task = SyntheticTask()
    parallel = distributed.from_env("cpu")
    finished = False
    try:
        if parallel is not None:  # latency of one ZO all-reduce (the float64 pair), timing rule of timing.py
            from .timing import median_time

            pair = torch.zeros(2, dtype=torch.float64)
            t = median_time(lambda: parallel.dist.all_reduce(pair), reps=15, warmup=20, number=20)
            if parallel.is_main:
                Path(spec_path).with_suffix(".allreduce.json").write_text(json.dumps({"seconds": t}))
        for cfg in spec["configs"]:
            train(TrainConfig(**cfg), task=task, parallel=parallel)
        finished = True
    finally:
        distributed.shutdown(parallel, sync=finished)
    return 0


def _config(out_dir: Path, method: str, lora: bool, optim: dict, steps: int) -> dict[str, Any]:
    from zotheory.llm.train import TrainConfig

    return TrainConfig(task="synthetic", model=BENCH_MODEL, method=method, steps=steps, out_dir=str(out_dir),
                       lr=1e-3, batch_size=16, eval_every=steps, eval_examples=16, test_examples=16,
                       device="cpu", progress=False, lora=lora, optim=dict(optim),
                       loss="nll").to_dict()  # the loss BENCHMARKS.md's numbers were measured with


def _launch(spec: Path, nproc: int, cwd: Path) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", PYTHONWARNINGS="ignore")
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    mod = ["-m", "zotheory.benchmarks.distributed", "--worker", str(spec)]
    cmd = [sys.executable, *mod] if nproc == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *mod]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark worker ({nproc} process(es)) failed:\n{proc.stderr[-4000:]}")


def smollm2_trainable(lora: bool) -> tuple[int, int]:
    """(trainable numbers, their bytes) of SmolLM2-135M (config only, ``meta`` device)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from zotheory.llm.distributed import gradient_bytes
    from zotheory.llm.models import apply_lora, trainable_parameters

    cfg = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                      num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True,
                      max_position_embeddings=8192)
    with torch.device("meta"):
        model = LlamaForCausalLM(cfg)
        if lora:
            model = apply_lora(model, 8, 16.0, ["q_proj", "v_proj"])
    params = trainable_parameters(model)
    return sum(p.numel() for p in params), gradient_bytes(params)


def run(quick: bool = True) -> pd.DataFrame:
    """Tidy rows: bytes per step (ZO data-parallel vs DDP), their ratio, step times 1 vs 2 processes."""
    from zotheory.llm.distributed import ZO_BYTES_PER_CALL

    steps, warmup = (10, 3) if quick else (20, 5)
    reps = 1 if quick else 3
    names = QUICK_CASES if quick else tuple(c[0] for c in CASES)
    cases = [c for c in CASES if c[0] in names]
    machine = f"{os.cpu_count()} CPU cores (os.cpu_count), gloo on localhost"
    rows: list[dict[str, Any]] = []

    def row(case: str, metric: str, value: float, unit: str, note: str = "") -> None:
        rows.append({"benchmark": BENCHMARK, "case": case, "metric": metric, "value": float(value), "unit": unit,
                     "note": note})

    with tempfile.TemporaryDirectory(prefix="zotheory-bench-ddp-") as tmp:
        root = Path(tmp)
        times: dict[tuple[str, int], list[float]] = {}
        results: dict[str, dict] = {}
        for rep in range(reps):
            for nproc in (1, 2):  # alternate 1, 2, 1, 2, ...
                configs = [_config(root / f"r{rep}-p{nproc}-{name.replace('/', '_')}", method, lora, optim, steps)
                           for name, method, lora, optim in cases]
                spec = root / f"spec-r{rep}-p{nproc}.json"
                spec.write_text(json.dumps({"configs": configs}))
                _launch(spec, nproc, root)
                for (name, *_), cfg in zip(cases, configs):
                    out = Path(cfg["out_dir"])
                    log = pd.read_parquet(out / "log.parquet")
                    times.setdefault((name, nproc), []).append(float(log["step_time"].iloc[warmup:].median()))
                    if nproc == 2:
                        results[name] = json.loads((out / "result.json").read_text())
        latency = statistics.median(json.loads(p.read_text())["seconds"]
                                    for p in root.glob("spec-*-p2.allreduce.json"))
        row("gloo-localhost", "all_reduce_16B_time", latency, "s",
            f"median of 15 x 20 all-reduces of the float64 pair, 2 processes; {machine}")
        for name, method, lora, optim in cases:
            case = f"{BENCH_MODEL}/{name}"
            res = results[name]
            comm = res["parallel"]["communication"]
            d = int(res["trainable_parameters"])
            zo = comm["bytes"].get("train", 0) / steps
            calls = comm["calls"].get("train", 0) / steps
            ddp = d * 4  # fp32 gradients
            row(case, "trainable_parameters", d, "numbers")
            if method == "adam":
                row(case, "ddp_bytes_per_step", comm["bytes"]["train_gradients"] / steps, "B",
                    "measured: our first-order path all-reduces every gradient (fp32), as DDP does")
                row(case, "loss_bytes_per_step", zo, "B", "measured: the loss pair, 16 B")
            else:
                row(case, "zo_all_reduce_calls_per_step", calls, "calls", "measured")
                row(case, "zo_bytes_per_step", zo, "B", "measured: calls x 16 B ([loss*n, n] float64)")
                row(case, "ddp_bytes_per_step", ddp, "B", "sum numel * 4 of the trainable fp32 tensors")
                row(case, "ddp_over_zo_bytes", ddp / zo, "x")
            t1 = statistics.median(times[(name, 1)])
            t2 = statistics.median(times[(name, 2)])
            note = (f"median of {steps - warmup} steps after {warmup} warm-up, median of {reps} alternated "
                    f"run(s); global batch 16; {machine}")
            row(case, "step_time_1proc", t1, "s", note)
            row(case, "step_time_2proc", t2, "s", note)
            row(case, "speedup_2proc", t1 / t2, "x", note)

    for lora in (True, False):
        d, nbytes = smollm2_trainable(lora)
        kind = "lora_r8_qv" if lora else "full"
        for method, calls in (("zo_sgd", 2), ("jaguar_signsgd_k8", 16)):
            case = f"smollm2-135m-shape/{kind}/{method}"
            zo = calls * ZO_BYTES_PER_CALL
            note = "count: config on the meta device; ZO bytes = calls x the measured 16 B per call"
            row(case, "trainable_parameters", d, "numbers", note)
            row(case, "zo_bytes_per_step", zo, "B", note)
            row(case, "ddp_bytes_per_step", nbytes, "B", note)
            row(case, "ddp_over_zo_bytes", nbytes / zo, "x", note)
    return pd.DataFrame(rows, columns=["benchmark", "case", "metric", "value", "unit", "note"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m zotheory.benchmarks.distributed", description=__doc__.split("\n")[0])
    p.add_argument("--full", action="store_true", help="more steps, every case, 3 alternated repetitions")
    p.add_argument("--out", default=None, help="also write the rows to this CSV file")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return _worker(args.worker)
    df = run(quick=not args.full)
    if args.out:
        df.to_csv(args.out, index=False)
    with pd.option_context("display.width", 200, "display.max_colwidth", 60, "display.max_rows", 200):
        print(df.drop(columns=["note"]).to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
