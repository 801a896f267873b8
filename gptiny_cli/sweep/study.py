"""A sweep's study: its directory, the Optuna study in it, and the trials, each K normal runs trained here.

The sweep directory ``runs/<sweep-id>/`` holds ``sweep.json`` (what was asked), ``study.db`` (the Optuna
study, unless ``--storage`` names another database), one run directory per trial and seed
(``t007-s1/``, a normal run that ``gptiny runs``, ``plot``, ``eval`` and ``sample`` read), then
``results.jsonl`` and ``best.toml`` (``results``). A trial's value is the mean over its seeds of the
whole-split val loss of each run's best weights. Its first seed's evaluations feed the pruner.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gptiny_cli.config import read_toml
from gptiny_cli.errors import GptinyError
from gptiny_cli.store import atomic, runs
from gptiny_cli.sweep.spec import Param, grid_size, parse_params

SEARCHES = ("grid", "random", "tpe")
INSTALL = "gptiny sweep needs Optuna: pip install 'gptiny[sweep]'"


def optuna():
    try:
        import optuna as module
    except ImportError:
        raise GptinyError(INSTALL) from None
    module.logging.set_verbosity(module.logging.ERROR)
    return module


@dataclass
class Sweep:
    dir: Path
    config: Path
    params: list[Param]
    seeds: int
    search: str
    trials: int | None  # None: the whole grid, or until stopped
    time: str | None
    prune: bool
    storage: str
    study: Any = field(default=None, repr=False)

    @property
    def base(self) -> dict[str, Any]:
        return read_toml(self.config)


def storage_url(sweep_dir: Path, storage: str | None) -> str:
    return storage or f"sqlite:///{(sweep_dir / 'study.db').resolve()}"


def create(config: Path, param_texts: list[str], runs_dir: Path, seeds: int, search: str | None,
           trials: int | None, time: str | None, prune: bool, storage: str | None, name: str | None) -> Sweep:
    """A new sweep directory and study, everything checked first so nothing is written for a bad request."""
    base = read_toml(config)
    params = parse_params(param_texts, base)
    search = search or ("grid" if all(p.discrete for p in params) else "tpe")
    if search not in SEARCHES:
        raise GptinyError(f"--search {search} is unknown: give grid, random or tpe")
    if search == "grid":
        grid_size(params)  # each key must be discrete
    if seeds < 1:
        raise GptinyError(f"--seeds {seeds} is invalid: give 1 or more")
    if trials is not None and trials < 1:
        raise GptinyError(f"--trials {trials} is invalid: give 1 or more")
    if search != "grid" and trials is None:
        raise GptinyError(f"--search {search} has no end by itself: give --trials N")
    if time is not None:
        from gptiny_cli.training.budget import parse_minutes

        parse_minutes(time)
    optuna()
    sweep_dir = runs.create_run_dir(runs_dir, f"sweep-{name or config.stem}")
    sweep = Sweep(sweep_dir, config.resolve(), params, seeds, search, trials, time, prune,
                  storage_url(sweep_dir, storage))
    atomic.write_json(sweep_dir / "sweep.json", {
        "config": str(sweep.config), "params": param_texts, "seeds": seeds, "search": search, "trials": trials,
        "time": time, "prune": prune, "storage": storage})
    return open_study(sweep, create=True)


def reopen(sweep_dir: Path, storage: str | None = None) -> Sweep:
    """An existing sweep, from its sweep.json, to go on with (``--resume``, or a second worker)."""
    try:
        asked = json.loads((sweep_dir / "sweep.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GptinyError(f"{sweep_dir} is not a sweep (no sweep.json); give the directory `gptiny sweep` "
                          "made") from None
    except ValueError:
        raise GptinyError(f"{sweep_dir}/sweep.json is damaged") from None
    config = Path(asked["config"])
    sweep = Sweep(sweep_dir, config, parse_params(asked["params"], read_toml(config)), asked["seeds"],
                  asked["search"], asked["trials"], asked["time"], asked["prune"],
                  storage_url(sweep_dir, storage or asked["storage"]))
    return open_study(sweep, create=False)


def open_study(sweep: Sweep, create: bool) -> Sweep:
    opt = optuna()
    # A grid is the points queued in the study when it is made (``_queue_grid``), which any worker takes
    # from the queue; Optuna's GridSampler stops the study from inside ``tell``, which only works in ``optimize``.
    if sweep.search in ("grid", "random"):
        sampler = opt.samplers.RandomSampler()
    else:
        sampler = opt.samplers.TPESampler()
    pruner = opt.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0) if sweep.prune else opt.pruners.NopPruner()
    name = sweep.dir.name
    try:
        sweep.study = opt.create_study(study_name=name, storage=sweep.storage, sampler=sampler, pruner=pruner,
                                       direction="minimize", load_if_exists=not create)
    except Exception as err:  # a bad URL, a missing driver, a locked or foreign database
        raise GptinyError(f"cannot open the study at {sweep.storage}: {err}") from None
    if create and sweep.search == "grid":
        _queue_grid(sweep)
    return sweep


def _queue_grid(sweep: Sweep) -> None:
    points = list(itertools.product(*(p.grid() for p in sweep.params)))[:sweep.trials]
    for point in points:
        sweep.study.enqueue_trial(dict(zip([p.key for p in sweep.params], point, strict=True)))


@dataclass
class TrialEvent:
    """Something happened to a trial: the row changed (``row``), for the live table."""

    row: dict[str, Any]


def is_sweep(path: Path) -> bool:
    return (Path(path) / "sweep.json").is_file()


def trial_runs(sweep_dir: Path) -> list[Path]:
    return sorted(p for p in Path(sweep_dir).iterdir() if re.fullmatch(r"t\d+-s\d+", p.name) and p.is_dir())


def mean_std(values: list[float]) -> tuple[float, float | None]:
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
