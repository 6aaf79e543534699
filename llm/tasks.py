"""Data sets, fixed-seed splits and MeZO-style prompt templates.

Every task yields :class:`Example` objects: a rendered ``context`` and the
``candidates`` scored after it (mean log-probability per candidate token, MeZO's
protocol; see ``docs/llm.md``).

Tasks (stand-ins for MeZO's SST-2 / COPA / WinoGrande, built from offline assets):

``sentiment``  Rotten Tomatoes sentences (Pang & Lee) with mean human ratings
    (``rotten-tomatoes`` asset). Kept: ``|mean| >= 0.5``; label ``mean > 0``;
    exact duplicate sentences dropped (first kept). MeZO's SST-2 template:
    context ``"<sentence> It was"``, candidates ``(" terrible", " great")``,
    label 1 = positive. Split: a fixed-seed random permutation (not stratified;
    the classes are near-balanced), 1000 train / 500 dev / 1000 test, disjoint.

``copa``  BIG-bench ``cause_and_effect`` (``bigbench`` asset). The data are 51
    (cause, effect) event pairs, rendered by three subtasks: ``two_sentences``
    ("which event caused the other?" -- the event scored 1 is the cause),
    ``one_sentence`` / ``one_sentence_no_prompt`` ("E because c." vs "C because
    e."). There is no COPA premise with two alternatives, so each pair gives two
    COPA-template questions whose premise is one event and whose candidates are
    the other event joined by MeZO's two connectives::

        effect question: context "<cause, no final period>"
                         candidates (" so <effect, first letter lowered>",
                                     " because <effect, first letter lowered>"), label 0
        cause question:  context "<effect, no final period>"
                         candidates (" so <cause ...>", " because <cause ...>"), label 1

    i.e. MeZO's ``premise + " so"/" because" + " " + lowercased choice`` with the
    connective, not the choice, varying -- the decision BIG-bench's
    ``one_sentence`` subtask asks for, with a shared prefix. The pronoun "I" is
    not lowered. Splits are by pair (both questions of a pair in the same split):
    too few for 1000/500/1000, so pairs are split 2:1:2 -> 20 / 10 / 21 pairs =
    40 / 20 / 42 examples, labels exactly balanced within each split.

``winogrande``  Winograd schemas reconstructed from BIG-bench ``winowhy``. Each
    winowhy example reads ``"<WSC sentence> The '<pronoun>' refers to <referent>
    because <reason>."`` (label: is the reason correct). The 273 distinct WSC
    sentences and their (correct) referents are taken from it; WSC twins
    (consecutive sentences with the same pronoun and the other referent) supply
    the second option. There is no blank, the pronoun's position is ambiguous in
    32 sentences and 56 referents are not verbatim in the sentence, so instead of
    substituting the option for the pronoun the question uses the data's own
    wording::

        context    "<sentence> The '<pronoun>' refers to"
        candidates (" <option A>", " <option B>")   (schema order), label = the referent

    Options get the sentence's capitalisation for words that occur in it
    ("joan" -> "Joan", "the tv" -> "the TV"). Split by schema (twins together),
    2:1:2 over schemas.

``winowhy``  BIG-bench ``winowhy`` as is (2,865 examples): context ``"<input>\\nThe
    above reasoning is"``, candidates ``(" incorrect", " correct")`` (BIG-bench's
    own output prefix). 1000/500/1000, split by schema (all reasons for a
    sentence and its twin stay in one split; the last schema taken into a split
    may be cut).

Malformed data raise :class:`DataFormatError` (a ``ValueError``) whose message
starts with ``path:line:``. An unknown task name is :class:`UnknownTaskError` (a
``ValueError`` and a :class:`zotheory.errors.CommandError`) listing the valid names.
:data:`TASK_ASSETS` names the asset(s) each task reads; :func:`get_task` with
``fetch=False`` refuses a missing one (the ``zotheory assets fetch <name>`` command in the
message) instead of downloading it.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from zotheory._checks import check_choice, check_int_at_least
from zotheory.errors import CommandError

from .assets import AssetError, ensure

SPLITS = ("train", "dev", "test")
DEFAULT_SIZES = (1000, 500, 1000)
SMALL_PROPORTIONS = (2, 1, 2)  # the 1000:500:1000 ratio, over units, when the data are smaller


class DataFormatError(ValueError):
    """A data file is malformed or truncated; the message names the path and line."""


class UnknownTaskError(CommandError, ValueError):
    """A task name that is not in :data:`TASKS` (the message lists the valid ones)."""


@dataclass(frozen=True)
class Example:
    context: str                  # rendered prompt, e.g. "<sentence> It was"
    candidates: tuple[str, ...]   # continuations scored after the context
    label: int                    # index of the correct candidate
    uid: str                      # stable id (source line / task example index)


@dataclass
class Task:
    name: str
    description: str
    splits: dict[str, list[Example]]
    source: Path | None = None
    units: str = "examples"
    extra: dict = field(default_factory=dict)

    def split(self, name: str) -> list[Example]:
        check_choice("split", name, SPLITS)
        return list(self.splits[name])

    @property
    def sizes(self) -> dict[str, int]:
        return {s: len(self.splits[s]) for s in SPLITS}

    def label_counts(self, name: str) -> dict[int, int]:
        return dict(sorted(Counter(e.label for e in self.split(name)).items()))

    def __repr__(self) -> str:
        return f"Task({self.name!r}, sizes={self.sizes})"


# ---------------------------------------------------------------------------
# templates


def sentiment_example(sentence: str, positive: bool, uid: str) -> Example:
    """MeZO's SST-2 template."""
    return Example(f"{sentence.strip()} It was", (" terrible", " great"), int(bool(positive)), uid)


def _strip_period(s: str) -> str:
    s = s.strip()
    return s[:-1] if s.endswith(".") else s


def lower_first(s: str) -> str:
    """MeZO's lowercasing of a COPA choice's first letter, sparing the pronoun "I"."""
    s = s.strip()
    if re.match(r"I\b", s):
        return s
    return s[:1].lower() + s[1:]


def copa_example(premise: str, other: str, other_is_effect: bool, uid: str) -> Example:
    """COPA template with the connective as the choice: ``premise so/because other``."""
    other = lower_first(other)
    return Example(_strip_period(premise), (f" so {other}", f" because {other}"),
                   0 if other_is_effect else 1, uid)


def winograd_example(sentence: str, pronoun: str, options: Sequence[str], label: int, uid: str) -> Example:
    return Example(f"{sentence.strip()} The '{pronoun}' refers to", tuple(f" {o}" for o in options), label, uid)


def winowhy_example(text: str, correct: bool, uid: str) -> Example:
    return Example(f"{text.strip()}\nThe above reasoning is", (" incorrect", " correct"), int(bool(correct)), uid)


# ---------------------------------------------------------------------------
# readers


def read_rotten_tomatoes(path: Path) -> list[tuple[str, float, str]]:
    """Parse ``id<TAB>mean<TAB>text`` lines (UTF-8, CRLF or LF; blank lines skipped)."""
    path = Path(path)
    rows: list[tuple[str, float, str]] = []
    seen: dict[str, int] = {}
    try:
        raw_lines = path.read_bytes().splitlines()
    except OSError as e:
        raise AssetError(f"cannot read {path}: {e}") from e
    for lineno, raw in enumerate(raw_lines, 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataFormatError(f"{path}:{lineno}: not valid UTF-8 ({e.reason} at byte {e.start})") from e
        if not line.strip():
            continue
        fields = line.split("\t", 2)
        if len(fields) != 3:
            raise DataFormatError(f"{path}:{lineno}: expected 3 tab-separated fields id<TAB>mean<TAB>text, "
                                  f"got {len(fields)}: {line[:80]!r}")
        uid, mean_s, text = fields[0].strip(), fields[1].strip(), fields[2].strip()
        try:
            mean = float(mean_s)
        except ValueError:
            raise DataFormatError(f"{path}:{lineno}: rating must be a number, got {mean_s!r}") from None
        if not (math.isfinite(mean) and -4.0 <= mean <= 4.0):
            raise DataFormatError(f"{path}:{lineno}: rating must be a finite number in [-4, 4], got {mean_s!r}")
        if not uid or not text:
            raise DataFormatError(f"{path}:{lineno}: empty {'id' if not uid else 'text'} field")
        if uid in seen:
            raise DataFormatError(f"{path}:{lineno}: duplicate id {uid!r} (first on line {seen[uid]})")
        seen[uid] = lineno
        rows.append((uid, mean, text))
    if not rows:
        raise DataFormatError(f"{path}:1: no data lines")
    return rows


def _line_of(text: str, needle: str) -> int:
    i = text.find(needle)
    return text.count("\n", 0, i) + 1 if i >= 0 else 1


def read_bigbench_examples(path: Path) -> list[dict]:
    """The ``examples`` of a BIG-bench ``task.json``, each with ``input`` (str) and
    ``target_scores`` ({choice: 0/1}), checked."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataFormatError(f"{path}:1: not valid UTF-8 ({e.reason} at byte {e.start})") from e
    except OSError as e:
        raise AssetError(f"cannot read {path}: {e}") from e
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataFormatError(f"{path}:{e.lineno}: invalid JSON ({e.msg}, column {e.colno}); "
                              "the file is malformed or truncated") from e
    examples = data.get("examples") if isinstance(data, dict) else None
    if not isinstance(examples, list) or not examples:
        raise DataFormatError(f"{path}:1: expected an object with a non-empty \"examples\" list")
    for i, ex in enumerate(examples):
        ok = (isinstance(ex, dict) and isinstance(ex.get("input"), str)
              and isinstance(ex.get("target_scores"), dict) and len(ex["target_scores"]) >= 2
              and all(isinstance(v, (int, float)) and not isinstance(v, bool) and v in (0, 1)
                      for v in ex["target_scores"].values())
              and sum(v == 1 for v in ex["target_scores"].values()) == 1)
        if not ok:
            snippet = json.dumps(ex)[:60] if isinstance(ex, dict) else repr(ex)[:60]
            raise DataFormatError(
                f"{path}:{_line_of(text, json.dumps(ex.get('input')) if isinstance(ex, dict) else '')}: "
                f"example {i} must have a string \"input\" and \"target_scores\" with exactly one choice "
                f"scored 1 and the others 0, got {snippet}")
    return examples


# ---------------------------------------------------------------------------
# building examples


def sentiment_examples(rows: Sequence[tuple[str, float, str]], threshold: float = 0.5) -> list[Example]:
    seen: set[str] = set()
    out = []
    for uid, mean, text in rows:
        if abs(mean) < threshold or text in seen:
            continue
        seen.add(text)
        out.append(sentiment_example(text, mean > 0, f"rt:{uid}"))
    return out


def copa_units(two_sentences: Sequence[dict], path: Path | str = "two_sentences") -> list[list[Example]]:
    """Two COPA-template questions per (cause, effect) pair of ``cause_and_effect/two_sentences``."""
    units = []
    for i, ex in enumerate(two_sentences):
        scores = ex["target_scores"]
        if len(scores) != 2:
            raise DataFormatError(f"{path}: example {i} must have exactly 2 choices, got {len(scores)}")
        cause = next(k for k, v in scores.items() if v == 1)
        effect = next(k for k, v in scores.items() if v != 1)
        units.append([copa_example(cause, effect, True, f"cause_and_effect:{i}:effect"),
                      copa_example(effect, cause, False, f"cause_and_effect:{i}:cause")])
    return units


_WINOWHY = re.compile(r"^(?P<sentence>.*?) The '(?P<pronoun>[^']+)' refers to (?P<referent>.+?) because (?P<reason>.*)$",
                      re.S)


def _parse_winowhy(examples: Sequence[dict], path: Path | str) -> list[tuple[str, str, str, str, bool]]:
    out = []
    for i, ex in enumerate(examples):
        m = _WINOWHY.match(ex["input"])
        if m is None or set(ex["target_scores"]) != {"correct", "incorrect"}:
            raise DataFormatError(f"{path}: example {i} is not \"<sentence> The '<pronoun>' refers to <referent> "
                                  f"because <reason>\" with choices correct/incorrect: {ex['input'][:80]!r}")
        out.append((m["sentence"].strip(), m["pronoun"], m["referent"].strip(), ex["input"],
                    ex["target_scores"]["correct"] == 1))
    return out


def _schemas(parsed) -> list[list[tuple[str, str, str]]]:
    """Group the distinct (sentence, pronoun, referent) in file order into Winograd schemas:
    consecutive sentences with the same pronoun and a large word overlap."""
    items: list[tuple[str, str, str]] = []
    for s, p, r, _, _ in parsed:
        if (s, p, r) not in items[-1:]:
            if any(it[0] == s and it[1] == p for it in items):
                continue
            items.append((s, p, r))

    def words(s):
        return set(re.findall(r"\w+", s.lower()))

    groups: list[list[tuple[str, str, str]]] = []
    for it in items:
        if groups:
            g = groups[-1]
            a, b = words(g[0][0]), words(it[0])
            if g[0][1].lower() == it[1].lower() and len(a & b) / max(1, len(a | b)) >= 0.5:
                g.append(it)
                continue
        groups.append([it])
    return groups


def _case_like(option: str, sentence: str) -> str:
    """Give ``option``'s words the capitalisation they have in ``sentence`` (articles stay lower)."""
    cased = {}
    for w in re.findall(r"\w+", sentence):
        if w.lower() not in cased or cased[w.lower()] == w.lower():
            cased[w.lower()] = w
    out = []
    for w in re.findall(r"\w+|\W+", option):
        lw = w.lower()
        out.append(w if lw in {"the", "a", "an"} else cased.get(lw, w))
    return "".join(out)


def winograd_units(winowhy: Sequence[dict], path: Path | str = "winowhy") -> list[list[Example]]:
    units = []
    for gi, group in enumerate(_schemas(_parse_winowhy(winowhy, path))):
        options = list(dict.fromkeys(r.lower() for _, _, r in group))
        if len(options) != 2:
            continue  # a schema whose twin is missing: no second option
        unit = []
        for j, (s, p, r) in enumerate(group):
            unit.append(winograd_example(s, p, [_case_like(o, s) for o in options], options.index(r.lower()),
                                         f"winowhy-schema:{gi}:{j}"))
        units.append(unit)
    return units


def winowhy_units(winowhy: Sequence[dict], path: Path | str = "winowhy") -> list[list[Example]]:
    parsed = _parse_winowhy(winowhy, path)
    schema_of = {(s, p): gi for gi, g in enumerate(_schemas(parsed)) for s, p, _ in g}
    units: dict[int, list[Example]] = {}
    for i, (s, p, _, text, correct) in enumerate(parsed):
        units.setdefault(schema_of[(s, p)], []).append(winowhy_example(text, correct, f"winowhy:{i}"))
    return [units[k] for k in sorted(units)]


# ---------------------------------------------------------------------------
# splits


def split_units(units: Sequence[Sequence[Example]], seed: int,
                sizes: tuple[int, int, int] = DEFAULT_SIZES) -> dict[str, list[Example]]:
    """Disjoint train/dev/test from a ``random.Random(seed)`` permutation of ``units`` (groups
    that must stay together). With enough examples the splits have exactly ``sizes`` examples
    (units taken whole, the last one into a split cut, its rest unused); otherwise the units are
    divided 2:1:2."""
    order = list(range(len(units)))
    random.Random(seed).shuffle(order)
    total = sum(len(u) for u in units)
    out: dict[str, list[Example]] = {s: [] for s in SPLITS}
    if total >= sum(sizes):
        it = iter(order)
        for name, size in zip(SPLITS, sizes):
            while len(out[name]) < size:
                out[name].extend(units[next(it)])
            del out[name][size:]
    else:
        n = len(units)
        n_train = round(n * SMALL_PROPORTIONS[0] / sum(SMALL_PROPORTIONS))
        n_dev = round(n * SMALL_PROPORTIONS[1] / sum(SMALL_PROPORTIONS))
        bounds = {"train": order[:n_train], "dev": order[n_train:n_train + n_dev], "test": order[n_train + n_dev:]}
        for name in SPLITS:
            for k in bounds[name]:
                out[name].extend(units[k])
    return out


# ---------------------------------------------------------------------------
# locating data


def _find(data_dir: Path | None, asset: str, candidates: Sequence[str], what: str) -> Path:
    if data_dir is None:
        root = ensure(asset)
        tried = [root / c for c in candidates[:1]]
    else:
        root = Path(data_dir).expanduser()
        if root.is_file() and candidates and Path(candidates[0]).name == root.name:
            return root
        tried = [root / c for c in candidates]
    for p in tried:
        if p.exists():
            return p
    raise AssetError(f"no {what} found; looked for " + ", ".join(str(p) for p in tried) +
                     f". Get it with `zotheory assets fetch {asset}`, or pass data_dir= pointing at a "
                     f"directory holding {candidates[0]}.")


def _rt_file(data_dir) -> Path:
    name = "movieReviewSnippets_GroundTruth.txt"
    if data_dir is not None and Path(data_dir).is_file():
        return Path(data_dir)
    return _find(data_dir, "rotten-tomatoes", [name, f"hutto_ICWSM_2014/{name}"], f"Rotten Tomatoes data ({name})")


def _bb_task(data_dir, task: str, sub: str | None = None) -> Path:
    rel = f"{task}/{sub}/task.json" if sub else f"{task}/task.json"
    return _find(data_dir, "bigbench", [rel, f"bigbench/benchmark_tasks/{rel}", f"benchmark_tasks/{rel}"],
                 f"BIG-bench {task} task file ({rel})")


def _balance(examples: Sequence[Example]) -> str:
    c = Counter(e.label for e in examples)
    return "/".join(str(c.get(i, 0)) for i in range(max(c) + 1 if c else 0))


def _sizes_text(splits) -> str:
    return " / ".join(f"{len(splits[s])} {s}" for s in SPLITS)


def _make_sentiment(seed: int, data_dir) -> Task:
    path = _rt_file(data_dir)
    rows = read_rotten_tomatoes(path)
    units = [[e] for e in sentiment_examples(rows)]
    splits = split_units(units, seed)
    allx = [u[0] for u in units]
    desc = (f"Rotten Tomatoes sentences (SST-2 stand-in), |mean rating| >= 0.5: {len(allx)} usable "
            f"(neg/pos {_balance(allx)}, not rebalanced); template '<sentence> It was' + ' terrible'/' great'; "
            f"seed-{seed} random split {_sizes_text(splits)} (train neg/pos {_balance(splits['train'])})")
    return Task("sentiment", desc, splits, path, "sentences")


def _make_copa(seed: int, data_dir) -> Task:
    path = _bb_task(data_dir, "cause_and_effect", "two_sentences")
    units = copa_units(read_bigbench_examples(path), path)
    splits = split_units(units, seed)
    desc = (f"BIG-bench cause_and_effect (COPA stand-in): {len(units)} cause/effect pairs -> {2 * len(units)} "
            f"questions '<premise> so/because <other event>' (label 0 = so/effect, 1 = because/cause); "
            f"too small for 1000/500/1000: pairs split 2:1:2 -> {_sizes_text(splits)} examples (seed {seed})")
    return Task("copa", desc, splits, path, "pairs")


def _make_winogrande(seed: int, data_dir) -> Task:
    path = _bb_task(data_dir, "winowhy")
    units = winograd_units(read_bigbench_examples(path), path)
    splits = split_units(units, seed)
    n = sum(len(u) for u in units)
    desc = (f"Winograd schemas from BIG-bench winowhy (WinoGrande stand-in): {n} sentences in {len(units)} "
            f"schemas, \"<sentence> The '<pronoun>' refers to\" + 2 options; too small for 1000/500/1000: "
            f"schemas split 2:1:2 -> {_sizes_text(splits)} (seed {seed})")
    return Task("winogrande", desc, splits, path, "schemas")


def _make_winowhy(seed: int, data_dir) -> Task:
    path = _bb_task(data_dir, "winowhy")
    units = winowhy_units(read_bigbench_examples(path), path)
    splits = split_units(units, seed)
    allx = [e for u in units for e in u]
    desc = (f"BIG-bench winowhy as is: {len(allx)} reasons (incorrect/correct {_balance(allx)}) for Winograd "
            f"answers, '<input>\\nThe above reasoning is' + ' incorrect'/' correct'; split by schema "
            f"{_sizes_text(splits)} (seed {seed})")
    return Task("winowhy", desc, splits, path, "schemas")


TASKS: dict[str, Callable[[int, Path | None], Task]] = {
    "sentiment": _make_sentiment,
    "copa": _make_copa,
    "winogrande": _make_winogrande,
    "winowhy": _make_winowhy,
}

#: The cached asset(s) each task reads when no ``data_dir`` is given.
TASK_ASSETS: dict[str, tuple[str, ...]] = {
    "sentiment": ("rotten-tomatoes",),
    "copa": ("bigbench",),
    "winogrande": ("bigbench",),
    "winowhy": ("bigbench",),
}


def check_task(name: str) -> str:
    """``name`` when it is a task of :data:`TASKS`, else :class:`UnknownTaskError`."""
    if not isinstance(name, str) or name not in TASKS:
        raise UnknownTaskError(f"unknown task: name must be one of {sorted(TASKS)}, got {name!r} "
                               f"(pass one of them to --task)")
    return name


def get_task(name: str, *, seed: int = 0, data_dir: str | Path | None = None, fetch: bool = True,
             alternative: str | None = None) -> Task:
    """Load task ``name`` (see :data:`TASKS`) with fixed-seed splits. ``data_dir`` points at local
    data (the directory holding the file(s), or the file for ``sentiment``); by default the cached
    asset is used, fetched on first use when ``fetch`` (else a missing asset is an
    ``AssetMissingError`` naming the ``zotheory assets fetch`` command, plus ``alternative``)."""
    check_task(name)
    seed = check_int_at_least("seed", seed, 0)
    if data_dir is None:
        for asset in TASK_ASSETS.get(name, ()):
            ensure(asset, fetch=fetch, needed_by=f"task {name!r}", alternative=alternative)
    return TASKS[name](seed, data_dir)


__all__ = ["DataFormatError", "Example", "SPLITS", "TASKS", "TASK_ASSETS", "Task", "UnknownTaskError",
           "check_task", "copa_example", "get_task",
           "read_bigbench_examples", "read_rotten_tomatoes", "sentiment_example", "split_units",
           "winograd_example", "winowhy_example"]
