"""``--param KEY=SPEC``: which values a swept config key takes.

SPEC is ``a,b,c`` (these values, typed like ``--set``), ``2..6`` (every integer from 2 to 6) or
``log:1e-4..1e-2`` (a float drawn log-uniformly between the two). A grid search needs every key
discrete (values or an integer range).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from gptiny_cli.config import config_from_dict, parse_override
from gptiny_cli.errors import GptinyError


@dataclass(frozen=True)
class Param:
    key: str  # section.name, e.g. train.learning_rate
    values: tuple[Any, ...] = ()  # a list of values; empty for a range
    low: float | None = None
    high: float | None = None
    log: bool = False  # log:LOW..HIGH, a float

    @property
    def discrete(self) -> bool:
        return not self.log

    def grid(self) -> list[Any]:
        if self.values:
            return list(self.values)
        if not self.log:
            return list(range(int(self.low), int(self.high) + 1))
        raise GptinyError(f"--param {self.key}=log:… is a continuous range; a grid search needs values "
                          "(a,b,c) or an integer range (2..6): use --search random or tpe")

    def suggest(self, trial) -> Any:
        if self.values:
            return trial.suggest_categorical(self.key, list(self.values))
        if self.log:
            return trial.suggest_float(self.key, self.low, self.high, log=True)
        return trial.suggest_int(self.key, int(self.low), int(self.high))


def _bad(text: str, why: str) -> GptinyError:
    return GptinyError(f"--param {text}: {why} (give KEY=a,b,c, KEY=2..6 or KEY=log:1e-4..1e-2)")


def _number(text: str, part: str) -> float:
    try:
        return float(part)
    except ValueError:
        raise _bad(text, f"{part!r} is not a number") from None


def parse_param(text: str, base: dict[str, Any]) -> Param:
    """One ``--param``, checked against the config ``base`` (a raw dict): every value must be valid there."""
    key, sep, spec = text.partition("=")
    key, spec = key.strip(), spec.strip()
    if not sep or not key or not spec:
        raise _bad(text, "expected KEY=SPEC")
    if spec.startswith("log:") or ".." in spec:
        log = spec.startswith("log:")
        low_text, dots, high_text = spec.removeprefix("log:").partition("..")
        if not dots:
            raise _bad(text, "a log range is log:LOW..HIGH")
        low, high = _number(text, low_text), _number(text, high_text)
        if not low < high:
            raise _bad(text, f"the range {low:g}..{high:g} is empty: LOW must be below HIGH")
        if log and low <= 0:
            raise _bad(text, "a log range must be above 0")
        if not log and not (low.is_integer() and high.is_integer()):
            raise _bad(text, "LOW..HIGH is an integer range; for floats give log:LOW..HIGH or values a,b,c")
        param = Param(key, low=low, high=high, log=log)
        _check(text, key, [low, high] if log else [int(low), int(high)], base)
        return param
    values = []
    for part in spec.split(","):
        if not part.strip():
            raise _bad(text, "an empty value")
        _, _, value = _override(text, f"{key}={part.strip()}")
        values.append(value)
    if len(set(map(repr, values))) != len(values):
        raise _bad(text, "a value is given twice")
    _check(text, key, values, base)
    return Param(key, values=tuple(values))


def _override(text: str, override: str) -> tuple[str, str, Any]:
    try:
        return parse_override(override)
    except GptinyError as err:
        raise _bad(text, str(err)) from None


def _check(text: str, key: str, values: list[Any], base: dict[str, Any]) -> None:
    """Each value through the config's own rules, so a typo or an invalid value fails before any training."""
    section, _, name = key.partition(".")
    for value in values:
        raw = {s: dict(v) for s, v in base.items()}
        raw.setdefault(section, {})[name] = value
        try:
            config_from_dict(raw)
        except GptinyError as err:
            raise GptinyError(f"--param {text}: {err}") from None


def parse_params(texts: list[str], base: dict[str, Any]) -> list[Param]:
    if not texts:
        raise GptinyError("give at least one --param KEY=SPEC, e.g. --param train.learning_rate=1e-3,2e-3")
    params = [parse_param(text, base) for text in texts]
    keys = [p.key for p in params]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise GptinyError(f"--param {twice[0]} is given twice; give each key once")
    return params


def grid_size(params: list[Param]) -> int:
    return math.prod(len(p.grid()) for p in params)
