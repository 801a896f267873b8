"""Starting a training job: which run a process trains, and ``--nproc``, which starts several.

A worker trains a new run, a resumed one (``--resume``), a named directory (``--run-dir``:
created, or continued from its checkpoint), or, when torchrun restarts a failed job, the
run that job started (found by torchrun's rendezvous id). Rank 0 decides and tells the
other ranks, so they never disagree about the directory.

``--nproc N`` runs torchrun's own launcher (``torch.distributed.run``) in this process,
which starts N workers on this machine, each running ``gptiny train`` with the same request.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from gptiny_cli.config import RunConfig, config_from_dict, load_config, parse_override, read_toml
from gptiny_cli.data import load_corpus
from gptiny_cli.errors import GptinyError
from gptiny_cli.store import manifest
from gptiny_cli.store.runs import find_job_run, read_run_info, require_files, resolve_run
from gptiny_cli.training import distributed, finetune
from gptiny_cli.training.distributed import World
from gptiny_cli.training.resume import fit_world, resume
from gptiny_cli.training.session import Session, check_config_against_data, setup


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

    def load_config(self) -> RunConfig | None:
        """The run's config from CONFIG and --set; None when resuming (the run has its own)."""
        if self.resume:
            return None
        config = load_config(self.config, self.overrides)
        config.log.require_installed()
        return config

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


def _stored_config(run_dir: Path) -> RunConfig:
    return config_from_dict(read_toml(run_dir / "config.toml"))


def _has_checkpoint(run_dir: Path) -> bool:
    return manifest.saved_step(run_dir) is not None


def _target(request: TrainRequest, world: World) -> tuple[str, str]:
    """How to start and in which directory: ("resume" | "continue" | "new", path or "" for a fresh one)."""
    if request.resume:
        return "resume", str(resolve_run(request.resume, request.runs_dir))
    if request.run_dir:
        return ("continue" if _has_checkpoint(request.run_dir) else "new"), str(request.run_dir)
    if world.restart and world.run_id:
        found = find_job_run(request.runs_dir, world.run_id)
        if found is not None:
            return ("continue" if _has_checkpoint(found) else "new"), str(found)
    return "new", ""


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


def start_session(request: TrainRequest, world: World) -> Session:
    """The session this process trains, on every rank of a job the same run."""
    request.check()
    config = request.load_config()
    how, where = _agreed_target(request, world)
    if how == "resume":
        if (Path(where) / "config.toml").is_file():  # else resume names what is missing
            _stored_config(Path(where)).log.require_installed()
        return resume(Path(where), overrides=request.overrides, world=world)
    if how == "continue":
        return resume(Path(where), world=world, config=config)
    name = request.name or request.config.stem
    parent = None
    if request.init_from:
        config, parent = _fine_tuning(request, config)
    session = setup(config, runs_dir=request.runs_dir, name=name, world=world, run_dir=Path(where) if where else None)
    if parent:
        finetune.start_from(session, parent)
    return session


def _fine_tuning(request: TrainRequest, config: RunConfig) -> tuple[RunConfig, finetune.Parent]:
    """For --init-from: the config reconciled with the parent run, and the parent."""
    return finetune.plan(config, request.config, request.overrides, request.init_from,
                         request.init_checkpoint or "best", request.runs_dir)


def _precheck(request: TrainRequest, nproc: int) -> None:
    """The usual one-line errors before any process starts, instead of one from each."""
    if nproc < 1:
        raise GptinyError(f"--nproc {nproc} is invalid: start at least 1 process")
    if distributed.under_torchrun():
        raise GptinyError("--nproc starts torchrun itself; leave it out when the job runs under torchrun")
    if nproc > 1 and request.device not in ("auto", "cuda", "cpu"):
        raise GptinyError(f"--device {request.device!r} cannot be used with --nproc: each process takes "
                          "cuda:LOCAL_RANK; give --device auto, cuda or cpu")
    request.check()
    config = request.load_config()
    if config is None:
        run_dir = resolve_run(request.resume, request.runs_dir)
        require_files(run_dir)
        stored = _stored_config(run_dir)
        stored.log.require_installed()
        if not any(parse_override(text)[:2] == ("train", "grad_accum") for text in request.overrides):
            fit_world(stored, read_run_info(run_dir), nproc, run_dir)
    else:
        if request.init_from:
            config, _ = _fine_tuning(request, config)
        check_config_against_data(config, load_corpus(Path(config.data.path)))


def run_local(nproc: int, request: TrainRequest) -> int:
    """Train with ``nproc`` processes on this machine; returns the exit status (128 + signal if stopped).

    A worker that fails makes torchrun stop the others; that becomes a GptinyError naming it.
    """
    _precheck(request, nproc)
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    args = parse_args(["--standalone", "--nproc-per-node", str(nproc), "-m", "gptiny_cli",
                       *request.worker_args()])
    try:
        run(args)
    except SignalException as stopped:  # Ctrl-C or SIGTERM: the workers saved and said how to resume
        return 128 + int(stopped.sigval)
    except ChildFailedError as failed:
        raise GptinyError(describe_failure(failed)) from None
    return 0


def describe_failure(failed) -> str:
    """One line from torchrun's ChildFailedError: which rank failed first, and how."""
    rank, first = failed.get_first_failure()
    if first.exitcode < 0:
        how = f"was killed by {first.signal_name()}"
    else:
        how = f"exited with status {first.exitcode}"
    return f"rank {rank} (local rank {first.local_rank}) {how}; torchrun stopped the other ranks and the job"
