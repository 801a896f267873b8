"""``gptiny plot``: train and val loss of one or more runs on one chart, drawn with matplotlib's Agg.

matplotlib is an optional extra (``pip install 'gptiny[plot]'``), imported only here. The figure
is built with the object API, not pyplot, so no global state or GUI backend is involved.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from gptiny_cli.errors import GptinyError
from gptiny_cli.store import atomic
from gptiny_cli.store.history import LossHistory

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MISSING = "plotting needs matplotlib, an optional extra: pip install 'gptiny[plot]'"


def _require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise GptinyError(MISSING) from None


def _draw_run(ax, label: str, history: LossHistory, colour: str) -> None:
    if not history.evals and not history.steps:
        raise GptinyError(f"{label} has no losses logged yet; nothing to plot")
    eval_iters = [it for it, _, _ in history.evals]
    if history.steps:  # every logged batch: noisy, so drawn thin and faint
        ax.plot([it for it, _ in history.steps], [loss for _, loss in history.steps], color=colour,
                linewidth=0.8, alpha=0.4, label=f"{label} train")
    else:
        ax.plot(eval_iters, [tr for _, tr, _ in history.evals], color=colour, linestyle="--",
                label=f"{label} train")
    if history.evals:
        ax.plot(eval_iters, [v for _, _, v in history.evals], color=colour, marker="o", markersize=3,
                linewidth=1.6, label=f"{label} val")
    if history.averages:  # train.ema_decay: the weights' average, from where it began
        ax.plot([it for it, _ in history.averages], [v for _, v in history.averages], color=colour,
                marker="s", markersize=3, linestyle=":", linewidth=1.2, label=f"{label} val (weights' average)")


def loss_figure(runs: list[tuple[str, LossHistory]], log_scale: bool = False) -> Figure:
    """One axis; per run one colour: val loss at each evaluation, train loss at each logged step."""
    _require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    figure = Figure(figsize=(8, 4.5), layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    for i, (label, history) in enumerate(runs):
        _draw_run(ax, label, history, f"C{i % 10}")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss (nats per character)")
    if log_scale:
        ax.set_yscale("log")
        plain = FuncFormatter(lambda value, _: f"{value:g}")  # 2.5, not 2.5×10⁰
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(plain)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    return figure


def save_figure(figure: Figure, out: Path) -> Path:
    """Write the figure in the format its suffix names (png, svg, pdf, ...), atomically."""
    out = Path(out)
    kind = out.suffix.lstrip(".").lower()
    supported = figure.canvas.get_supported_filetypes()
    if kind not in supported:
        raise GptinyError(f"--out {out}: cannot write {kind or 'a file without a suffix'}; "
                          f"use one of .{', .'.join(sorted(supported))}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_with(out, lambda tmp: figure.savefig(tmp, format=kind, dpi=110))
    except OSError as err:
        raise atomic.cannot_write(out, "--out", err) from None
    return out
