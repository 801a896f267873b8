"""The ``attention`` command: heat maps of every layer's and head's attention over a prompt.

Registered on the app by ``cli/__init__.py``. Needs matplotlib (``gptiny[plot]``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gptiny_cli.cli.common import RUNS_DIR, Which, err, out, user_errors
from gptiny_cli.errors import GptinyError


def attention(
    run: Annotated[str, typer.Argument(help="A run directory, or `latest`.")] = "latest",
    prompt: Annotated[str, typer.Option(help="The text to look at (its last block_size characters).")] = "",
    out_path: Annotated[Path, typer.Option("--out", help="Image file; its suffix sets the format.")] = Path(
        "attention.png"),
    checkpoint: Annotated[Which, typer.Option(help="Weights with the best val loss, or the last ones.")] = Which.best,
    runs_dir: RUNS_DIR = Path("runs"),
) -> None:
    """Draw a grid of heat maps, one per layer and head: row t shows how much character t attends to
    each character before it.

    Examples: gptiny attention latest --prompt "ROMEO: But soft, what light"; gptiny attention runs/<id>
    --prompt "To be, or not to be" --out docs/attention.svg
    """
    from gptiny_cli.report.attention import insight
    from gptiny_cli.report.attention_plot import attention_figure
    from gptiny_cli.report.plot import save_figure
    from gptiny_cli.store.runs import load_run, resolve_run

    with user_errors():
        if not prompt:
            raise GptinyError("--prompt is empty: give the text whose attention to draw")
        loaded = load_run(resolve_run(run, runs_dir), checkpoint.value)
        unknown = loaded.vocab.unknown(prompt)
        if unknown:
            raise GptinyError(f"--prompt has characters this run's vocabulary lacks: {''.join(unknown)!r}")
        every = loaded.vocab.encode(prompt)
        ids = every[-loaded.model.block_size:]
        unit = "characters" if loaded.vocab.kind == "char" else "tokens"
        if len(ids) < len(every):
            err.print(f"using the prompt's last {len(ids)} {unit} (the block size)", highlight=False)
        seen = insight(loaded.model, ids)
        written = save_figure(attention_figure(seen, loaded.vocab.pieces), out_path)
    layers, heads = seen.attention.shape[:2]
    out.print(f"wrote {written}: {layers} layers × {heads} heads over {len(ids)} {unit}", highlight=False)
