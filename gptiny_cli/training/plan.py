"""Which run a process trains, decided once and before anything is built: a ``Plan``.

A worker trains a new run, a resumed one (``--resume``), a named directory (``--run-dir``:
created, or continued from its checkpoint), or, when torchrun restarts a failed job, the
run that job started (found by torchrun's rendezvous id). Rank 0 decides where and tells the
other ranks, so they never disagree about the directory. The config that will train is
settled and validated here too (TensorBoard included): resume overrides, the identity of a
continued run, a batch shared by a different number of processes. ``build_session`` in
``launch`` then builds what the plan describes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from gptiny_cli.config import RunConfig, config_from_dict, load_config, parse_override, read_toml
from gptiny_cli.errors import GptinyError
from gptiny_cli.store import manifest, runs
from gptiny_cli.training import finetune
from gptiny_cli.training.distributed import World


@dataclass(frozen=True)
class TrainRequest:
    """What ``gptiny train`` was asked to do."""

    config: Path | None = None
    overrides: list[str] = field(default_factory=list)
    device: str = "auto"
    runs_dir: Path = Path("runs")
    name: str | None = None
    resume: str | None = None
    run_dir: Path | None = None
    init_from: str | None = None  # fine-tune: start a new run from this run's weights (finetune.py)
    init_checkpoint: str | None = None

    def check(self) -> None:
        if self.init_from and self.resume:
            raise GptinyError("--init-from starts a new run from another's weights; --resume continues one; "
                              "give one of them")
        if self.init_checkpoint and not self.init_from:
            raise GptinyError("--init-checkpoint chooses the weights of --init-from RUN; give --init-from too")
        if self.resume and self.config is not None:
            raise GptinyError("give either a CONFIG (a new run) or --resume RUN (which keeps its own config), "
                              "not both")
        if self.resume and self.run_dir:
            raise GptinyError("give either --resume RUN or --run-dir DIR, not both")
        if self.config is None and self.resume is None:
            raise GptinyError("give a CONFIG to train (e.g. configs/shakespeare.toml) or --resume RUN")

    def worker_args(self) -> list[str]:
        """This request as ``gptiny train`` arguments, for the processes torchrun starts."""
        args = ["train"] + ([str(self.config)] if self.config else [])
        for override in self.overrides:
            args += ["--set", override]
        args += ["--device", self.device, "--runs-dir", str(self.runs_dir)]
        for option, value in (("--name", self.name), ("--resume", self.resume), ("--run-dir", self.run_dir),
                              ("--init-from", self.init_from), ("--init-checkpoint", self.init_checkpoint)):
            if value is not None:
                args += [option, str(value)]
        return args


@dataclass(frozen=True)
class Plan:
    """Which run to train and with which config; nothing is built or written yet."""

    kind: Literal["new", "resume", "continue"]  # continue: --run-dir or a restarted job, with its own config
    config: RunConfig  # validated, with grad_accum fitted to the number of processes
    run_dir: Path | None  # None: a new directory under ``runs_dir``
    name: str = "run"
    runs_dir: Path = Path("runs")
    changes: Mapping[str, Any] = field(default_factory=dict)  # resumable keys this start changes
    info: Mapping[str, Any] = field(default_factory=dict)  # run.json as the run left it
    parent: finetune.Parent | None = None  # a new run fine-tuned from another's weights


def plan(request: TrainRequest, world: World, processes: int | None = None) -> Plan:
    """The plan of this process, on every rank of a job the same; errors are raised on every rank.

    ``processes`` is how many will train when not ``world.size``: ``--nproc`` plans in the
    launcher, a world of one, before it starts them.
    """
    request.check()
    config, parent = None, None
    if not request.resume:
        config = load_config(request.config, request.overrides)
        config.log.require_installed()
    if request.init_from:  # the parent's model keys, also for a restarted job that continues the new run
        config, parent = finetune.plan(config, request.config, request.overrides, request.init_from,
                                       request.init_checkpoint or "best", request.runs_dir)
    kind, where = _agreed_target(request, world)
    size = processes or world.size
    if kind == "resume":
        return plan_resume(Path(where), request.overrides, size)
    if kind == "continue":
        return plan_continue(Path(where), config, size)
    new = plan_new(config, request.name or request.config.stem, request.runs_dir, Path(where) if where else None)
    return replace(new, parent=parent)


def _target(request: TrainRequest, world: World) -> tuple[str, str]:
    """How to start and in which directory: ("resume" | "continue" | "new", path or "" for a fresh one)."""
    if request.resume:
        return "resume", str(runs.resolve_run(request.resume, request.runs_dir))
    if request.run_dir:
        return ("continue" if _has_checkpoint(request.run_dir) else "new"), str(request.run_dir)
    if world.restart and world.run_id:
        found = runs.find_job_run(request.runs_dir, world.run_id)
        if found is not None:
            return ("continue" if _has_checkpoint(found) else "new"), str(found)
    return "new", ""


def _has_checkpoint(run_dir: Path) -> bool:
    return manifest.saved_step(run_dir) is not None


def _agreed_target(request: TrainRequest, world: World) -> tuple[str, str]:
    """Rank 0's ``_target`` on every rank; an error there is raised on every rank."""
    decision = ""
    if world.is_main:
        try:
            decision = json.dumps(_target(request, world))
        except GptinyError as error:
            decision = json.dumps(["error", str(error)])
    how, where = json.loads(world.broadcast(decision))
    if how == "error":
        raise GptinyError(where)
    return how, where


def plan_new(config: RunConfig, name: str = "run", runs_dir: Path = Path("runs"), run_dir: Path | None = None) -> Plan:
    """A new run: in a new directory under ``runs_dir``, or in ``run_dir``, which must be empty or
    hold a start of this same config that failed before its first checkpoint."""
    if run_dir is not None and Path(run_dir).is_dir():
        if (Path(run_dir) / "config.toml").is_file():
            same_run(Path(run_dir), config)
        elif any(Path(run_dir).iterdir()):
            raise GptinyError(f"{run_dir} is not empty and holds no gptiny run; name a new or empty run directory")
    return Plan("new", config, run_dir, runs.check_run_name(name), runs_dir)


def plan_resume(run_dir: Path, overrides: list[str] = (), processes: int = 1) -> Plan:
    """Going on with a run under its own config, changed only by the ``--set`` overrides a resume allows."""
    run_dir = Path(run_dir)
    runs.require_files(run_dir)
    config, changes = _resume_config(run_dir, list(overrides))
    config.log.require_installed()
    return _fitted(Plan("resume", config, run_dir, changes=changes, info=runs.read_run_info(run_dir)), processes)


def plan_continue(run_dir: Path, config: RunConfig, processes: int = 1) -> Plan:
    """Going on with a run under ``config``, which must be the run's own (``same_run``)."""
    run_dir = Path(run_dir)
    runs.require_files(run_dir)
    changes = same_run(run_dir, config)
    return _fitted(Plan("continue", config, run_dir, changes=changes, info=runs.read_run_info(run_dir)), processes)


def _fitted(planned: Plan, processes: int) -> Plan:
    """The plan with the run's global batch kept on ``processes``, unless it sets grad_accum itself."""
    if "train.grad_accum" in planned.changes:
        return planned
    fitted = fit_world(planned.config, planned.info, processes, planned.run_dir)
    if fitted is planned.config:
        return planned
    return replace(planned, config=fitted, changes={**planned.changes, "train.grad_accum": fitted.train.grad_accum})


def _resume_config(run_dir: Path, overrides: list[str]) -> tuple[RunConfig, dict[str, Any]]:
    """The run's config with the ``--set`` overrides a resume allows, and those overrides."""
    raw = read_toml(run_dir / "config.toml")
    changes = {}
    for text in overrides:
        section, key, value = parse_override(text)
        if f"{section}.{key}" not in manifest.RESUMABLE:
            allowed = ", ".join(sorted(manifest.RESUMABLE))
            raise GptinyError(f"--set {section}.{key} cannot change when resuming; allowed: {allowed}")
        table = raw.setdefault(section, {})
        if not isinstance(table, dict):
            raise GptinyError(f"{run_dir}/config.toml is damaged: [{section}] is not a table")
        table[key] = value
        changes[f"{section}.{key}"] = value
    return config_from_dict(raw), changes


def fit_world(config: RunConfig, info: Mapping[str, Any], world_size: int, run_dir: Path) -> RunConfig:
    """The config with ``grad_accum`` set so that the run's global batch stays what it was.

    A step takes ``grad_accum × world_size`` micro-batches; on a different number of
    processes each takes an equal share of them, which is possible when they divide evenly.
    """
    t, before = config.train, int(info.get("world_size", 1))
    if before == world_size:
        return config
    micro = t.grad_accum * before
    if micro % world_size:
        divisors = [str(n) for n in range(1, micro + 1) if micro % n == 0]
        options = " or ".join([", ".join(divisors[:-1]), divisors[-1]] if len(divisors) > 1 else divisors)
        raise GptinyError(
            f"{run_dir} takes {micro} micro-batches of {t.batch_size} sequences per step (a global batch of "
            f"{micro * t.batch_size}), which {world_size} processes cannot share evenly; resume it on "
            f"{options} processes, or choose a new batch with --set train.grad_accum=N"
        )
    return replace(config, train=replace(t, grad_accum=micro // world_size))


def same_run(run_dir: Path, config: RunConfig) -> dict[str, Any]:
    """The resumable keys in which ``config`` differs from the run's stored config, or an error
    naming the others: with those, ``config`` would train a different run."""
    stored = config_from_dict(read_toml(run_dir / "config.toml"))
    ours, theirs = manifest.identity(config), manifest.identity(stored)
    changed = [f"{key} ({theirs.get(key)!r} there, {ours.get(key)!r} here)"
               for key in sorted(set(ours) | set(theirs)) if ours.get(key) != theirs.get(key)]
    if changed:
        raise GptinyError(f"{run_dir} holds a run with a different config: {', '.join(changed)}; "
                          "name another run directory or give the same config")
    now, before = _flat(config), _flat(stored)
    return {key: now[key] for key in sorted(manifest.RESUMABLE & now.keys()) if now[key] != before.get(key)}


def _flat(config: RunConfig) -> dict[str, Any]:
    return {f"{section}.{key}": value for section, values in config.to_dict().items() for key, value in values.items()}
