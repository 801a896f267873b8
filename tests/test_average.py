"""The weights' moving average (train.ema_decay): when it begins, how it moves, when it is the best."""

from __future__ import annotations

import json

import pytest
import torch
from torch.profiler import profile

from gptiny_cli.config import config_from_dict
from gptiny_cli.errors import GptinyError
from gptiny_cli.report.progress import plain_line
from gptiny_cli.store import manifest, tensorfile
from gptiny_cli.training import average, faults, loop
from gptiny_cli.training.budget import Budget
from gptiny_cli.training.session import setup
from tests.conftest import tiny_raw
from tests.runtools import CHECKPOINT


def session(data_dir, **train):
    config = config_from_dict(tiny_raw(data_dir, **{"max_iters": 10, "ema_decay": 0.75, "ema_start": 0.5, **train}))
    return setup(config, device="cpu")


def fill(model: torch.nn.Module, value: float) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(value)


def test_the_average_begins_as_a_copy_of_the_weights_once_its_share_of_the_run_is_done(data_dir):
    s = session(data_dir)
    s.iter = 4
    average.update(s, fraction=None)
    assert s.average is None  # 4 of 10 steps: not yet
    s.iter = 5
    average.update(s, fraction=None)
    for mine, theirs in zip(s.average.parameters(), s.model.parameters(), strict=True):
        assert torch.equal(mine, theirs) and mine is not theirs and not mine.requires_grad
    s.close()


def test_a_time_budget_begins_the_average_by_the_time_spent(data_dir):
    s = session(data_dir)
    average.update(s, fraction=0.6)  # step 0 of 10, but 60% of the time
    assert s.average is not None
    s.close()


def test_each_step_moves_the_average_one_minus_the_decay_of_the_way_to_the_weights(data_dir):
    s = session(data_dir)
    s.iter = 5
    fill(s.model, 0.0)
    average.update(s, None)
    fill(s.model, 1.0)
    average.update(s, None)
    average.update(s, None)
    assert all(torch.allclose(p, torch.full_like(p, 1 - 0.75**2)) for p in s.average.parameters())
    s.close()


def test_the_average_moves_all_its_tensors_in_one_operation_exactly_as_one_at_a_time(data_dir):
    s = session(data_dir)
    s.iter = 5
    average.update(s, None)
    alone = [p.detach().clone() for p in s.average.parameters()]
    with torch.no_grad():
        for p in s.model.parameters():
            p.add_(torch.randn_like(p))
    with profile() as prof:
        average.update(s, None)
    assert [e.name for e in prof.events() if e.cpu_parent is None] == ["aten::_foreach_lerp_"]
    for mine, one, theirs in zip(s.average.parameters(), alone, s.model.parameters(), strict=True):
        assert torch.equal(mine, one.lerp_(theirs, 1 - 0.75))
    s.close()


def test_without_a_decay_no_average_is_kept_or_saved(data_dir):
    s = session(data_dir, ema_decay=0.0)
    *_, finished = loop.run(s)
    assert finished.status == "completed" and s.average is None
    _, entries = tensorfile.read_header(s.run_dir / CHECKPOINT / manifest.STATE_TENSORS)
    assert not any(key.startswith("ema.") for key in entries)


def test_a_run_with_an_average_estimates_it_at_each_evaluation_after_it_began(data_dir):
    s = session(data_dir, max_iters=20, eval_interval=5)
    events = [e for e in loop.run(s) if isinstance(e, loop.EvalStats)]
    assert [e.iter for e in events if e.average_val_loss is not None] == [10, 15, 20]
    rows = [json.loads(line) for line in (s.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in rows if "ema_val_loss" in r] == [10, 15, 20]
    _, entries = tensorfile.read_header(s.run_dir / CHECKPOINT / manifest.STATE_TENSORS)
    assert {f"ema.{name}" for name, _ in s.model.named_parameters()} <= set(entries)


def test_an_average_better_than_the_weights_is_saved_as_the_best_weights(data_dir):
    trained = session(data_dir, max_iters=30)
    *_, _ = loop.run(trained)
    s = session(data_dir)
    s.average = average.new_average(trained.model)
    fill(s.model, 0.0)  # the training weights now far worse than the "average"
    stats = loop._evaluate(s, faults.LossWatch(s.device), Budget(s))
    assert stats.is_best and stats.average_val_loss < stats.val_loss
    assert s.best_val == stats.average_val_loss
    best = average.new_average(s.model)
    tensorfile.load_weights(manifest.locate(s.run_dir) / manifest.BEST, best)
    for saved, averaged in zip(best.parameters(), s.average.parameters(), strict=True):
        assert torch.equal(saved, averaged)
    s.close()


def test_the_log_line_shows_the_averages_val_loss():
    stats = loop.EvalStats(iter=100, train_loss=1.2, val_loss=1.5, elapsed_s=60, epoch=1.0, is_best=True,
                           average_val_loss=1.4567)
    assert "ema val 1.4567" in plain_line(stats)


@pytest.mark.parametrize(("key", "value"), [("ema_decay", 1.0), ("ema_decay", -0.1), ("ema_start", 1.0)])
def test_an_average_setting_out_of_range_is_refused_naming_its_key(data_dir, key, value):
    with pytest.raises(GptinyError, match=f"train.{key}"):
        config_from_dict(tiny_raw(data_dir, **{key: value}))
