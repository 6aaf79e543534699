"""Tasks, templates and splits on small data files written here (no network)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from zotheory.llm.assets import AssetError
from zotheory.llm.tasks import (
    TASKS, DataFormatError, Example, copa_example, get_task, read_bigbench_examples,
    read_rotten_tomatoes, sentiment_example, split_units, winograd_example, winowhy_example,
)


@pytest.fixture(autouse=True)
def _no_fetch(monkeypatch, tmp_path):
    # never touch the real cache or the network from these tests
    monkeypatch.setenv("ZOTHEORY_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("ZOTHEORY_NO_FETCH", "1")


def write_rt(path: Path, n: int, *, start: int = 1) -> Path:
    """n sentences, CRLF, ratings cycling through 2.0, -1.5, 0.2 (the last one dropped: |r| < 0.5)."""
    ratings = (2.0, -1.5, 0.2)
    lines = [f"{i}\t{ratings[i % 3]}\tSentence number {i} about a film." for i in range(start, start + n)]
    path.write_bytes(("\r\n".join(lines)).encode("utf-8"))
    return path


def write_task(path: Path, examples) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"canary": "x", "name": path.parent.name, "examples": examples}, indent=2))
    return path


PAIRS = [("It started raining.", "The driver turned the wipers on."),
         ("I studied hard.", "I got an A on the test."),
         ("The bottle was left open.", "The soda went flat."),
         ("The floor was wet.", "The man sued."),
         ("The door was locked.", "The man climbed in through the window.")]


def copa_dir(root: Path, pairs=PAIRS) -> Path:
    write_task(root / "cause_and_effect" / "two_sentences" / "task.json",
               [{"input": "", "target_scores": {c: 1.0, e: 0.0}} for c, e in pairs])
    return root


WINO = [
    ("The city councilmen refused the demonstrators a permit because they feared violence.", "they",
     "the city councilmen"),
    ("The city councilmen refused the demonstrators a permit because they advocated violence.", "they",
     "the demonstrators"),
    ("Joan made sure to thank Susan for all the help she had recieved.", "she", "joan"),
    ("Joan made sure to thank Susan for all the help she had given.", "she", "susan"),
    ("Fred watched TV while George went out to buy groceries. After an hour he got up.", "he", "fred"),
    ("Fred watched TV while George went out to buy groceries. After an hour he got back.", "he", "george"),
]


def winowhy_dir(root: Path) -> Path:
    examples = []
    for s, p, r in WINO:
        for k, ok in enumerate((1, 0, 1)):
            examples.append({"input": f"{s} The '{p}' refers to {r} because reason {k}.",
                             "target_scores": {"correct": ok, "incorrect": 1 - ok}})
    write_task(root / "winowhy" / "task.json", examples)
    return root


# ---------------------------------------------------------------------------
# templates render the expected strings


def test_sentiment_template():
    e = sentiment_example("A gorgeous, witty, seductive movie.", True, "rt:7")
    assert e == Example("A gorgeous, witty, seductive movie. It was", (" terrible", " great"), 1, "rt:7")
    assert sentiment_example("Effective but too tepid biopic", False, "rt:3").context == \
        "Effective but too tepid biopic It was"
    assert sentiment_example("x", False, "u").label == 0


def test_copa_template():
    e = copa_example("It started raining.", "The driver turned the wipers on.", True, "c:0:effect")
    assert e == Example("It started raining", (" so the driver turned the wipers on.",
                                                " because the driver turned the wipers on."), 0, "c:0:effect")
    e = copa_example("I got an A on the test.", "I studied hard.", False, "c:1:cause")
    assert e.context == "I got an A on the test"
    assert e.candidates == (" so I studied hard.", " because I studied hard.") and e.label == 1


def test_winograd_and_winowhy_templates():
    e = winograd_example("Joan thanked Susan for the help she had given.", "she", ["Joan", "Susan"], 1, "w")
    assert e.context == "Joan thanked Susan for the help she had given. The 'she' refers to"
    assert e.candidates == (" Joan", " Susan") and e.label == 1
    e = winowhy_example("X. The 'it' refers to y because z.", True, "u")
    assert e.context == "X. The 'it' refers to y because z.\nThe above reasoning is"
    assert e.candidates == (" incorrect", " correct") and e.label == 1


# ---------------------------------------------------------------------------
# tasks from local data


def test_sentiment_task_splits(tmp_path):
    f = write_rt(tmp_path / "movieReviewSnippets_GroundTruth.txt", 3900)  # 2600 kept
    t = get_task("sentiment", data_dir=tmp_path)
    assert t.sizes == {"train": 1000, "dev": 500, "test": 1000}
    uids = {s: [e.uid for e in t.split(s)] for s in ("train", "dev", "test")}
    assert len(set(uids["train"]) | set(uids["dev"]) | set(uids["test"])) == 2500  # disjoint
    e = t.split("train")[0]
    i = int(e.uid.split(":")[1])
    assert e.context == f"Sentence number {i} about a film. It was" and e.candidates == (" terrible", " great")
    assert e.label == (1 if i % 3 == 0 else 0) and i % 3 != 2  # |0.2| < 0.5 dropped
    # deterministic per seed, different across seeds; a file path works too
    assert get_task("sentiment", data_dir=f).split("dev") == t.split("dev")
    assert get_task("sentiment", data_dir=tmp_path, seed=1).split("dev") != t.split("dev")
    assert "1000 train / 500 dev / 1000 test" in t.description


def test_small_data_split_2_1_2(tmp_path):
    write_rt(tmp_path / "movieReviewSnippets_GroundTruth.txt", 30)  # 20 kept
    t = get_task("sentiment", data_dir=tmp_path)
    assert t.sizes == {"train": 8, "dev": 4, "test": 8}
    units = [[Example(str(i), ("a",), 0, f"{i}:{j}") for j in range(2)] for i in range(7)]
    s = split_units(units, seed=3)
    assert [len(s[k]) for k in ("train", "dev", "test")] == [6, 2, 6]
    for k in s:  # groups are never cut
        assert all(sum(e.context == x.context for e in s[k]) == 2 for x in s[k])


def test_copa_task(tmp_path):
    t = get_task("copa", data_dir=copa_dir(tmp_path))
    assert t.sizes == {"train": 4, "dev": 2, "test": 4}
    allx = [e for s in ("train", "dev", "test") for e in t.split(s)]
    assert len({e.uid for e in allx}) == 10
    for s in ("train", "dev", "test"):  # both questions of a pair in the same split
        pairs = [e.uid.rsplit(":", 1)[0] for e in t.split(s)]
        assert all(pairs.count(p) == 2 for p in pairs)
        assert t.label_counts(s) == {0: len(pairs) // 2, 1: len(pairs) // 2}
    by_uid = {e.uid: e for e in allx}
    assert by_uid["cause_and_effect:0:effect"] == Example(
        "It started raining", (" so the driver turned the wipers on.", " because the driver turned the wipers on."),
        0, "cause_and_effect:0:effect")
    assert by_uid["cause_and_effect:0:cause"] == Example(
        "The driver turned the wipers on", (" so it started raining.", " because it started raining."),
        1, "cause_and_effect:0:cause")
    # the BIG-bench repository layout works as data_dir too
    repo = tmp_path / "repo"
    copa_dir(repo / "bigbench" / "benchmark_tasks")
    assert get_task("copa", data_dir=repo).split("test") == t.split("test")


def test_winogrande_task(tmp_path):
    t = get_task("winogrande", data_dir=winowhy_dir(tmp_path))
    allx = {e.context.split(" The '")[0]: e for s in ("train", "dev", "test") for e in t.split(s)}
    assert len(allx) == 6
    e = allx[WINO[1][0]]
    assert e.context == WINO[1][0] + " The 'they' refers to"
    assert e.candidates == (" the city councilmen", " the demonstrators") and e.label == 1
    e = allx[WINO[2][0]]
    assert e.candidates == (" Joan", " Susan") and e.label == 0  # capitalisation from the sentence
    assert allx[WINO[5][0]].candidates == (" Fred", " George") and allx[WINO[5][0]].label == 1
    for s in ("train", "dev", "test"):  # twins stay together
        schemas = [e.uid.rsplit(":", 1)[0] for e in t.split(s)]
        assert all(schemas.count(x) == 2 for x in schemas)


def test_winowhy_task(tmp_path):
    t = get_task("winowhy", data_dir=winowhy_dir(tmp_path))
    allx = [e for s in ("train", "dev", "test") for e in t.split(s)]
    assert len(allx) == 18 and t.sizes == {"train": 6, "dev": 6, "test": 6}  # 3 schemas, 2:1:2
    e = next(x for x in allx if x.uid == "winowhy:1")
    assert e.context == f"{WINO[0][0]} The 'they' refers to the city councilmen because reason 1.\n" \
                        "The above reasoning is"
    assert e.label == 0


def test_unknown_task_and_split(tmp_path):
    with pytest.raises(ValueError, match=r"name must be one of \['copa', 'sentiment', 'winogrande', 'winowhy'\]"):
        get_task("sst2")
    assert set(TASKS) == {"sentiment", "copa", "winogrande", "winowhy"}
    t = get_task("copa", data_dir=copa_dir(tmp_path))
    with pytest.raises(ValueError, match="split must be one of"):
        t.split("validation")
    with pytest.raises(ValueError, match="seed must be an integer"):
        get_task("copa", data_dir=tmp_path, seed=-1)


def test_missing_data_says_how_to_get_it(tmp_path):
    with pytest.raises(AssetError, match=r"movieReviewSnippets_GroundTruth\.txt.*`zotheory assets fetch rotten-tomatoes`"):
        get_task("sentiment", data_dir=tmp_path)
    with pytest.raises(AssetError, match=r"`zotheory assets fetch bigbench`"):
        get_task("copa", data_dir=tmp_path)
    with pytest.raises(AssetError, match=r"`zotheory assets fetch rotten-tomatoes`"):
        get_task("sentiment")  # default: the (empty) cache, fetching disabled


# ---------------------------------------------------------------------------
# malformed / truncated files name the path and line


@pytest.mark.parametrize("line, what", [
    ("3\t1.5", r"expected 3 tab-separated fields"),
    ("3\tgood\tA fine film.", r"rating must be a number, got 'good'"),
    ("3\tnan\tA fine film.", r"rating must be a finite number in \[-4, 4\]"),
    ("1\t2.0\tAgain.", r"duplicate id '1' \(first on line 1\)"),
])
def test_malformed_sentiment_file(tmp_path, line, what):
    f = tmp_path / "movieReviewSnippets_GroundTruth.txt"
    f.write_bytes(f"1\t2.0\tGood.\r\n2\t-2.0\tBad.\r\n{line}\r\n4\t1.0\tOk.\r\n".encode())
    with pytest.raises(DataFormatError, match=rf"^{f}:3: {what}"):
        read_rotten_tomatoes(f)
    with pytest.raises(DataFormatError, match=rf"{f}:3:"):
        get_task("sentiment", data_dir=tmp_path)


def test_non_utf8_sentiment_file(tmp_path):
    f = tmp_path / "rt.txt"
    f.write_bytes(b"1\t2.0\tGood.\r\n2\t-2.0\tBad \xff film.\r\n")
    with pytest.raises(DataFormatError, match=rf"^{f}:2: not valid UTF-8"):
        read_rotten_tomatoes(f)


def test_truncated_and_malformed_task_json(tmp_path):
    f = write_task(tmp_path / "cause_and_effect" / "two_sentences" / "task.json",
                   [{"input": "", "target_scores": {c: 1.0, e: 0.0}} for c, e in PAIRS])
    text = f.read_text()
    f.write_text(text[: len(text) // 2])
    with pytest.raises(DataFormatError, match=rf"^{f}:\d+: invalid JSON .*malformed or truncated"):
        read_bigbench_examples(f)
    with pytest.raises(DataFormatError, match=rf"{f}:\d+: invalid JSON"):
        get_task("copa", data_dir=tmp_path)
    write_task(f, [{"input": "", "target_scores": {"a": 1, "b": 0}},
                   {"input": "q", "target_scores": {"a": 1, "b": 1}}])
    with pytest.raises(DataFormatError, match=rf"^{f}:\d+: example 1 must have"):
        read_bigbench_examples(f)
    w = write_task(tmp_path / "winowhy" / "task.json",
                   [{"input": "No pronoun here.", "target_scores": {"correct": 1, "incorrect": 0}}])
    with pytest.raises(DataFormatError, match=rf"{w}: example 0 is not"):
        get_task("winogrande", data_dir=tmp_path)
