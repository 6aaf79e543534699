"""Small shared test data (imported as ``from examples import ...``; pytest puts ``tests/`` on ``sys.path``)."""

from __future__ import annotations

import dataclasses


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
