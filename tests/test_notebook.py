"""The walkthrough notebook runs top to bottom, and each of its steps computes what it shows."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "walkthrough.ipynb"
STEPS = ["1", "2", "3", "4", "5", "6", "7"]


def tiny_shakespeare() -> Path | None:
    for candidate in (os.environ.get("GPTINY_CORPUS"), ROOT / "input.txt",
                      ROOT.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def images(nb: nbformat.NotebookNode) -> int:
    return sum("image/png" in out.get("data", {}) for cell in nb.cells if cell.cell_type == "code"
               for out in cell.outputs)


def printed(nb: nbformat.NotebookNode) -> str:
    return "".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs)


def run_quick(notebook: Path, workdir: Path) -> tuple[nbformat.NotebookNode, list[dict]]:
    """``notebook`` executed in quick mode in ``workdir``, and the ``results`` table its kernel computed."""
    corpus = tiny_shakespeare()
    if corpus is None:
        pytest.skip("Tiny Shakespeare not found; set GPTINY_CORPUS=/path/to/input.txt to run the notebook")
    nb = nbformat.read(notebook, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("import json\nprint(json.dumps(results))"))
    env = {**os.environ, "GPTINY_NOTEBOOK_QUICK": "1", "GPTINY_CORPUS": str(corpus), "OMP_NUM_THREADS": "1"}
    client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(workdir)}})
    client.execute(env=env)  # passed on to the kernel's process
    probe = nb.cells.pop()
    return nb, json.loads(probe.outputs[0]["text"])


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[nbformat.NotebookNode, list[dict]]:
    """The notebook executed in quick mode, and the results table its kernel computed."""
    return run_quick(NOTEBOOK, tmp_path_factory.mktemp("notebook"))


def test_every_step_trains_and_lands_in_the_table(quick_run):
    _, results = quick_run
    assert [row["step"] for row in results] == STEPS
    for row in results:
        first_val, last_val = row["curve"][0][2], row["curve"][-1][2]
        assert math.isfinite(last_val) and last_val < first_val - 0.3, row["what"]
        assert row["val_loss"] == last_val


def test_the_full_model_beats_the_bigram_and_residuals_beat_none(quick_run):
    _, results = quick_run
    val = {row["step"]: row["val_loss"] for row in results}
    assert val["7"] < val["1"] - 0.5
    assert val["5"] < val["4"]


def test_hand_computed_attention_matches_the_package_and_figures_are_drawn(quick_run):
    nb, _ = quick_run
    assert "reproduce CausalSelfAttention's output: True" in printed(nb)
    assert images(nb) == 3  # the causal mask and one head, the trained heads, the loss curves


def test_committed_notebook_holds_one_full_run_top_to_bottom():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1))
    assert "full mode" in printed(nb) and "quick mode" not in printed(nb)
    assert images(nb) == 3
