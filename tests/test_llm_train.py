"""Scoring, the training loop, checkpoints and exact resume (zotheory.llm.scoring / train / models).

Tiny random-weight models built from configs and a small in-memory task: no downloads.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import pandas as pd
import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("peft")

from zotheory.llm import train as train_mod  # noqa: E402
from zotheory.llm.models import (  # noqa: E402
    apply_lora,
    load_model,
    resolve_device,
    tiny_model,
    trainable_parameters,
)
from zotheory.llm.scoring import accuracy, candidate_loss, encode, evaluate, loss_closure, score  # noqa: E402
from zotheory.llm.train import NonFiniteLossError, TrainConfig, add_cli, train  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning"),
              pytest.mark.usefixtures("one_thread")]


from examples import Ex, NanAt as _NanAt, ToyTask  # noqa: E402 (test_cuda imports ToyTask from here)


def config(tmp_path, **kw) -> TrainConfig:
    base = dict(task="toy", model="tiny-opt", method="zo_sgd", steps=6, out_dir=str(tmp_path / "run"),
                batch_size=4, eval_every=2, eval_examples=8, device="cpu", progress=False, lr=1e-2)
    base.update(kw)
    return TrainConfig(**base)


# --------------------------------------------------------------------------- scoring


def manual_scores(model, tok, ex, masked):
    """Score every candidate by hand: unpadded forward pass, log_softmax, mean of the candidate's tokens."""
    ctx = tok(ex.context, add_special_tokens=False)["input_ids"]
    prefix = tok("a")["input_ids"][: len(tok("a")["input_ids"]) - len(tok("a", add_special_tokens=False)["input_ids"])]
    out = []
    for c in ex.candidates:
        full = tok(ex.context + c, add_special_tokens=False)["input_ids"]
        cand = full[len(ctx):]
        with torch.no_grad():
            if masked:
                ids = tok(ex.context)["input_ids"]  # <s> ctx </s>
                ids = ids[:-1] + [tok.mask_token_id] * len(cand) + ids[-1:]
                logp = model(input_ids=torch.tensor([ids])).logits[0].float().log_softmax(-1)
                start = 1 + len(ctx)
                vals = [logp[start + j, t] for j, t in enumerate(cand)]
            else:
                ids = prefix + full
                logp = model(input_ids=torch.tensor([ids])).logits[0].float().log_softmax(-1)
                start = len(prefix) + len(ctx)
                vals = [logp[start - 1 + j, t] for j, t in enumerate(cand)]
        out.append(torch.stack(vals).mean())
    return torch.stack(out)


EXAMPLES = [
    Ex("The movie was great. It was", (" terrible", " great"), 1),
    Ex("a dull plot; the cast is bad. It was", (" terrible", " great", " fine film"), 0),
    Ex("He dropped a hammer on his foot. What was the cause?", (" The man broke his toe.", " yes"), 0),
]


@pytest.mark.parametrize("arch", ["llama", "opt", "roberta"])
def test_scores_equal_a_manual_log_softmax(arch):
    model, tok = tiny_model(arch, seed=1)
    s = score(model, tok, EXAMPLES, batch_size=2)
    assert s.shape == (3, 3) and s.dtype == torch.float32
    assert torch.isinf(s[0, 2]) and torch.isinf(s[2, 2])
    for i, ex in enumerate(EXAMPLES):
        expected = manual_scores(model, tok, ex, masked=arch == "roberta")
        torch.testing.assert_close(s[i, : len(ex.candidates)], expected, rtol=1e-5, atol=1e-5)
    labels = torch.tensor([ex.label for ex in EXAMPLES])
    acc = (s.argmax(1) == labels).double().mean().item()
    assert accuracy(model, tok, EXAMPLES) == pytest.approx(acc)
    loss = candidate_loss(model, tok, EXAMPLES)
    torch.testing.assert_close(loss, -s[torch.arange(3), labels].mean(), rtol=1e-5, atol=1e-6)
    ev = evaluate(model, tok, EXAMPLES)
    assert ev["n"] == 3 and ev["loss"] == pytest.approx(loss.item(), rel=1e-5)


def test_single_token_candidates_share_one_row_and_padding_does_not_matter():
    model, tok = tiny_model("llama", seed=2)
    enc = encode(tok, EXAMPLES[:1], masked=False)
    assert len(enc.rows) == 1  # " terrible" and " great" are single tokens after the same context
    one_by_one = torch.cat([score(model, tok, [ex])[:, :3] if len(ex.candidates) == 3 else
                            torch.cat([score(model, tok, [ex]), torch.full((1, 1), float("-inf"))], 1)
                            for ex in EXAMPLES])
    torch.testing.assert_close(score(model, tok, EXAMPLES, batch_size=None), one_by_one, rtol=1e-5, atol=1e-5)


def test_candidate_loss_gradients_only_when_asked():
    model, tok = tiny_model("opt", seed=0)
    assert not candidate_loss(model, tok, EXAMPLES).requires_grad
    loss = loss_closure(model, tok, EXAMPLES, grad=True)()
    loss.backward()
    assert all(p.grad is not None for p in trainable_parameters(model))


def test_scoring_errors_are_clear():
    model, tok = tiny_model("llama")
    with pytest.raises(ValueError, match="label"):
        score(model, tok, [Ex("It was", (" great",), 3)])
    with pytest.raises(ValueError, match="no tokens past the context"):
        score(model, tok, [Ex("It was", ("",), 0)])
    with pytest.raises(ValueError, match="empty"):
        candidate_loss(model, tok, [])


def test_tiny_models_are_deterministic_and_lora_targets_per_family():
    a, _ = tiny_model("opt", seed=3)
    b, _ = tiny_model("opt", seed=3)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    state = torch.get_rng_state()
    lm = apply_lora(a, seed=5)
    assert torch.equal(state, torch.get_rng_state())  # the caller's RNG is untouched
    lora_a = [p for n, p in lm.named_parameters() if "lora_A" in n]
    lora_b = [p for n, p in apply_lora(b, seed=5).named_parameters() if "lora_A" in n]
    assert all(torch.equal(p, q) for p, q in zip(lora_a, lora_b))
    names = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n, p in lm.named_parameters() if p.requires_grad}
    assert names == {"q_proj", "v_proj"}
    r, _ = tiny_model("roberta")
    names = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n, p in apply_lora(r).named_parameters() if p.requires_grad}
    assert names == {"query", "value"}
    m, _ = load_model("tiny-llama", dtype="bf16", device="auto")
    assert next(m.parameters()).dtype == torch.bfloat16
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="arch"):
        tiny_model("gpt9")


# --------------------------------------------------------------------------- config


def test_config_validation_names_the_key(tmp_path):
    with pytest.raises(ValueError, match=r"unknown TrainConfig key\(s\) \['stepz'\]"):
        TrainConfig.from_dict({"task": "t", "model": "m", "method": "zo_sgd", "steps": 1, "out_dir": "o",
                               "stepz": 3})
    with pytest.raises(ValueError, match="missing required key"):
        TrainConfig.from_dict({"task": "t"})
    for key, value, pattern in [
        ("steps", 0, "TrainConfig.steps"),
        ("batch_size", 1.5, "TrainConfig.batch_size"),
        ("lr", -1.0, "TrainConfig.lr"),
        ("tau", 0.0, "TrainConfig.tau"),
        ("method", "sgd", "TrainConfig.method"),
        ("dtype", "int8", "TrainConfig.dtype"),
        ("device", "tpu", "TrainConfig.device"),
        ("lr_schedule", "cosine", "TrainConfig.lr_schedule"),
        ("eval_examples", 0, "TrainConfig.eval_examples"),
        ("lora", "yes", "TrainConfig.lora"),
        ("optim", {"betta": 0.9}, r"TrainConfig.optim has unknown key\(s\) \['betta'\]"),
        ("optim", {"tau": 0.1}, r"TrainConfig.optim has unknown key"),
    ]:
        with pytest.raises(ValueError, match=pattern):
            config(tmp_path, **{key: value})
    c = config(tmp_path, method="jaguar_signsgd", optim={"coords_per_step": 2}, lr=None, lora=True)
    assert c.resolved_lr == train_mod.DEFAULT_LR["jaguar_signsgd"][1]
    assert TrainConfig.from_dict(c.to_dict()) == c


def test_learning_rate_schedules(tmp_path):
    c = config(tmp_path, lr=0.1, steps=10)
    assert train_mod.scheduled_lr(c, 7) == 0.1
    lin = dataclasses.replace(c, lr_schedule="linear")
    assert train_mod.scheduled_lr(lin, 1) == 0.1 and train_mod.scheduled_lr(lin, 10) == pytest.approx(0.01)
    pw = dataclasses.replace(c, lr_schedule="power", lr_power=0.75)
    assert train_mod.scheduled_lr(pw, 16) == pytest.approx(0.1 / 8)


# --------------------------------------------------------------------------- the loop


def test_train_writes_tidy_outputs_and_selects_on_dev(tmp_path):
    out = train(config(tmp_path, method="jaguar_signsgd", optim={"coords_per_step": 4}, lora=True), task=ToyTask())
    log = pd.read_parquet(out / "log.parquet")
    assert list(log.columns) == list(train_mod.LOG_COLUMNS)
    assert log["step"].tolist() == [1, 2, 3, 4, 5, 6]
    assert log["forward_passes"].tolist() == [8, 16, 24, 32, 40, 48]
    assert (log["wall_time"].diff().dropna() > 0).all() and (log["peak_memory_mb"] > 0).all()
    assert not log["skipped"].any()
    evals = pd.read_parquet(out / "evals.parquet")
    dev = evals[evals.split == "dev"]
    assert dev["step"].tolist() == [0, 2, 4, 6]
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "done" and result["forward_passes"] == 48
    best_step = int(dev.loc[dev["accuracy"].idxmax(), "step"])  # first maximum
    assert result["best"] == {"step": best_step, "dev_accuracy": dev["accuracy"].max()}
    tests = evals[evals.split == "test"]
    assert tests["step"].tolist() == [0, best_step]
    assert result["test_at_best"] == tests["accuracy"].iloc[-1]
    assert result["zero_shot"]["test"] == tests["accuracy"].iloc[0]
    assert result["peak_memory_kind"] == "cpu_ru_maxrss" and result["trainable_parameters"] > 0
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left
    # a finished run is left as it is (issue 18; tests/test_finetune_integrity.py checks the bytes)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert train(config(tmp_path, method="jaguar_signsgd", optim={"coords_per_step": 4}, lora=True),
                 task=ToyTask()) == out
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def _checkpoint(out):
    return torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)


def _assert_same_state(a, b):
    assert a["step"] == b["step"]
    for n in a["trainable"]:
        assert torch.equal(a["trainable"][n], b["trainable"][n]), n
    oa, ob = a["optimizer"], b["optimizer"]
    assert torch.equal(oa["generator"], ob["generator"])
    assert (oa["steps"], oa["oracle_calls"]) == (ob["steps"], ob["oracle_calls"])
    for sa, sb in zip(oa["state"].values(), ob["state"].values(), strict=True):
        for k, v in sa.items():
            assert torch.equal(v, sb[k]) if isinstance(v, torch.Tensor) else v == sb[k]
    assert torch.equal(a["data"]["generator"], b["data"]["generator"])
    assert a["data"]["perm"] == b["data"]["perm"] and a["data"]["pos"] == b["data"]["pos"]
    for n in a["best"]["weights"]:
        assert torch.equal(a["best"]["weights"][n], b["best"]["weights"][n])


TIMING = ["wall_time", "step_time", "peak_memory_mb"]


@pytest.mark.parametrize(
    "method, lora, model, optim_hp",
    [
        ("jaguar_signsgd", True, "tiny-opt", {"coords_per_step": 3, "beta": 0.5}),
        ("zo_adamm", False, "tiny-llama", {}),
        ("adam", True, "tiny-roberta", {}),
    ],
)
def test_checkpoint_and_resume_continue_bitwise(tmp_path, method, lora, model, optim_hp):
    kw = dict(method=method, lora=lora, model=model, optim=optim_hp, steps=7, eval_every=2, checkpoint_every=3,
              train_examples=10, lr=1e-2)  # 10 examples, batch 4: the resume falls mid-epoch
    full = train(config(tmp_path / "a", **kw), task=ToyTask())
    part = config(tmp_path / "b", **kw)
    out = train(part, task=ToyTask(), stop_after=4)
    assert json.loads((out / "result.json").read_text())["status"] == "stopped"
    assert _checkpoint(out)["step"] == 4
    train(dataclasses.replace(part, resume=True), task=ToyTask())
    _assert_same_state(_checkpoint(full), _checkpoint(out))
    for name, drop in (("log.parquet", TIMING), ("evals.parquet", ["wall_time"])):
        a = pd.read_parquet(full / name).drop(columns=drop)
        b = pd.read_parquet(out / name).drop(columns=drop)
        pd.testing.assert_frame_equal(a, b, check_exact=True)
    ra, rb = (json.loads((d / "result.json").read_text()) for d in (full, out))
    for key in ("zero_shot", "best", "test_at_best", "forward_passes", "steps_done", "status"):
        assert ra[key] == rb[key], key


def test_resume_refuses_another_config(tmp_path):
    c = config(tmp_path, steps=4)
    train(c, task=ToyTask(), stop_after=2)
    with pytest.raises(ValueError, match=r"differs from the checkpoint's in \['lr'\]"):
        train(dataclasses.replace(c, lr=0.5, resume=True), task=ToyTask())
    out = train(dataclasses.replace(c, steps=5, resume=True), task=ToyTask())  # a longer run is fine
    assert json.loads((out / "result.json").read_text())["steps_done"] == 5


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    import zotheory.llm.scoring as scoring

    monkeypatch.setattr(scoring, "loss_closure", _NanAt(scoring.loss_closure, {3}))
    c = config(tmp_path, checkpoint_every=2)
    with pytest.raises(NonFiniteLossError, match=r"step 3 .*checkpoint.pt \(step 2\)"):
        train(c, task=ToyTask())
    out = tmp_path / "run"
    assert _checkpoint(out)["step"] == 2
    assert pd.read_parquet(out / "log.parquet")["step"].tolist() == [1, 2]
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "failed" and "step 3" in result["error"]


def test_skip_nonfinite_records_the_skipped_step(tmp_path, monkeypatch):
    import zotheory.llm.scoring as scoring

    monkeypatch.setattr(scoring, "loss_closure", _NanAt(scoring.loss_closure, {2, 5}))
    out = train(config(tmp_path, method="jaguar_muon", optim={"coords_per_step": 2}, skip_nonfinite=True,
                       max_skipped_fraction=0.5), task=ToyTask())  # 2 of 6 > the default 0.1 (issue 18)
    log = pd.read_parquet(out / "log.parquet")
    assert log["skipped"].tolist() == [False, True, False, False, True, False]
    assert log["loss"].isna().tolist() == log["skipped"].tolist()
    result = json.loads((out / "result.json").read_text())
    assert result["skipped_steps"] == [2, 5] and result["status"] == "done"


def test_cli_finetune(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(train_mod, "_load_task", lambda cfg: ToyTask())
    parser = argparse.ArgumentParser(prog="zotheory")
    add_cli(parser.add_subparsers(dest="command"))
    out = tmp_path / "cli"
    args = parser.parse_args(["finetune", "--task", "toy", "--model", "tiny-llama", "--method", "jaguar_signsgd",
                              "--steps", "2", "--lora", "--batch-size", "2", "--eval-every", "1",
                              "--eval-examples", "4", "--opt", "coords_per_step=2", "--opt", "mode=block",
                              "--out-dir", str(out), "--no-progress", "--device", "auto"])
    assert args.func(args) == 0
    assert "best dev" in capsys.readouterr().out
    result = json.loads((out / "result.json").read_text())
    assert result["config"]["optim"] == {"coords_per_step": 2, "mode": "block"} and result["config"]["lora"]
    assert result["forward_passes"] == 4  # block mode: 2 forward passes per step
    bad = parser.parse_args(["finetune", "--task", "toy", "--model", "tiny-llama", "--method", "zo_sgd",
                             "--steps", "2", "--opt", "betta=1", "--out-dir", str(tmp_path / "bad")])
    assert bad.func(bad) == 2
    assert "betta" in capsys.readouterr().err


def test_finetune_report_summarises_saved_runs(tmp_path):
    from zotheory.llm import report

    for seed in (0, 1):
        train(config(tmp_path, seed=seed, out_dir=str(tmp_path / "runs" / f"s{seed}")), task=ToyTask())
    lr = json.loads((tmp_path / "runs" / "s0" / "result.json").read_text())["lr"]
    train(config(tmp_path, seed=0, lr=3 * lr, out_dir=str(tmp_path / "runs" / "other-lr")), task=ToyTask())
    out = report.make_report(tmp_path / "runs", tmp_path / "fig")
    runs, _ = report.collect(tmp_path / "runs")
    summary = report.summarise(runs)
    assert out["runs"] == 3 and len(summary) == 2  # a step size of its own is a row of its own
    row = summary[summary["lr"] == lr].iloc[0]
    assert row["seeds"] == 2 and row["forward_passes"] == 12
    assert row["test_mean"] == pytest.approx(runs[runs["lr"] == lr]["test_at_best"].mean())
    assert summary[summary["lr"] == 3 * lr].iloc[0]["seeds"] == 1
    assert (tmp_path / "fig" / "llm_toy.png").exists()
    assert "| toy | zo_sgd classification-loss |" in (tmp_path / "fig" / "llm_report.md").read_text()
    with pytest.raises(FileNotFoundError, match="no finished fine-tuning runs"):
        report.make_report(tmp_path / "nothing", tmp_path / "fig2")


def test_classification_loss_is_cross_entropy_over_candidate_scores():
    from zotheory.llm.models import load_model
    from zotheory.llm.scoring import loss_closure, score

    model, tok = load_model("tiny-llama", dtype=torch.float32, device="cpu", seed=0)
    examples = ToyTask().split("train")[:6]
    s = score(model, tok, examples)
    labels = torch.tensor([ex.label for ex in examples])
    want = torch.nn.functional.cross_entropy(s, labels)
    got = loss_closure(model, tok, examples, loss="classification")()
    assert torch.allclose(got, want, atol=1e-6)
    nll = loss_closure(model, tok, examples, loss="nll")()
    assert torch.allclose(nll, -s[torch.arange(6), labels].mean(), atol=1e-6)
    with pytest.raises(ValueError, match="loss must be one of"):
        loss_closure(model, tok, examples, loss="hinge")


@pytest.mark.parametrize("method", sorted(train_mod.METHODS))
def test_every_method_trains_through_the_loop(tmp_path, method):
    """The training loop runs every registry algorithm (LeZO gets the parameter names, Forward-Grad a
    functional closure) and counts its forward passes."""
    from zotheory.algorithms import ALGORITHMS

    hp = {"coords_per_step": 4} if method in ("jaguar_signsgd", "jaguar_muon") else {}
    out = train(config(tmp_path, method=method, model="tiny-llama", lora=True, steps=2, eval_every=2,
                       optim=hp), task=ToyTask())
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "done" and result["steps_done"] == 2
    calls = ALGORITHMS[method].calls(hp)
    if method == "acc_zom":
        calls_total = 2 + 4  # 2 at the first step, 4 after
    else:
        calls_total = 2 * calls
    assert result["forward_passes"] == calls_total
