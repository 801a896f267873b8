"""Where the validation split comes from: the tail of the joined text, or whole documents.

``tail`` (the default, and the only way before several inputs) keeps the last ``val_fraction``
of the joined text for validation, wherever that cut falls. ``documents`` keeps the last share
of the documents, in order, so no document is split between train and validation; the
separator that would have joined the last training document to the first validation one is
left out. Either way the result is one position: the joined text's first ``train_chars``
characters are the training split, the rest the validation split.
"""

from __future__ import annotations

from dataclasses import dataclass

from gptiny_cli.errors import GptinyError

SPLITS = ("tail", "documents")


@dataclass(frozen=True)
class SplitPlan:
    train_chars: int
    val_chars: int
    skip_separator_before: int | None  # the first validation document, for --split documents
    where: list[str]  # per document: "train", "val" or "train+val" (the tail's cut falls inside it)


def _tail(lengths: list[int], sep: int, val_fraction: float) -> SplitPlan:
    total = sum(lengths) + sep * (len(lengths) - 1)
    n_train = int(total * (1.0 - val_fraction))
    where, start = [], 0
    for length in lengths:
        end = start + length
        where.append("train" if end <= n_train else "val" if start >= n_train else "train+val")
        start = end + sep
    return SplitPlan(n_train, total - n_train, None, where)


def _documents(lengths: list[int], sep: int, val_fraction: float) -> SplitPlan:
    n = len(lengths)
    if n < 2:
        raise GptinyError("--split documents needs at least 2 documents (files), and there is "
                          f"{n}; give more inputs or use --split tail")
    n_val = min(n - 1, max(1, round(n * val_fraction)))
    first_val = n - n_val
    train = sum(lengths[:first_val]) + sep * (first_val - 1)
    val = sum(lengths[first_val:]) + sep * (n_val - 1)
    return SplitPlan(train, val, first_val, ["train"] * first_val + ["val"] * n_val)


def plan_split(lengths: list[int], separator_chars: int, split: str, val_fraction: float,
               what: str) -> SplitPlan:
    """The split of documents of these lengths (in characters), joined by a separator this long."""
    if split not in SPLITS:
        raise GptinyError(f"--split {split!r} is invalid: must be one of {', '.join(SPLITS)}")
    if not 0.0 < val_fraction < 1.0:
        raise GptinyError(f"--val-fraction {val_fraction} is invalid: must be between 0 and 1")
    plan = (_tail if split == "tail" else _documents)(lengths, separator_chars, val_fraction)
    if plan.train_chars < 2 or plan.val_chars < 2:
        raise GptinyError(
            f"{what} is too small to split: {plan.train_chars + plan.val_chars} characters give "
            f"{plan.train_chars} training and {plan.val_chars} validation characters; each needs at least 2"
        )
    return plan


def separators(count: int, plan: SplitPlan) -> int:
    """How many separators the joined text of ``count`` documents holds under ``plan``."""
    return max(count - 1 - (plan.skip_separator_before is not None), 0)
