"""`zotheory finetune` / `zotheory assets`: what a user can get wrong (issue 12).

Every bad command exits with code 2 and ONE stderr line, ``zotheory <command>: error: ...``,
naming the bad thing and the fix, without a traceback; inputs are checked before a run
folder exists and a failed run leaves no empty folder; nothing is downloaded without
``--fetch``; ``assets list`` shows download sizes; contexts longer than a model's positions are
truncated from the left. Tiny random models, a cache in ``tmp_path``; ``assets.fetch`` and
``assets._download`` are replaced so that nothing can be downloaded.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("peft")

from zotheory.cli import main  # noqa: E402
from zotheory.llm import assets  # noqa: E402
from zotheory.integrity import write_checked  # noqa: E402
from zotheory.llm import train as train_mod  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning"),
              pytest.mark.usefixtures("one_thread")]


def _no_download(*args, **kwargs):
    raise AssertionError(f"a download was attempted: {args} {kwargs}")


@pytest.fixture
def env(tmp_path, monkeypatch):
    """An empty asset cache in tmp_path, cwd = tmp_path, no way to download anything."""
    monkeypatch.setenv("ZOTHEORY_CACHE", str(tmp_path / "cache"))
    for var in ("ZOTHEORY_NO_FETCH", "ZOTHEORY_DEBUG", "WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(assets, "fetch", _no_download)
    monkeypatch.setattr(assets, "_download", _no_download)
    return tmp_path


from examples import run_main as run  # noqa: E402


def finetune(*extra, task="sentiment", model="tiny-llama", method="zo_sgd", out=None):
    argv = ["finetune", "--task", task, "--model", model, "--method", method, "--steps", "1",
            "--batch-size", "2", "--eval-examples", "4", "--test-examples", "4", "--no-progress",
            "--device", "cpu", *extra]
    return argv + (["--out-dir", out] if out is not None else [])


from examples import Ex  # noqa: E402


class ToyTask:
    def __init__(self, context="The film was great. It was", n=6):
        self.examples = [Ex(context, (" terrible", " great"), i % 2, f"e{i}") for i in range(n)]

    def split(self, name):
        return list(self.examples)


def _write_sentiment_asset() -> Path:
    """A complete (manifest-checked) rotten-tomatoes asset of 40 sentences in the cache."""
    a = assets.ASSETS["rotten-tomatoes"]
    d = a.path()
    d.mkdir(parents=True)
    lines = [f"{k}\t{(1.5 if k % 2 else -1.5)}\tThe film {k} is {'great' if k % 2 else 'dull'}." for k in range(1, 41)]
    (d / "movieReviewSnippets_GroundTruth.txt").write_text("\n".join(lines) + "\n")
    assets._write_manifest(a, d, progress=False)
    assert assets.product_status("rotten-tomatoes") is None
    return d


# --------------------------------------------------------------------------- the bad commands


def _cuda_absent(mp, tmp):
    mp.setattr(torch.cuda, "is_available", lambda: False)
    mp.setattr(torch.cuda, "device_count", lambda: 0)


def _one_gpu(mp, tmp):
    mp.setattr(torch.cuda, "is_available", lambda: True)
    mp.setattr(torch.cuda, "device_count", lambda: 1)


def _toy_task(mp, tmp):
    mp.setattr(train_mod, "_load_task", lambda cfg: ToyTask())


def _model_dir_without_config(mp, tmp):
    (tmp / "empty-model").mkdir()


def _out_is_a_file(mp, tmp):
    _toy_task(mp, tmp)
    (tmp / "taken").write_text("a file, not a folder\n")


def _read_only_parent(mp, tmp):
    _toy_task(mp, tmp)
    ro = tmp / "read-only"
    ro.mkdir()
    ro.chmod(0o555)
    if os.geteuid() == 0:  # root ignores permission bits: make access() tell the truth about this folder
        real = os.access
        mp.setattr(os, "access", lambda p, mode, *a, **k: False if Path(p) == ro else real(p, mode, *a, **k))


def _run_with_checkpoint(content):
    def setup(mp, tmp):
        _toy_task(mp, tmp)
        d = tmp / "old-run"
        d.mkdir()
        if callable(content):
            content(d / "checkpoint.pt")
        else:
            (d / "checkpoint.pt").write_bytes(content)
    return setup


def _torch_save_wrong_structure(path):
    cfg = train_mod.TrainConfig(task="toy", model="tiny-llama", method="zo_sgd", steps=1, out_dir="old-run",
                                batch_size=2, eval_examples=4, test_examples=4, device="cpu", progress=False)
    # with a matching checksum file (issue 18): the structure check behind the checksum is what is tested
    write_checked(path, lambda p: torch.save({"format": 1, "config": cfg.to_dict(), "step": 1}, p))  # no weights, ...


def _truncated_zip(path):
    torch.save({"format": 1, "weights": torch.zeros(1000)}, path)
    data = path.read_bytes()
    write_checked(path, lambda p: p.write_bytes(data[: len(data) // 2]))  # checksum matches: torch.load fails


FRESH = "fresh-run"  # the --out-dir of the cases below that must not create it

# (id, argv, setup, what must be in the one line: the bad thing and the fix)
CASES = [
    ("unknown-method", finetune(method="mezzo", out=FRESH), None, ["mezzo", "--method", "--help"]),
    ("missing-argument", ["finetune", "--task", "copa"], None, ["--model", "--help"]),
    ("unknown-task", finetune(task="sst9", out=FRESH), None, ["'sst9'", "sentiment", "--task"]),
    ("unknown-model-name", finetune(model="gpt-17", out=FRESH), None, ["'gpt-17'", "tiny-llama", "local"]),
    ("unknown-tiny-model", finetune(model="tiny-gpt9", out=FRESH), None, ["'tiny-gpt9'", "tiny-opt"]),
    ("unknown-model-path", finetune(model="no/such/dir", out=FRESH), None, ["no/such/dir", "local model directory"]),
    ("model-dir-without-config", finetune(model="empty-model", out=FRESH), _model_dir_without_config,
     ["empty-model", "config.json"]),
    ("missing-model-asset", finetune(model="smollm2-135m", out=FRESH), None,
     ["'smollm2-135m'", "`zotheory assets fetch smollm2-135m`", "--fetch"]),
    ("missing-data-asset", finetune(task="sentiment", out=FRESH), None,
     ["'rotten-tomatoes'", "`zotheory assets fetch rotten-tomatoes`", "--fetch"]),
    ("missing-bigbench", finetune(task="winogrande", out=FRESH), None,
     ["'bigbench'", "`zotheory assets fetch bigbench`", "360.1 MB download", "--fetch"]),
    ("cuda-absent", finetune(task="toy", out=FRESH) + ["--device", "cuda"], _cuda_absent,
     ["'cuda'", "CUDA is not available", "--device cpu"]),
    ("cuda-index-absent", finetune(task="toy", out=FRESH) + ["--device", "cuda:1"], _cuda_absent,
     ["'cuda:1'", "--device cpu"]),
    ("cuda-index-beyond-count", finetune(task="toy", out=FRESH) + ["--device", "cuda:3"], _one_gpu,
     ["'cuda:3'", "only 1 CUDA device (cuda:0)", "--device cpu"]),
    ("out-dir-is-a-file", finetune(task="toy", out="taken"), _out_is_a_file, ["taken", "not a directory", "--out-dir"]),
    ("out-dir-under-a-file", finetune(task="toy", out="taken/run"), _out_is_a_file,
     ["taken/run", "is a file", "--out-dir"]),
    ("out-dir-not-writable", finetune(task="toy", out="read-only/run"), _read_only_parent,
     ["read-only/run", "not writable", "--out-dir"]),
    ("resume-text-checkpoint", finetune("--resume", task="toy", out="old-run"),
     _run_with_checkpoint(b"this is not a checkpoint\n"), ["old-run/checkpoint.pt", "Delete the run folder", "this run only"]),
    ("resume-empty-checkpoint", finetune("--resume", task="toy", out="old-run"),
     _run_with_checkpoint(b""), ["old-run/checkpoint.pt", "Delete the run folder", "this run only"]),
    ("resume-truncated-checkpoint", finetune("--resume", task="toy", out="old-run"),
     _run_with_checkpoint(_truncated_zip), ["old-run/checkpoint.pt", "cannot read checkpoint", "this run only"]),
    ("resume-checkpoint-wrong-structure", finetune("--resume", task="toy", out="old-run"),
     _run_with_checkpoint(_torch_save_wrong_structure), ["old-run/checkpoint.pt", "trainable", "this run only"]),
    ("existing-run-without-resume", finetune(task="toy", out="old-run"),
     _run_with_checkpoint(b"whatever"), ["old-run", "already holds a run", "--resume"]),
    ("assets-fetch-unknown", ["assets", "fetch", "smollm3"], None, ["'smollm3'", "valid"]),
    ("assets-without-action", ["assets"], None, ["ACTION", "--help"]),
]


@pytest.mark.parametrize("argv, setup, wanted", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_bad_command_is_one_line_and_exit_2(env, monkeypatch, capsys, argv, setup, wanted):
    if setup is not None:
        setup(monkeypatch, env)
    before = sorted(p.relative_to(env) for p in env.rglob("*"))
    code, out, err = run(argv, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (code, err)
    assert "Traceback" not in out + err
    assert len(lines) == 1, err
    assert re.match(r"zotheory [a-z\- ]+: error: ", lines[0]), lines[0]
    for text in wanted:
        assert text in lines[0], (text, lines[0])
    assert not (env / FRESH).exists()  # inputs are checked before a run folder is created
    assert not (env / "results").exists()
    assert sorted(p.relative_to(env) for p in env.rglob("*")) == before  # nothing created, nothing deleted


def test_debug_shows_the_traceback(env, monkeypatch):
    monkeypatch.setenv("ZOTHEORY_DEBUG", "1")
    with pytest.raises(ValueError, match="sst9"):
        main(finetune(task="sst9"))


# --------------------------------------------------------------------------- run folders


class EmptyTrainSplit(ToyTask):
    def split(self, name):
        return [] if name == "train" else super().split(name)


def test_a_failed_run_leaves_no_empty_run_folder(env, monkeypatch, capsys):
    """The inputs pass the checks, the run fails inside the loop (an empty train split) before
    writing anything: the folder it created, and the parents it created, are gone again; a folder
    that existed before is kept, with what it held."""
    monkeypatch.setattr(train_mod, "_load_task", lambda cfg: EmptyTrainSplit())
    code, _, err = run(finetune(task="toy", out="runs/deep/a"), capsys)
    assert code == 2 and "'train' split is empty" in err and len(err.strip().splitlines()) == 1
    assert not (env / "runs").exists()

    (env / "mine").mkdir()
    (env / "mine" / "notes.txt").write_text("keep me")
    code, _, _ = run(finetune(task="toy", out="mine/a"), capsys)
    assert code == 2
    assert sorted(p.name for p in (env / "mine").iterdir()) == ["notes.txt"]
    (env / "existing").mkdir()
    code, _, _ = run(finetune(task="toy", out="existing"), capsys)
    assert code == 2 and (env / "existing").is_dir()  # not created by the run: left alone


def test_a_good_run_still_writes_its_folder(env, monkeypatch, capsys):
    monkeypatch.setattr(train_mod, "_load_task", lambda cfg: ToyTask())
    code, out, err = run(finetune(task="toy", out="runs/ok"), capsys)
    assert code == 0, err
    assert json.loads((env / "runs" / "ok" / "result.json").read_text())["status"] == "done"


# --------------------------------------------------------------------------- downloads only when asked


def test_finetune_downloads_nothing_without_fetch(env, monkeypatch, capsys):
    calls = []

    def fake_fetch(name, **kwargs):
        calls.append(name)
        return _write_sentiment_asset()

    monkeypatch.setattr(assets, "fetch", fake_fetch)
    code, _, err = run(finetune(task="sentiment", out="run"), capsys)
    assert code == 2 and calls == []
    assert "`zotheory assets fetch rotten-tomatoes`" in err and "--fetch" in err
    assert not (env / "run").exists() and not (env / "cache" / "data").exists()

    code, out, err = run(finetune("--fetch", "--train-examples", "4", task="sentiment", out="run"), capsys)
    assert code == 0, err
    assert calls == ["rotten-tomatoes"]  # asked for: fetched once, before the run
    assert json.loads((env / "run" / "result.json").read_text())["status"] == "done"


def test_train_refuses_a_missing_asset_unless_fetch(env, monkeypatch):
    calls = []
    monkeypatch.setattr(assets, "fetch", lambda name, **kw: calls.append(name) or _write_sentiment_asset())
    cfg = train_mod.TrainConfig(task="sentiment", model="tiny-llama", method="zo_sgd", steps=1, out_dir="lib-run",
                                batch_size=2, eval_examples=4, test_examples=4, train_examples=4, device="cpu",
                                progress=False)
    with pytest.raises(assets.AssetMissingError, match="zotheory assets fetch rotten-tomatoes"):
        train_mod.train(cfg)
    assert calls == [] and not (env / "lib-run").exists()
    train_mod.train(cfg, fetch=True)
    assert calls == ["rotten-tomatoes"]


# --------------------------------------------------------------------------- assets list


def _bytes(text: str) -> float:
    value, unit = text.lstrip("~").split()
    return float(value) * {"B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9}[unit]


def test_assets_list_shows_the_download_size(env, capsys):
    code, out, err = run(["assets", "list"], capsys)
    assert code == 0, err
    lines = out.splitlines()
    header = lines[0]
    assert "DOWNLOAD" in header and "ON DISK" in header
    start = {h: header.index(h) for h in ("DOWNLOAD", "ON DISK", "STATUS")}
    for name, asset in assets.ASSETS.items():
        line = next(line for line in lines if line.startswith(name + " "))
        download = line[start["DOWNLOAD"]:start["ON DISK"]].strip()
        disk = line[start["ON DISK"]:start["STATUS"]].strip()
        assert abs(_bytes(download) - asset.download_size()) <= 0.05e6, (name, download)
        assert download == assets._human(asset.download_size())
        assert disk.startswith("~") and "not cached" in line
    big = next(line for line in lines if line.startswith("bigbench "))
    download = big[start["DOWNLOAD"]:start["ON DISK"]].strip()
    # the archive (358,249,635 bytes) plus the pinned pip wheel; not the ~0.7 MB it leaves on disk
    assert 358e6 < _bytes(download) < 361e6
    assert _bytes(big[start["ON DISK"]:start["STATUS"]].strip()) < 1e6
    assert "exact" in out


# --------------------------------------------------------------------------- long inputs


LONG = " ".join(["The movie was great and the acting was good, but the plot was terrible."] * 12) + " It was"


@pytest.mark.parametrize("arch, limit", [("opt", 128), ("roberta", 129)])
def test_long_inputs_are_truncated_from_the_left(arch, limit, caplog, monkeypatch):
    from zotheory.llm import scoring
    from zotheory.llm.models import is_masked_lm, tiny_model

    monkeypatch.setattr(scoring, "_TRUNCATED", [0])  # the count starts here (it logs at 1, 2, 4, ...)

    model, tok = tiny_model(arch, seed=0)
    assert scoring.max_positions(model) == limit
    with torch.no_grad():  # the limit is the model's: one more position fails
        model(input_ids=torch.full((1, limit), 5))
        with pytest.raises((IndexError, RuntimeError)):
            model(input_ids=torch.full((1, limit + 1), 5))

    examples = [Ex(LONG, (" terrible", " great fine film"), 1), Ex("Short. It was", (" terrible", " great"), 0)]
    assert len(tok(LONG)["input_ids"]) > 2 * limit
    with caplog.at_level(logging.WARNING, logger="zotheory.llm.scoring"):
        s = scoring.score(model, tok, examples)
    assert torch.isfinite(s).all()
    assert scoring.truncation_count() == 1  # the long example, once
    assert any("truncated 1 of 2 examples from the left" in r.getMessage() for r in caplog.records)

    masked = is_masked_lm(model)
    enc = scoring.encode(tok, examples, masked=masked, max_length=limit)
    assert enc.truncated == [0] and max(len(r) for r in enc.rows) == limit
    prefix, suffix = scoring._special_wrap(tok)
    ctx = tok(LONG, add_special_tokens=False)["input_ids"]
    for c, cand_text in enumerate(examples[0].candidates):
        full = tok(LONG + cand_text, add_special_tokens=False)["input_ids"]
        cand = full[len(ctx):]
        if masked:  # <s> + the END of the context + masks + </s>
            row = tuple(prefix + ctx[len(ctx) - (limit - len(prefix) - len(cand) - len(suffix)):]
                        + [tok.mask_token_id] * len(cand) + suffix)
        else:  # <s> + the END of the context + the candidate, less its last token
            row = tuple((prefix + full[len(ctx) - (limit - len(prefix) - len(cand) + 1):len(ctx)] + cand)[:-1])
        assert row in enc.rows and len(row) == limit
        # the score is the model's on that row (manual forward, mean log-probability of the candidate)
        with torch.no_grad():
            logp = model(input_ids=torch.tensor([row])).logits[0].float().log_softmax(-1)
        start = len(row) - len(suffix) - len(cand) if masked else len(row) - len(cand)
        want = torch.stack([logp[start + j, t] for j, t in enumerate(cand)]).mean()
        torch.testing.assert_close(s[0, c], want, rtol=1e-5, atol=1e-5)

    loss = scoring.loss_closure(model, tok, examples, loss="classification")()
    assert torch.isfinite(loss)
    with pytest.raises(ValueError, match=rf"examples\[0\] candidate 0 .* does not fit the model's {limit} positions"):
        scoring.score(model, tok, [Ex("Short.", (" great" * (2 * limit),), 0)])


@pytest.mark.parametrize("model", ["tiny-opt", "tiny-roberta"])
def test_finetune_runs_on_sentences_longer_than_the_model(env, monkeypatch, capsys, caplog, model):
    from zotheory.llm import scoring

    monkeypatch.setattr(scoring, "_TRUNCATED", [0])
    monkeypatch.setattr(train_mod, "_load_task", lambda cfg: ToyTask(context=LONG, n=4))
    with caplog.at_level(logging.WARNING, logger="zotheory.llm.scoring"):
        code, out, err = run(finetune(task="toy", model=model, out="long"), capsys)
    assert code == 0, err
    assert "Traceback" not in err
    assert any("from the left" in r.getMessage() for r in caplog.records)
    assert scoring.truncation_count() > 0
    assert json.loads((env / "long" / "result.json").read_text())["status"] == "done"
