"""The one exception type for expected failures (bad input, bad files, bad configs), and
``listing``, how its messages (and other text for people) name a long list of things."""

from __future__ import annotations

from collections.abc import Sequence


class GptinyError(Exception):
    """An error the user can fix; the CLI shows its message on one line and exits 1."""


def listing(items: Sequence[str], shown: int, sep: str = ", ") -> str:
    """The first ``shown`` of ``items`` joined by ``sep``, and then "and N more" for the rest."""
    more = [f"and {len(items) - shown} more"] if len(items) > shown else []
    return sep.join([*items[:shown], *more])
