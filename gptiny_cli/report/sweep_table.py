"""How a sweep looks: its trials as a table while it runs, its leaderboard at the end; pure functions of rows."""

from __future__ import annotations

from typing import Any

from rich.table import Table

STYLE = {"running": "cyan", "done": "green", "pruned": "yellow", "failed": "red", "interrupted": "magenta"}


def _values(values: dict[str, Any]) -> str:
    return " ".join(f"{key.partition('.')[2] or key}={value:g}" if isinstance(value, float)
                    else f"{key.partition('.')[2] or key}={value}" for key, value in values.items())


def _val(row: dict[str, Any]) -> str:
    if row.get("val") is None:
        now = row.get("val_now")
        return "" if now is None else f"({now:.4f})"
    std = row.get("std")
    return f"{row['val']:.4f}" + (f" ± {std:.4f}" if std is not None else "")


def render(rows: list[dict[str, Any]]) -> Table:
    """Every trial: its values, steps, val (mean ± std over seeds; in brackets, the latest evaluation) and state."""
    table = Table(title="trials")
    for name in ("trial", "values", "steps", "val", "state"):
        table.add_column(name, justify="right" if name in ("trial", "steps") else "left")
    for row in rows:
        state = row["state"]
        why = f": {row['reason']}" if row.get("reason") else ""
        table.add_row(str(row["trial"]), _values(row["values"]), str(row.get("steps", 0)), _val(row),
                      f"[{STYLE.get(state, 'white')}]{state}[/]{why}")
    return table


def render_leaderboard(board: list[dict[str, Any]]) -> Table:
    """Done trials, best first; ``≈`` marks those not distinguishable from the best."""
    table = Table(title="leaderboard (≈: within 2 pooled standard errors of the best)")
    for name in ("rank", "trial", "values", "val (mean ± std)", "seeds", ""):
        table.add_column(name)
    for rank, row in enumerate(board, 1):
        table.add_row(str(rank), str(row["trial"]), _values(row["values"]), _val(row), str(len(row["seeds"])),
                      "≈ best" if row.get("tied") and rank > 1 else ("best" if rank == 1 else ""))
    return table


def plain_line(row: dict[str, Any]) -> str:
    why = f" ({row['reason']})" if row.get("reason") else ""
    return f"trial {row['trial']} {_values(row['values'])}: {row['state']}{why}, {row.get('steps', 0)} steps, " \
           f"val {_val(row) or '-'}"
