"""The compact loss curve printed after training: block characters on one shared scale."""

from __future__ import annotations

from typer.testing import CliRunner

from gptiny_cli.cli import app
from gptiny_cli.report.curves import BLOCKS, bucket, loss_curve, sparkline
from gptiny_cli.store.history import LossHistory
from tests.conftest import tiny_raw, write_config


def bars(line: str) -> str:
    return line.split("│")[1]


def test_sparkline_maps_the_range_onto_the_blocks():
    assert sparkline([1.0, 3.0, 2.0, None], lo=1.0, hi=3.0) == "▁█▅ "


def test_a_flat_series_sits_in_the_middle():
    assert sparkline([2.0, 2.0], lo=2.0, hi=2.0) == BLOCKS[3] * 2


def test_bucket_averages_the_points_in_a_column_and_joins_them_across_gaps():
    points = [(0, 4.0), (1, 2.0), (9, 1.0)]
    assert bucket(points, first=0, last=9, width=5) == [3.0, 2.5, 2.0, 1.5, 1.0]


def test_bucket_leaves_columns_before_the_first_point_empty_and_holds_the_last_value():
    assert bucket([(4, 2.0), (5, 1.0)], first=0, last=9, width=5) == [None, None, 1.5, 1.5, 1.5]


def test_a_falling_loss_draws_a_falling_curve_from_top_to_bottom():
    history = LossHistory(steps=[(i, 4.0 - i / 50) for i in range(1, 101)],
                          evals=[(i, 4.0 - i / 50, 4.1 - i / 50) for i in range(0, 101, 20)])
    train, val, axis = loss_curve(history, width=20)
    for line in (train, val):
        heights = [BLOCKS.index(ch) for ch in bars(line)]
        assert len(heights) == 20 and heights == sorted(heights, reverse=True)
    assert bars(val)[0] == "█" and bars(train)[-1] == "▁"
    assert "iter 0 … 100" in axis and "best 2.1000" in val


def test_train_and_val_share_one_scale():
    history = LossHistory(steps=[], evals=[(0, 1.0, 3.0), (10, 1.0, 3.0)])
    train, val, _ = loss_curve(history, width=4)
    assert bars(train) == "▁▁▁▁" and bars(val) == "████"


def test_the_best_val_loss_counts_the_weights_average_where_it_did_better():
    history = LossHistory(steps=[], evals=[(0, 4.0, 4.1), (10, 2.0, 2.2)], averages=[(10, 2.1)])
    _, val, _ = loss_curve(history, width=4)
    assert "best 2.1000, the weights' average" in val
    worse = LossHistory(steps=[], evals=[(0, 4.0, 4.1), (10, 2.0, 2.2)], averages=[(10, 2.3)])
    assert "best 2.2000)" in loss_curve(worse, width=4)[1]


def test_no_evaluation_means_no_curve():
    assert loss_curve(LossHistory(steps=[(5, 3.0)], evals=[])) == []


def test_training_ends_with_the_curve(data_dir):
    config = write_config(data_dir.parent.parent / "c.toml", tiny_raw(data_dir))
    result = CliRunner().invoke(app, ["train", str(config), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    curve = [line for line in lines if line.startswith(("train │", "val   │"))]
    assert len(curve) == 2
    assert lines.index(curve[-1]) < next(i for i, line in enumerate(lines) if line.startswith("done"))
