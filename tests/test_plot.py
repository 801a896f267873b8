"""``gptiny plot``: train and val loss of several runs on one chart (matplotlib, the `plot` extra)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gptiny_cli.cli import app
from gptiny_cli.errors import GptinyError
from gptiny_cli.report.plot import loss_figure, save_figure
from gptiny_cli.store.history import LossHistory, read_history
from tests.training import train_tiny

runner = CliRunner()
PNG = b"\x89PNG\r\n\x1a\n"


def history(scale: float) -> LossHistory:
    return LossHistory(steps=[(i, scale * 4 / i) for i in range(1, 21)],
                       evals=[(i, scale * 4 / (i + 1), scale * 4.2 / (i + 1)) for i in (0, 10, 20)])


def test_each_run_has_a_train_and_a_val_line_in_one_colour():
    figure = loss_figure([("a", history(1.0)), ("b", history(2.0))])
    (ax,) = figure.axes
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a train", "a val", "b train", "b val"]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert lines["a train"].get_color() == lines["a val"].get_color() != lines["b val"].get_color()
    assert list(lines["b val"].get_xdata()) == [0, 10, 20]
    assert ax.get_yscale() == "linear"


def test_without_logged_steps_train_comes_from_the_evaluations():
    figure = loss_figure([("a", LossHistory(steps=[], evals=[(0, 4.0, 4.1), (10, 3.0, 3.2)]))])
    train = next(line for line in figure.axes[0].get_lines() if line.get_label() == "a train")
    assert list(train.get_ydata()) == [4.0, 3.0]


def test_a_run_with_an_average_of_its_weights_draws_its_val_loss_in_the_runs_colour():
    run = LossHistory(steps=[], evals=[(0, 4.0, 4.1), (10, 3.0, 3.2), (20, 2.0, 2.4)], averages=[(10, 3.1), (20, 2.2)])
    lines = {line.get_label(): line for line in loss_figure([("a", run)]).axes[0].get_lines()}
    average = lines["a val (weights' average)"]
    assert list(average.get_xdata()) == [10, 20] and list(average.get_ydata()) == [3.1, 2.2]
    assert average.get_color() == lines["a val"].get_color()


def test_the_log_option_makes_the_loss_axis_logarithmic():
    assert loss_figure([("a", history(1.0))], log_scale=True).axes[0].get_yscale() == "log"


def test_a_run_without_losses_is_refused():
    with pytest.raises(GptinyError, match="no losses logged yet"):
        loss_figure([("empty", LossHistory())])


def test_the_suffix_picks_the_format_and_an_unknown_one_is_refused():
    figure = loss_figure([("a", history(1.0))])
    assert save_figure(figure, Path("out/loss.svg")).read_text().lstrip().startswith("<?xml")
    with pytest.raises(GptinyError, match=r"cannot write xyz; use one of .*\.png"):
        save_figure(figure, Path("loss.xyz"))


def test_an_image_path_that_cannot_be_written_is_refused_in_one_line():
    Path("notes").write_text("a file, not a folder")
    with pytest.raises(GptinyError, match="--out notes/loss.png: notes is a file, not a directory"):
        save_figure(loss_figure([("a", history(1.0))]), Path("notes/loss.png"))


def test_plot_draws_several_real_runs_into_a_png(data_dir):
    first, second = train_tiny(data_dir, name="one"), train_tiny(data_dir, name="two", learning_rate=3e-3)
    result = runner.invoke(app, ["plot", str(first), str(second), "--out", "both.png", "--log"])
    assert result.exit_code == 0, result.output
    assert Path("both.png").read_bytes().startswith(PNG) and "2 runs" in result.stdout
    assert read_history(second).evals  # what was drawn came from metrics.jsonl


def test_without_matplotlib_plot_says_how_to_install_it(data_dir, monkeypatch):
    run_dir = train_tiny(data_dir)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # what Python does when it is not installed
    result = runner.invoke(app, ["plot", str(run_dir)])
    assert result.exit_code == 1
    assert "pip install 'gptiny[plot]'" in result.stderr and not Path("loss.png").exists()


def test_plot_of_an_unknown_run_says_so():
    result = runner.invoke(app, ["plot", "runs/nope"])
    assert result.exit_code == 1 and "run not found: runs/nope" in result.stderr
