"""Starting training: the session a ``Plan`` describes, and ``--nproc``, which starts several processes.

``build_session`` is the one way from a plan (``plan.plan``) to a session: a new run
(``session.open_new``) or one that goes on from its checkpoint (``resume.reopen``).

``--nproc N`` runs torchrun's own launcher (``torch.distributed.run``) in this process,
which starts N workers on this machine, each running ``gptiny train`` with the same request.
"""

from __future__ import annotations

from pathlib import Path

from gptiny_cli.data import load_corpus
from gptiny_cli.errors import GptinyError
from gptiny_cli.training import distributed
from gptiny_cli.training.distributed import World
from gptiny_cli.training.plan import Plan, TrainRequest, plan
from gptiny_cli.training.resume import reopen
from gptiny_cli.training.session import Session, check_config_against_data, open_new


def build_session(planned: Plan, world: World) -> Session:
    """The session a plan describes: a new run opened (from a parent's weights when it has one), or an
    existing one reopened at its checkpoint."""
    if planned.kind == "new":
        return open_new(planned, world)
    return reopen(planned, world)


def _precheck(request: TrainRequest, nproc: int) -> None:
    """The usual one-line errors before any process starts, instead of one from each."""
    if nproc < 1:
        raise GptinyError(f"--nproc {nproc} is invalid: start at least 1 process")
    if distributed.under_torchrun():
        raise GptinyError("--nproc starts torchrun itself; leave it out when the job runs under torchrun")
    if nproc > 1 and request.device not in ("auto", "cuda", "cpu"):
        raise GptinyError(f"--device {request.device!r} cannot be used with --nproc: each process takes "
                          "cuda:LOCAL_RANK; give --device auto, cuda or cpu")
    planned = plan(request, distributed.single("cpu"), processes=nproc)
    if planned.kind != "resume":
        check_config_against_data(planned.config, load_corpus(Path(planned.config.data.path)))


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
