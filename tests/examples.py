"""Small shared test data and helpers (imported as ``from examples import ...``; pytest puts ``tests/`` on ``sys.path``)."""

from __future__ import annotations

import dataclasses

import torch


@dataclasses.dataclass(frozen=True)
class Ex:
    """The fields of ``zotheory.llm.tasks.Example`` the scoring needs."""

    context: str
    candidates: tuple
    label: int
    uid: str = ""


#: A three-example batch with single-token candidates (two share a context).
BATCH = [Ex("The movie was great. It was", (" terrible", " great"), 1),
         Ex("a dull plot. It was", (" terrible", " great"), 0),
         Ex("the cast is good, so", (" yes", " no"), 0)]


WORDS = ("great", "good", "fine", "bad", "dull", "terrible")


class ToyTask:
    """Sentiment-like examples from a fixed generator (train 24 / dev 8 / test 8 by default): the
    task the fine-tuning tests pass to ``train(..., task=ToyTask())``."""

    def __init__(self, sizes=(("train", 24), ("dev", 8), ("test", 8))):
        self.data = {}
        for k, (name, n) in enumerate(sizes):
            g = torch.Generator().manual_seed(100 + k)
            out = []
            for i in range(n):
                w = WORDS[int(torch.randint(0, len(WORDS), (1,), generator=g))]
                out.append(Ex(f"The film was {w}. It was", (" terrible", " great"), int(w in WORDS[:3]), f"{name}{i}"))
            self.data[name] = out

    def split(self, name):
        return list(self.data[name])


def run_main(argv, capsys):
    """``zotheory.cli.main(argv)`` -> (exit code, stdout, stderr); argparse's exit counts as a return."""
    from zotheory.cli import main

    try:
        code = main([str(a) for a in argv])
    except SystemExit as stop:
        code = stop.code
    out = capsys.readouterr()
    return code, out.out, out.err


class NanAt:
    """Wrap scoring.loss_closure so the loss is nan at chosen training steps (counted by closures made)."""

    def __init__(self, real, steps):
        self.real, self.steps, self.made = real, set(steps), 0

    def __call__(self, model, tok, batch, grad=False, **kwargs):
        self.made += 1
        inner = self.real(model, tok, batch, grad=grad, **kwargs)
        if self.made in self.steps:
            return lambda: inner() * float("nan")
        return inner
