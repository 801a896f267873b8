"""``gptiny plot SWEEP``: the val loss of each trial against each swept key, and against parameter count.

One panel per key (and one for parameters when the trials differ in size): each done trial is a point at
its mean, with its seeds' standard deviation as an error bar. matplotlib as in ``plot``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gptiny_cli.errors import GptinyError
from gptiny_cli.report.plot import _require_matplotlib

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _numeric(values: list[Any]) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def sweep_figure(name: str, rows: list[dict[str, Any]]) -> Figure:
    """Val loss (mean ± std over seeds) of the done trials of a sweep, against each swept key."""
    _require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    done = [r for r in rows if r["state"] == "done" and r["val"] is not None]
    if not done:
        raise GptinyError(f"{name} has no finished trials yet; nothing to plot")
    axes_of = list(done[0]["values"])
    if len({r.get("parameters") for r in done}) > 1:
        axes_of.append("parameters")
    figure = Figure(figsize=(4 * len(axes_of), 3.8), layout="constrained")
    FigureCanvasAgg(figure)
    for i, key in enumerate(axes_of, 1):
        ax = figure.add_subplot(1, len(axes_of), i, sharey=figure.axes[0] if figure.axes else None)
        xs = [r.get("parameters") if key == "parameters" else r["values"][key] for r in done]
        if not _numeric(xs):
            labels = sorted({str(x) for x in xs})
            xs = [labels.index(str(x)) for x in xs]
            ax.set_xticks(range(len(labels)), labels)
        elif min(xs) > 0 and max(xs) / min(xs) >= 10:
            ax.set_xscale("log")
        ax.errorbar(xs, [r["val"] for r in done], yerr=[r.get("std") or 0.0 for r in done], fmt="o", capsize=3)
        ax.set_xlabel(key)
        ax.grid(True, which="both", alpha=0.3)
    figure.axes[0].set_ylabel("val loss (nats per character)")
    figure.suptitle(name, fontsize="small")
    return figure
