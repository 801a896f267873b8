"""``gptiny attention``'s figure: one heat map per layer (rows) and head (columns) of the attention
over a prompt, drawn with matplotlib's object API (the optional ``plot`` extra, imported here only).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gptiny_cli.report.attention import Insight
from gptiny_cli.report.plot import _require_matplotlib

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _label(piece: str) -> str:
    """A token's text (a character, or a BPE piece) as a tick label: whitespace made visible."""
    return "".join({"\n": "⏎", " ": "␣", "\t": "⇥"}.get(ch, ch) for ch in piece)


def attention_figure(seen: Insight, pieces: tuple[str, ...]) -> Figure:
    """A grid of L × H heat maps; in each, row t (a query) shades the tokens 0..t by weight."""
    _require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    layers, heads, T, _ = seen.attention.shape
    labels = [_label(pieces[t]) for t in seen.tokens]
    side = max(2.2, min(6.0, 0.16 * T + 1.0))
    figure = Figure(figsize=(side * heads, side * layers), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(layers, heads, squeeze=False)
    ticks = list(range(T)) if T <= 48 else list(range(0, T, max(1, T // 24)))
    for layer in range(layers):
        for head in range(heads):
            ax = axes[layer][head]
            ax.imshow(seen.attention[layer, head].numpy(), cmap="magma", vmin=0.0, vmax=1.0,
                      interpolation="nearest")
            ax.set_title(f"layer {layer} · head {head}", fontsize="small")
            ax.set_xticks(ticks, [labels[t] for t in ticks], fontsize=6, fontfamily="monospace")
            ax.set_yticks(ticks, [labels[t] for t in ticks], fontsize=6, fontfamily="monospace")
    figure.supxlabel("attended token (key)")
    figure.supylabel("attending token (query)")
    return figure
