"""The tokenizer notebook runs top to bottom and computes what it shows: every tokenizer trained,
and compared in loss per token and in bits per character from its own counts."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import nbformat
import pytest

from tests.test_notebook import images, printed, run_quick

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "tokenizers.ipynb"
TOKENIZERS = ["characters", "BPE 256", "BPE 512", "BPE 1024"]
VOCAB = {"characters": 65, "BPE 256": 256, "BPE 512": 512, "BPE 1024": 1024}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[nbformat.NotebookNode, list[dict]]:
    """The notebook executed in quick mode, and the results table its kernel computed."""
    pytest.importorskip("tokenizers", reason="the notebook's BPE needs the bpe extra")
    return run_quick(NOTEBOOK, tmp_path_factory.mktemp("notebook"))


def test_every_tokenizer_trains_and_lands_in_the_table(quick_run):
    nb, results = quick_run
    assert "quick mode" in printed(nb)
    assert [row["tokenizer"] for row in results] == TOKENIZERS
    for row in results:
        assert row["vocab"] == VOCAB[row["tokenizer"]]
        first_val, last_val = row["curve"][0][2], row["curve"][-1][2]
        assert math.isfinite(row["val_loss"]) and math.isfinite(last_val), row["tokenizer"]
        assert last_val < first_val - 0.5, row["tokenizer"]
        # Untrained, every model spreads its bets evenly over its vocabulary: about ln V.
        assert abs(first_val - math.log(row["vocab"])) < 0.5, row["tokenizer"]
        assert row["val_loss"] < first_val - 0.5, row["tokenizer"]  # the whole-split loss fell too
    # The same model each time: only the embedding and output rows grow with the vocabulary.
    params = [row["params"] for row in results]
    assert params == sorted(params) and len(set(params)) == len(params)
    assert len({row["iters"] for row in results}) == 1


def test_bits_per_character_are_computed_from_the_notebooks_own_counts(quick_run):
    nb, results = quick_run
    chars = results[0]["chars"]
    assert chars > 100_000  # the last tenth of Tiny Shakespeare
    for row in results:
        assert row["chars"] == chars, row["tokenizer"]  # the same validation text for every tokenizer
        assert row["bpc"] == pytest.approx(row["val_loss"] * row["tokens"] / row["chars"] / math.log(2))
        assert row["chars_per_block"] == pytest.approx(64 * row["chars"] / row["tokens"])
    by_name = {row["tokenizer"]: row for row in results}
    characters = by_name["characters"]
    assert characters["tokens"] == chars  # one token per character: bpc is the loss over ln 2
    assert characters["bpc"] == pytest.approx(characters["val_loss"] / math.log(2))
    assert by_name["BPE 256"]["tokens"] == chars  # bytes and no merge: ASCII text, a token a character
    assert chars > by_name["BPE 512"]["tokens"] > by_name["BPE 1024"]["tokens"]
    # The table shows the figures the kernel computed.
    table = next(out["data"]["text/markdown"] for cell in nb.cells if cell.cell_type == "code"
                 for out in cell.outputs if "bits per character |" in out.get("data", {}).get("text/markdown", ""))
    for row in results:
        assert f"| {row['val_loss']:.3f} |" in table and f"**{row['bpc']:.3f}**" in table


def test_the_line_splits_into_fewer_pieces_with_bpe_and_the_chart_is_drawn(quick_run):
    nb, _ = quick_run
    text = printed(nb)
    counts = {}
    for name in TOKENIZERS:
        line = next(line for line in text.splitlines() if line.strip().startswith(f"{name}:") and "tokens," in line)
        counts[name] = int(line.split(":")[1].split("tokens")[0])
    assert counts["characters"] == counts["BPE 256"] > counts["BPE 512"] >= counts["BPE 1024"]
    # Each tokenizer's pieces, cut by | with spaces shown as ·, put back together are the line.
    heading = next(row for row in text.splitlines() if row.endswith(" characters") and row[:1] in "'\"")
    shown = ast.literal_eval(heading[: heading.rindex(": ")])  # the line, as repr() printed it
    assert len(shown) == int(heading.split(": ")[-1].split()[0])
    cuts = [row.strip() for row in text.splitlines() if row.strip().startswith("|") and row.strip().endswith("|")]
    assert len(cuts) == len(TOKENIZERS)
    for name, cut in zip(TOKENIZERS, cuts, strict=True):
        assert cut.count("|") == counts[name] + 1, name
        assert cut.strip("|").replace("|", "").replace("·", " ") == shown, name
    assert images(nb) == 1  # the two panels of bars, loss per token and bits per character


def test_committed_notebook_holds_one_full_run_top_to_bottom():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1))
    assert all(cell.outputs for cell in code)
    assert "full mode" in printed(nb) and "quick mode" not in printed(nb)
    assert "1000 steps" in printed(nb)
    assert images(nb) == 1
