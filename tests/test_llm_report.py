"""``zotheory finetune-report`` (zotheory.llm.report): one row per configuration, where the
report goes, the default loss, and the Python snippets of docs/results.md.

Most run folders here are written the way ``llm/train.py`` writes them (``result.json`` with
``TrainConfig.to_dict()``, ``evals.parquet`` / ``log.parquet`` with its columns) without
training; one test trains tiny-llama for 2 steps to check the report reads real outputs.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pandas as pd
import pytest

from zotheory.integrity import write_checked
from zotheory.llm import report
from zotheory.llm import train as train_mod
from zotheory.llm.train import EVAL_COLUMNS, LOG_COLUMNS, TrainConfig

REPO = Path(__file__).resolve().parent.parent
BASE = dict(task="toy", model="tiny-llama", method="zo_sgd", steps=4, batch_size=16, eval_every=2,
            eval_examples=8, lr=1e-3, device="cpu", progress=False)


def fake_run(root: Path, name: str, *, test: float = 0.5, dev=(0.5, 0.55, 0.6), ran_on: str = "cpu",
             world_size: int = 1, status: str = "done", **kw) -> Path:
    """A run folder as ``train`` leaves it: result.json, evals.parquet, log.parquet (``ran_on``: the
    device the run resolved to, ``result.json``'s ``device``; ``kw``: TrainConfig fields)."""
    config = TrainConfig(**{**BASE, **kw, "out_dir": str(root / name)})
    out = Path(config.out_dir)
    out.mkdir(parents=True)
    calls = 2  # zero-order: 2 forward passes per step
    log = [{"run_id": config.run_id(), "method": config.method, "task": config.task, "model": config.model,
            "seed": config.seed, "step": t, "loss": 0.7, "lr": config.resolved_lr, "forward_passes": calls * t,
            "wall_time": 0.1 * t, "step_time": 0.1, "peak_memory_mb": 100.0, "skipped": False, "segment": 0,
            "override": None}
           for t in range(1, config.steps + 1)]
    steps = [0] + [t for t in range(1, config.steps + 1) if t % config.eval_every == 0]
    evals = [{"run_id": config.run_id(), "step": s, "split": "dev", "accuracy": a, "loss": 0.7, "n": 8,
              "forward_passes": calls * s, "wall_time": 0.1 * s} for s, a in zip(steps, dev)]
    best = max(range(len(evals)), key=lambda i: (evals[i]["accuracy"], -i))
    evals += [{**evals[0], "split": "test", "accuracy": 0.5},
              {**evals[best], "split": "test", "accuracy": test}]
    # every file with its SHA-256 sidecar, as train writes it (the report refuses files without one)
    write_checked(out / "log.parquet", lambda p: pd.DataFrame(log, columns=list(LOG_COLUMNS)).to_parquet(p, index=False))
    write_checked(out / "evals.parquet",
                  lambda p: pd.DataFrame(evals, columns=list(EVAL_COLUMNS)).to_parquet(p, index=False))
    result = {
        "status": status, "error": None, "run_id": config.run_id(), "config": config.to_dict(),
        "lr": config.resolved_lr, "steps_done": config.steps, "zero_shot": {"dev": dev[0], "test": 0.5},
        "best": {"step": evals[best]["step"], "dev_accuracy": evals[best]["accuracy"]}, "test_at_best": test,
        "forward_passes": calls * config.steps, "train_wall_time": 6.0, "total_wall_time": 7.0,
        "peak_memory_mb": 100.0, "peak_memory_kind": "cpu_ru_maxrss", "device": ran_on, "dtype": config.dtype,
        "skipped_steps": [], "trainable_parameters": 10, "versions": {}, "parallel": {"world_size": world_size},
    }
    write_checked(out / "result.json", lambda p: p.write_text(json.dumps(result, indent=2, sort_keys=True)))
    return out


def summary_of(root: Path) -> pd.DataFrame:
    runs, _ = report.collect(root)
    return report.summarise(runs)


# --------------------------------------------------------------------------- pooling


@pytest.mark.parametrize("field, a, b", [
    ("tau", 1e-3, 0.1),
    ("batch_size", 16, 4),
    ("eval_every", 2, 1),
    ("loss", "nll", "classification"),
    ("optim", {}, {"weight_decay": 0.1}),  # a dict: unhashable
    ("steps", 4, 6),
    ("train_examples", None, 10),
])
def test_runs_that_differ_in_one_field_are_separate_rows(tmp_path, field, a, b):
    fake_run(tmp_path, "a0", seed=0, test=0.6, **{field: a})
    fake_run(tmp_path, "a1", seed=1, test=0.7, **{field: b})
    summary = summary_of(tmp_path)
    assert len(summary) == 2 and summary["seeds"].tolist() == [1, 1]
    assert sorted(summary["seed_list"]) == ["0", "1"]
    assert summary["config_id"].nunique() == 2
    table = report.to_markdown(summary)
    header = table.splitlines()[0]
    shown = report.varying_columns(summary)
    assert shown and all(f"| {c} |" in header for c in shown)  # the difference is a column


def test_issue_12_tau_and_batch_size_runs_are_not_pooled(tmp_path):
    """The issue's case: tau 0.1 / batch 4 and tau 1e-3 / batch 16 were reported as '2 seeds'."""
    fake_run(tmp_path, "small", seed=0, tau=0.1, batch_size=4, test=0.9)
    fake_run(tmp_path, "large", seed=1, tau=1e-3, batch_size=16, test=0.5)
    summary = summary_of(tmp_path)
    assert len(summary) == 2 and (summary["seeds"] == 1).all()
    assert set(report.varying_columns(summary)) == {"tau", "batch_size"}
    row = summary[summary["tau"] == 0.1].iloc[0]
    assert row["batch_size"] == 4 and row["test_mean"] == 0.9 and row["seed_list"] == "0"


def test_runs_that_differ_only_in_seed_are_one_row_with_the_seeds_listed(tmp_path):
    # out_dir, resume, progress and checkpoint_every cannot change a run's results; device "auto"
    # that resolved to the CPU is the CPU
    fake_run(tmp_path, "s2", seed=2, test=0.7, device="auto")
    fake_run(tmp_path, "s0", seed=0, test=0.5, checkpoint_every=1, progress=True, device="cpu")
    fake_run(tmp_path, "s1", seed=1, test=0.6, resume=True)
    summary = summary_of(tmp_path)
    assert len(summary) == 1
    row = summary.iloc[0]
    assert row["seeds"] == 3 and row["seed_list"] == "0,1,2" and row["runs"] == 3
    assert row["test_mean"] == pytest.approx(0.6) and row["test_min"] == 0.5 and row["test_max"] == 0.7
    assert row["test_std"] == pytest.approx(0.1)
    assert "| 3 | 0,1,2 |" in report.to_markdown(summary)


def test_lr_none_pools_with_its_resolved_default(tmp_path):
    default = train_mod.DEFAULT_LR["zo_sgd"][0]
    fake_run(tmp_path, "none", seed=0, lr=None)
    fake_run(tmp_path, "explicit", seed=1, lr=default)
    fake_run(tmp_path, "other", seed=2, lr=3 * default)
    summary = summary_of(tmp_path)
    assert sorted(summary["seeds"]) == [1, 2]
    assert summary[summary["lr"] == default].iloc[0]["seed_list"] == "0,1"


def test_fields_a_configuration_does_not_use_do_not_split_it(tmp_path):
    # adam takes no tau; lr_power acts only under lr_schedule="power"; lora_r without LoRA
    fake_run(tmp_path, "a0", seed=0, method="adam", tau=1e-3, lr_power=0.5, lora_r=4)
    fake_run(tmp_path, "a1", seed=1, method="adam", tau=1e-2, lr_power=0.75, lora_r=8)
    summary = summary_of(tmp_path)
    assert len(summary) == 1 and summary.iloc[0]["seed_list"] == "0,1"
    # ... but they do where they act
    fake_run(tmp_path, "p0", seed=0, lr_schedule="power", lr_power=0.5)
    fake_run(tmp_path, "p1", seed=1, lr_schedule="power", lr_power=0.75)
    fake_run(tmp_path, "l0", seed=0, lora=True, lora_r=4)
    fake_run(tmp_path, "l1", seed=1, lora=True, lora_r=8)
    fake_run(tmp_path, "l2", seed=2, lora=True, lora_r=8, lora_targets=["q_proj"])  # a list: unhashable
    summary = summary_of(tmp_path)
    assert len(summary) == 6 and summary["seeds"].sum() == 7


def test_device_type_and_world_size_split_but_the_device_index_does_not(tmp_path):
    fake_run(tmp_path, "cpu", seed=0, ran_on="cpu")
    fake_run(tmp_path, "gpu0", seed=0, ran_on="cuda:0", device="auto")
    fake_run(tmp_path, "gpu1", seed=1, ran_on="cuda:1", device="cuda:1")
    fake_run(tmp_path, "ddp", seed=0, ran_on="cpu", world_size=2)
    summary = summary_of(tmp_path)
    assert len(summary) == 3
    assert sorted(summary["seeds"]) == [1, 1, 2]
    assert set(report.varying_columns(summary)) == {"device", "world_size"}


def test_unfinished_runs_are_left_out_and_config_ids_are_stable(tmp_path):
    fake_run(tmp_path, "done", seed=0)
    fake_run(tmp_path, "stopped", seed=1, status="stopped")
    runs, evals = report.collect(tmp_path)
    assert runs["run"].tolist() == ["done"] and set(evals["run"]) == {"done"}
    key = report.config_key(json.loads((tmp_path / "done" / "result.json").read_text()))
    assert runs["config_id"].iloc[0] == report.config_id(key) == report.config_id(dict(reversed(key.items())))
    assert report.config_id({**key, "batch_size": 16.0}) == report.config_id(key)  # 16 and 16.0: one value
    assert report.config_id({**key, "tau": 0.1}) != report.config_id(key)


def test_runs_saved_before_the_loss_field_read_as_nll(tmp_path):
    out = fake_run(tmp_path, "old", seed=0, loss="nll")
    r = json.loads((out / "result.json").read_text())
    del r["config"]["loss"]
    write_checked(out / "result.json", lambda p: p.write_text(json.dumps(r)))
    fake_run(tmp_path, "new", seed=1, loss="nll")
    fake_run(tmp_path, "cls", seed=2, loss="classification")
    summary = summary_of(tmp_path)
    assert sorted(summary["seed_list"]) == ["0,1", "2"]


# --------------------------------------------------------------------------- table, figure, paths


def test_report_files_table_and_one_curve_per_configuration(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a report written into ./figures would land here, not in the repository
    results = tmp_path / "results"
    for seed in (0, 1):
        fake_run(results, f"a{seed}", seed=seed, tau=1e-3, test=0.5 + 0.1 * seed)
    fake_run(results, "b0", seed=0, tau=0.1, dev=(0.5, 0.7, 0.6))
    out = report.make_report(results)
    figs = results / "figures"
    assert not (tmp_path / "figures").exists()
    assert out["table"] == figs / "llm_report.md" and out["runs"] == 3 and out["rows"] == 2
    assert out["figures"] == [figs / "llm_toy.png"] and (figs / "llm_toy.png").exists()
    table = (figs / "llm_report.md").read_text()
    header = table.splitlines()[0]
    cols = [c.strip() for c in header.strip("|").split("|")]
    assert cols[:8] == list(report.ID_COLUMNS) and "tau" in cols and "batch_size" not in cols
    assert "Every row:" in table and "batch_size=16" in table
    csv = pd.read_csv(figs / "llm_report.csv")
    runs = pd.read_csv(figs / "llm_runs.csv")
    assert set(runs["config_id"]) == set(csv["config_id"])  # a row's id finds its runs
    assert runs.groupby("config_id")["seed"].apply(lambda s: ",".join(map(str, sorted(s)))).to_dict() == \
        dict(zip(csv["config_id"], csv["seed_list"].astype(str)))
    _, evals = report.collect(results)
    curves = report.curves(evals[evals["split"] == "dev"])
    assert len(curves) == 2
    pooled = curves[csv.loc[csv["seeds"] == 2, "config_id"].iloc[0]]
    assert pooled["forward_passes"].tolist() == [0, 4, 8]


def test_cli_writes_beside_the_results_unless_told(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    fake_run(tmp_path / "runs", "a0", seed=0)
    parser = argparse.ArgumentParser(prog="zotheory")
    report.add_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["finetune-report", "--results", "runs"])
    assert args.func(args) == 0
    assert (tmp_path / "runs" / "figures" / "llm_report.md").exists()
    assert not (tmp_path / "figures").exists()  # the committed folder is not touched by default
    assert "1 runs in 1 configurations" in capsys.readouterr().out
    args = parser.parse_args(["finetune-report", "--results", "runs", "--figures", "figures"])
    assert args.func(args) == 0
    assert (tmp_path / "figures" / "llm_report.md").exists()
    args = parser.parse_args(["finetune-report", "--results", "nothing"])
    assert args.func(args) == 2
    capsys.readouterr()
    with pytest.raises(SystemExit):
        parser.parse_args(["finetune-report", "--help"])
    assert "default <results>/figures" in " ".join(capsys.readouterr().out.split())


# --------------------------------------------------------------------------- the default loss


def test_the_default_loss_is_classification():
    assert TrainConfig(task="t", model="tiny-llama", method="zo_sgd", steps=1, out_dir="o").loss == "classification"
    parser = argparse.ArgumentParser(prog="zotheory")
    train_mod.add_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["finetune", "--task", "t", "--model", "tiny-llama", "--method", "zo_sgd",
                              "--steps", "1"])
    assert args.loss == "classification"
    assert train_mod.config_from_args(args).loss == "classification"


# --------------------------------------------------------------------------- real runs


@pytest.mark.usefixtures("one_thread")
@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")
def test_report_on_runs_of_train(tmp_path):
    pytest.importorskip("transformers")
    pytest.importorskip("peft")
    from zotheory.llm.tasks import Example, Task

    words = ("great", "good", "bad", "dull")
    ex = [Example(f"The film was {w}. It was", (" terrible", " great"), int(i % 4 < 2), f"e{i}")
          for i, w in enumerate(words * 2)]
    task = Task("toy", "toy sentiment", {"train": ex, "dev": ex[:4], "test": ex[4:]})
    kw = dict(BASE, steps=2, eval_every=1, batch_size=2, eval_examples=4)
    for name, extra in (("a0", {"seed": 0}), ("a1", {"seed": 1}), ("b0", {"seed": 0, "tau": 0.1})):
        train_mod.train(TrainConfig(**{**kw, **extra, "out_dir": str(tmp_path / name)}), task=task)
    summary = summary_of(tmp_path)
    assert sorted(summary["seed_list"]) == ["0", "0,1"]
    assert report.varying_columns(summary) == ["tau"]
    assert (summary["forward_passes"] == 4).all() and (summary["label"] == "zo_sgd classification-loss").all()


# --------------------------------------------------------------------------- docs/results.md


def python_snippets(path: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", path.read_text(), flags=re.DOTALL | re.MULTILINE)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")
def test_the_python_snippets_of_docs_results_md_run(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    pytest.importorskip("peft")
    snippets = python_snippets(REPO / "docs" / "results.md")
    assert len(snippets) >= 4
    monkeypatch.chdir(tmp_path)  # the snippets write under ./results
    namespace: dict = {"__name__": "docs_results"}
    for i, code in enumerate(snippets):
        exec(compile(code, f"docs/results.md snippet {i + 1}", "exec"), namespace)
    assert not (tmp_path / "figures").exists()

    # every column / key of the files the snippets wrote is documented
    text = (REPO / "docs" / "results.md").read_text()
    prefixes = tuple(re.findall(r"`(\w+_)<\w+>`", text))
    assert {"hp_", "noise_", "problem_", "label_"} <= set(prefixes)

    def undocumented(names):
        return [n for n in names if f"`{n}`" not in text and not n.startswith(prefixes)]

    rates = pd.concat([pd.read_parquet(p) for p in (tmp_path / "results" / "rates").rglob("*.parquet")])
    assert undocumented(rates.columns) == []
    run = tmp_path / "results" / "finetune-mine" / "zo_sgd-s0"
    assert undocumented(pd.read_parquet(run / "log.parquet").columns) == []
    assert undocumented(pd.read_parquet(run / "evals.parquet").columns) == []
    assert undocumented(json.loads((run / "result.json").read_text())) == []
    table = pd.read_csv(tmp_path / "results" / "finetune-mine" / "figures" / "llm_report.csv")
    assert undocumented(c for c in table.columns if c not in report._config_columns(table)) == []
