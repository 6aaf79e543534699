"""Models for fine-tuning: pretrained (offline) or tiny random ones, and LoRA via peft.

* :func:`load_model` -- ``(model, tokenizer)`` for a name or a local directory.
  ``"tiny-llama"``, ``"tiny-opt"`` and ``"tiny-roberta"`` build random-weight
  models offline (:func:`tiny_model`); anything else goes through
  ``zotheory.llm.assets.resolve_model`` (imported lazily: the registry of
  offline assets, e.g. ``"smollm2-135m"``, or a local HF-format directory) and
  is loaded with ``local_files_only=True`` (nothing is downloaded here).
  Causal LMs load as ``AutoModelForCausalLM``; a checkpoint whose
  ``config.architectures`` names a ``...ForMaskedLM`` class loads as
  ``AutoModelForMaskedLM`` (scored MeZO-style at ``<mask>`` positions, see
  :mod:`zotheory.llm.scoring`). Models come back in ``eval()`` mode: dropout is
  off for every method, so the two oracle calls of a zero-order step see the
  same function (the proofs' "same xi"), as in MeZO.
* :func:`tiny_model` -- a random-weight Llama, OPT or RoBERTa (2 layers, width
  32) with a byte-level BPE tokenizer trained in memory on a fixed corpus
  (deterministic; no files, no network). For tests and smoke runs.
* :func:`apply_lora` -- peft LoRA adapters (default ``r = 8``, ``alpha = 16``,
  no dropout, on the query and value projections as in MeZO and the paper:
  ``q_proj``/``v_proj`` for Llama and OPT, ``query``/``value`` for RoBERTa).
  The base weights are frozen; only the adapters are trainable. peft
  initialises ``A`` randomly and ``B = 0``; the draw is seeded (``seed=``) and
  does not disturb the caller's global RNG.
* :func:`trainable_parameters` / :func:`named_trainable_parameters` -- the
  parameters with ``requires_grad`` in ``named_parameters`` order (shared /
  tied tensors once). That list is what the optimizers act on.

Out of memory on load. Before loading a checkpoint, :func:`load_model`
estimates the bytes its weights take in the requested dtype
(:func:`estimate_model_bytes`: element counts from the ``*.safetensors``
headers, else the size of the ``*.bin``/``*.pt`` weight files) and compares
them with the memory available (:func:`available_memory_bytes`: ``MemAvailable``
of ``/proc/meminfo`` on the host, where the weights are first materialised, and
``torch.cuda.mem_get_info`` on a CUDA device). When the weights do not fit it
raises :class:`ModelTooLargeError` (a ``MemoryError``) saying how much is needed
and how much is available, before allocating anything. An allocator failure
during the load itself (``torch.OutOfMemoryError``, ``MemoryError``, or a
``RuntimeError`` such as ``DefaultCPUAllocator: can't allocate memory``) is
re-raised as :class:`ModelTooLargeError` with the same message. When the
available memory cannot be read the check is skipped (the load is attempted).

Checks before a run (``zotheory finetune`` and ``train`` call them before creating the run
folder; each error is a :class:`zotheory.errors.CommandError`, printed as one line naming
the thing and the fix): :func:`check_model` (a ``tiny-<arch>`` with a known arch, a registered
asset -- present, or fetched only when ``fetch=True`` --, a local directory holding
``config.json``, or a Hugging Face cache entry) and :func:`check_device` (``cuda`` / ``cuda:N``
only when CUDA is available with that many devices). A model directory transformers cannot
read is :class:`ModelLoadError` naming the directory.
"""

from __future__ import annotations

import contextlib
import json
import struct
from pathlib import Path
from typing import Iterator, Sequence

import torch

from zotheory.errors import CommandError

__all__ = [
    "TINY_ARCHS",
    "DTYPES",
    "parse_dtype",
    "resolve_device",
    "load_model",
    "tiny_model",
    "tiny_tokenizer",
    "apply_lora",
    "default_lora_targets",
    "trainable_parameters",
    "named_trainable_parameters",
    "is_masked_lm",
    "ModelTooLargeError",
    "UnknownModelError",
    "ModelLoadError",
    "DeviceUnavailableError",
    "check_model",
    "check_device",
    "estimate_model_bytes",
    "available_memory_bytes",
]

TINY_ARCHS = ("llama", "opt", "roberta")

DTYPES = {
    "float32": torch.float32, "fp32": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16,
}

_LORA_TARGETS = {
    "llama": ("q_proj", "v_proj"),
    "opt": ("q_proj", "v_proj"),
    "roberta": ("query", "value"),
    "bert": ("query", "value"),
    "mistral": ("q_proj", "v_proj"),
    "qwen2": ("q_proj", "v_proj"),
    "gpt2": ("c_attn",),
}

# Fixed corpus for the tiny tokenizer: words of the sentiment / multiple-choice templates.
_TINY_CORPUS = [
    "It was great. It was terrible. It was good. It was bad.",
    "The movie was great and the acting was good, but the plot was terrible.",
    "a fine film with a dull plot; the cast is great, the script is bad.",
    "positive negative great terrible good bad yes no true false because so",
    "The man broke his toe. What was the cause? He dropped a hammer on his foot.",
]
_SPECIALS = ["<pad>", "<s>", "</s>", "<unk>", "<mask>"]


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """``"float32"|"fp32"|"bfloat16"|"bf16"|"float16"|"fp16"`` or a floating torch.dtype."""
    if isinstance(dtype, torch.dtype):
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating-point dtype, got {dtype}")
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    return DTYPES[dtype]


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> ``cuda`` when ``torch.cuda.is_available()``, else ``cpu``; other values as given."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}") from None


class DeviceUnavailableError(CommandError, ValueError):
    """A CUDA device was asked for where there is none (or not that many)."""


def check_device(device: str | torch.device) -> torch.device:
    """:func:`resolve_device`, and for ``cuda`` / ``cuda:N`` a check that CUDA is available with a
    device ``N``: :class:`DeviceUnavailableError` (one line: the device and the fix) otherwise."""
    dev = resolve_device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            built = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise DeviceUnavailableError(
                f"device {str(device)!r} asked for, but CUDA is not available here (torch {torch.__version__}, "
                f"{built}, no usable GPU); use --device cpu (or --device auto, which picks CUDA only when "
                f"it is there)")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise DeviceUnavailableError(
                f"device {str(device)!r} asked for, but there {'is' if count == 1 else 'are'} only {count} "
                f"CUDA device{'' if count == 1 else 's'} ({'cuda:0' if count == 1 else f'cuda:0..cuda:{count - 1}'}); "
                f"use one of those, --device cuda, or --device cpu")
    return dev


class UnknownModelError(CommandError, ValueError):
    """A model name or path that names no model (the message says what was tried and the fix)."""


class ModelLoadError(CommandError, ValueError):
    """A model directory that transformers cannot read (names the directory and the fix)."""


def check_model(name_or_path: str | Path, *, fetch: bool = True, alternative: str | None = None) -> Path | None:
    """Check that :func:`load_model` can load ``name_or_path`` without loading it: ``None`` for a
    ``tiny-<arch>`` with a known arch, else the model directory (a registered asset, fetched only when
    ``fetch`` -- otherwise ``AssetMissingError`` with the ``zotheory assets fetch`` command and
    ``alternative`` --, a local directory, or a Hugging Face cache entry), which must hold
    ``config.json``. :class:`UnknownModelError` / ``AssetError`` otherwise."""
    name = str(name_or_path)
    if name.startswith("tiny-"):
        arch = name[len("tiny-"):]
        if arch not in TINY_ARCHS:
            raise UnknownModelError(
                f"unknown model {name!r}: the tiny random models are "
                f"{', '.join('tiny-' + a for a in TINY_ARCHS)}; or pass a registered model "
                f"(`zotheory assets list`) or a local model directory")
        return None
    from .assets import resolve_model

    path = Path(resolve_model(name, fetch=fetch, alternative=alternative))
    if not (path / "config.json").is_file():
        raise UnknownModelError(
            f"model {name!r}: {path} is not a model directory (no config.json); pass a directory saved "
            f"with save_pretrained (config.json + weights + tokenizer files)")
    return path


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed torch's global RNG inside the block, restoring the caller's state after it."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed))
        yield


def tiny_tokenizer(arch: str = "llama", vocab_size: int = 320):
    """A byte-level BPE ``PreTrainedTokenizerFast`` trained in memory (deterministic).

    Special tokens ``<pad>=0, <s>=1, </s>=2, <unk>=3, <mask>=4``. What is added
    around a text mirrors the real families: nothing for ``llama`` (SmolLM2 adds
    no BOS), ``<s>`` in front for ``opt``, ``<s> ... </s>`` for ``roberta``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if arch not in TINY_ARCHS:
        raise ValueError(f"arch must be one of {list(TINY_ARCHS)}, got {arch!r}")
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=_SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tk.train_from_iterator(_TINY_CORPUS, trainer)
    if arch == "opt":
        tk.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    elif arch == "roberta":
        tk.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>", special_tokens=[("<s>", 1), ("</s>", 2)]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
        unk_token="<unk>", mask_token="<mask>",
    )


def tiny_model(
    arch: str = "llama",
    seed: int = 0,
    *,
    hidden_size: int = 32,
    num_layers: int = 2,
    dtype: str | torch.dtype = "float32",
    device: str | torch.device = "cpu",
):
    """``(model, tokenizer)``: a random-weight ``arch`` model built from a config, offline.

    ``llama`` -> ``LlamaForCausalLM`` (tied embeddings, 4 heads / 2 KV heads),
    ``opt`` -> ``OPTForCausalLM``, ``roberta`` -> ``RobertaForMaskedLM``; dropout 0,
    ``max_position_embeddings = 128``. Weights are drawn from a seeded RNG
    (same ``seed`` -> bitwise-identical weights); the model is in ``eval()`` mode.
    """
    from transformers import (
        LlamaConfig, LlamaForCausalLM, OPTConfig, OPTForCausalLM, RobertaConfig, RobertaForMaskedLM,
    )

    tok = tiny_tokenizer(arch)
    V = len(tok)
    ids = dict(pad_token_id=0, bos_token_id=1, eos_token_id=2)
    h, L = int(hidden_size), int(num_layers)
    if arch == "llama":
        cfg = LlamaConfig(vocab_size=V, hidden_size=h, intermediate_size=2 * h, num_hidden_layers=L,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                          tie_word_embeddings=True, **ids)
        cls = LlamaForCausalLM
    elif arch == "opt":
        cfg = OPTConfig(vocab_size=V, hidden_size=h, ffn_dim=2 * h, num_hidden_layers=L,
                        num_attention_heads=4, max_position_embeddings=128, word_embed_proj_dim=h,
                        dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, **ids)
        cls = OPTForCausalLM
    elif arch == "roberta":
        cfg = RobertaConfig(vocab_size=V, hidden_size=h, intermediate_size=2 * h, num_hidden_layers=L,
                            num_attention_heads=4, max_position_embeddings=130, type_vocab_size=1,
                            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **ids)
        cls = RobertaForMaskedLM
    else:
        raise ValueError(f"arch must be one of {list(TINY_ARCHS)}, got {arch!r}")
    with _seeded(seed):
        model = cls(cfg)
    model.to(device=resolve_device(device), dtype=parse_dtype(dtype))
    model.eval()
    return model, tok


def load_model(
    name_or_path: str | Path,
    *,
    dtype: str | torch.dtype = "float32",
    device: str | torch.device = "cpu",
    seed: int = 0,
    fetch: bool = True,
):
    """``(model, tokenizer)`` in ``eval()`` mode on ``device`` in ``dtype``.

    ``"tiny-<arch>"`` builds :func:`tiny_model` (``seed`` draws its weights).
    Otherwise ``zotheory.llm.assets.resolve_model(name_or_path)`` gives a local
    HF-format directory (fetching a registered offline asset on first use when
    ``fetch``; else a missing one is an ``AssetMissingError``) and the model is
    loaded from it with ``local_files_only=True``.
    """
    torch_dtype = parse_dtype(dtype)
    dev = resolve_device(device)
    name = str(name_or_path)
    if name.startswith("tiny-"):
        return tiny_model(name[len("tiny-"):], seed, dtype=torch_dtype, device=dev)

    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

    try:
        from .assets import resolve_model
    except ImportError as err:  # pragma: no cover - depends on the sibling module
        raise ImportError(
            f"loading {name!r} needs zotheory.llm.assets.resolve_model ({err}); "
            "use a 'tiny-llama' / 'tiny-opt' / 'tiny-roberta' model offline"
        ) from err
    path = Path(resolve_model(name, fetch=fetch))
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as err:
        raise ModelLoadError(_unreadable(name, path, err)) from err
    archs = getattr(config, "architectures", None) or []
    auto = AutoModelForMaskedLM if any(a.endswith("ForMaskedLM") for a in archs) else AutoModelForCausalLM
    needed = estimate_model_bytes(path, torch_dtype)
    _check_memory(name, needed, torch_dtype, dev)
    try:
        model = auto.from_pretrained(path, dtype=torch_dtype, local_files_only=True)
        model.to(dev)
    except (MemoryError, RuntimeError) as err:
        if isinstance(err, ModelTooLargeError) or not _is_oom(err):
            raise
        where = str(dev)
        raise ModelTooLargeError(
            _too_large_message(name, needed, torch_dtype, where, available_memory_bytes(dev)) + f" ({err})"
        ) from err
    except (OSError, ValueError) as err:
        raise ModelLoadError(_unreadable(name, path, err)) from err
    try:
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as err:
        raise ModelLoadError(_unreadable(name, path, err)) from err
    if tok.pad_token_id is None:  # padded positions are masked; any valid id will do
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.convert_ids_to_tokens(0)
    model.eval()
    return model, tok


class ModelTooLargeError(CommandError, MemoryError):
    """Not enough memory to load a model; the message gives the size needed and what is available."""


def _unreadable(name: str, path: Path, err: BaseException) -> str:
    from .assets import ASSETS

    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    fix = (f"re-fetch it with `zotheory assets fetch {name} --force`" if name in ASSETS
           else "check the directory's config.json, weights and tokenizer files")
    return f"cannot load model {name!r} from {path}: {type(err).__name__}: {first}; {fix}"


def _size(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.{2 if unit == 'GiB' else 1}f} {unit}"
    return f"{n} bytes"


def _safetensors_numel(path: Path) -> int:
    """Number of elements in one ``.safetensors`` file, from its header (no tensor is read)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise ValueError("file shorter than the 8-byte header length")
            (n,) = struct.unpack("<Q", head)
            if n > 100 * 2**20 or n > path.stat().st_size - 8:
                raise ValueError(f"header length {n} exceeds the file")
            header = json.loads(fh.read(n))
        total = 0
        for key, entry in header.items():
            if key == "__metadata__":
                continue
            numel = 1
            for dim in entry["shape"]:
                numel *= int(dim)
            total += numel
        return total
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as err:
        raise ValueError(f"malformed safetensors header in {path}: {err}") from None


def estimate_model_bytes(path: str | Path, dtype: str | torch.dtype = "float32") -> int | None:
    """Bytes the weights in the model directory ``path`` take once loaded in ``dtype``.

    Exact element counts from the ``*.safetensors`` headers (times the dtype's
    element size); without safetensors, the total size of ``*.bin`` / ``*.pt`` /
    ``*.pth`` weight files (as stored). ``None`` when the directory has no
    weight file. A malformed safetensors header raises ``ValueError`` naming the file.
    """
    path = Path(path)
    itemsize = torch.empty((), dtype=parse_dtype(dtype)).element_size()
    shards = sorted(path.glob("*.safetensors"))
    if shards:
        return sum(_safetensors_numel(p) for p in shards) * itemsize
    others = [p for ext in ("*.bin", "*.pt", "*.pth") for p in path.glob(ext) if p.is_file()]
    if others:
        return sum(p.stat().st_size for p in others)
    return None


def available_memory_bytes(device: str | torch.device = "cpu") -> int | None:
    """Memory a load can use: ``MemAvailable`` (``/proc/meminfo``) for ``cpu``, free memory
    for a CUDA device; ``None`` when it cannot be read."""
    dev = resolve_device(device)
    if dev.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(dev)[0])
        except (RuntimeError, AssertionError):
            return None
    if dev.type != "cpu":
        return None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    parts = line.split()
                    return int(parts[1]) * (1024 if len(parts) < 3 or parts[2].lower() == "kb" else 1)
    except (OSError, ValueError, IndexError):
        return None
    return None


def _too_large_message(name: str, needed: int | None, dtype: torch.dtype, where: str, available: int | None) -> str:
    dt = str(dtype).replace("torch.", "")
    need = f"about {_size(needed)} ({needed:,} bytes) for its weights in {dt}" if needed else "an unknown amount"
    avail = f"{_size(available)} available on {where}" if available is not None else f"free memory on {where} unknown"
    return (f"not enough memory to load model {name!r}: it needs {need}; {avail}. Free memory, "
            f"use a smaller dtype (--dtype bfloat16 halves fp32), a smaller model, or another device.")


def _is_oom(err: BaseException) -> bool:
    if isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError":
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and any(
        s in text for s in ("out of memory", "can't allocate memory", "cannot allocate memory", "not enough memory")
    )


def _check_memory(name: str, needed: int | None, dtype: torch.dtype, device: torch.device) -> None:
    """Raise :class:`ModelTooLargeError` when ``needed`` bytes exceed what the host (and device) has."""
    if needed is None:
        return
    places = [torch.device("cpu")] + ([device] if device.type == "cuda" else [])
    for place in places:
        available = available_memory_bytes(place)
        if available is not None and needed > available:
            raise ModelTooLargeError(_too_large_message(name, needed, dtype, str(place), available))


def _base_model(model):
    """The transformers model under a peft wrapper (or the model itself)."""
    get = getattr(model, "get_base_model", None)
    return get() if callable(get) else model


def is_masked_lm(model) -> bool:
    """True for ``...ForMaskedLM`` models (scored at ``<mask>`` positions)."""
    return type(_base_model(model)).__name__.endswith("ForMaskedLM")


def default_lora_targets(model) -> tuple[str, ...]:
    """Query/value projection names for the model's family (MeZO's and the paper's choice)."""
    mtype = getattr(_base_model(model).config, "model_type", None)
    if mtype not in _LORA_TARGETS:
        raise ValueError(
            f"no default LoRA targets for model_type {mtype!r}; pass targets= explicitly "
            f"(known: {sorted(_LORA_TARGETS)})"
        )
    return _LORA_TARGETS[mtype]


def apply_lora(
    model,
    r: int = 8,
    alpha: float = 16,
    targets: Sequence[str] | None = None,
    *,
    seed: int = 0,
):
    """Wrap ``model`` with peft LoRA adapters; only the adapters stay trainable.

    ``r`` (rank) and ``alpha`` (scaling ``alpha / r``) as in LoRA; ``targets`` the
    module names (default :func:`default_lora_targets`). Adapter ``A`` is drawn
    from a seeded RNG (``seed``); ``B = 0``, so the wrapped model computes the
    same function as the base at the start.
    """
    from peft import LoraConfig, get_peft_model

    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise ValueError(f"r must be an integer >= 1, got {r!r}")
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not alpha > 0:
        raise ValueError(f"alpha must be a number > 0, got {alpha!r}")
    targets = list(targets) if targets is not None else list(default_lora_targets(model))
    if not targets:
        raise ValueError("targets must name at least one module")
    config = LoraConfig(r=r, lora_alpha=alpha, target_modules=targets, lora_dropout=0.0, bias="none")
    with _seeded(seed):
        wrapped = get_peft_model(model, config)
    wrapped.eval()
    return wrapped


def named_trainable_parameters(model) -> list[tuple[str, torch.nn.Parameter]]:
    """``(name, parameter)`` for every parameter with ``requires_grad``, in module order."""
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def trainable_parameters(model) -> list[torch.nn.Parameter]:
    """The parameters with ``requires_grad`` (what the optimizers act on)."""
    return [p for _, p in named_trainable_parameters(model)]
