"""Fine-tuning: ``train --init-from RUN`` starts a new run from another run's weights."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from gptiny_cli.cli import app
from gptiny_cli.config import config_from_dict, read_toml
from gptiny_cli.errors import GptinyError
from gptiny_cli.model import build_model
from gptiny_cli.prepare.corpus import PrepareOptions, prepare_corpus
from gptiny_cli.store.runs import load_run
from gptiny_cli.training import distributed, loop
from gptiny_cli.training.launch import build_session
from gptiny_cli.training.plan import TrainRequest, plan
from tests.conftest import tiny_raw, write_config
from tests.training import train_tiny

OTHER_TEXT = "".join(f"{who}: over the lazy dog the quick brown fox jumps, {n} times.\n"
                     for n in range(40) for who in ("BOB", "ALICE"))


def _other_data(name: str, text: str = OTHER_TEXT, **options: object) -> Path:
    Path(f"{name}.txt").write_text(text, encoding="utf-8")
    prepare_corpus([f"{name}.txt"], Path("data") / name, options=PrepareOptions(**options))
    return Path("data") / name


def _start(data: Path, parent: Path | None, overrides: list[str] = (), name: str = "child", **train: object):
    config = write_config(Path(f"{name}.toml"), tiny_raw(data, **train))
    request = TrainRequest(config, list(overrides), "cpu", Path("runs"), name,
                           init_from=str(parent) if parent else None)
    return build_session(plan(request, distributed.single("cpu")), distributed.single("cpu"))


def test_a_fine_tuned_run_starts_with_exactly_the_parents_weights_and_a_fresh_optimizer(data_dir):
    parent = train_tiny(data_dir, name="parent")
    session = _start(_other_data("other", vocab=str(parent)), parent)
    try:
        expected = load_run(parent).model.state_dict()
        for name, tensor in session.model.state_dict().items():
            assert torch.equal(tensor, expected[name]), name
        assert session.iter == 0 and not session.optimizer.state
    finally:
        session.close()


def test_a_grown_vocabulary_keeps_old_rows_bit_equal_and_new_rows_freshly_initialised(data_dir):
    parent = train_tiny(data_dir, name="parent")
    old = load_run(parent)
    data = _other_data("grown", OTHER_TEXT + "Zoë and Quentin!\n", vocab=str(parent), extend=True)
    session = _start(data, parent)
    try:
        new_size = session.corpus.vocab.size
        assert new_size > old.vocab.size
        torch.manual_seed(session.config.train.seed)
        fresh = build_model(session.config.model, new_size).state_dict()
        grown, before = session.model.state_dict(), old.model.state_dict()
        for name in ("tok_emb.weight", "head.weight", "head.bias"):
            assert torch.equal(grown[name][: old.vocab.size], before[name]), name
            assert torch.equal(grown[name][old.vocab.size:], fresh[name][old.vocab.size:]), name
    finally:
        session.close()


def test_weights_that_do_not_fit_leave_no_run_directory_behind(data_dir):
    parent = train_tiny(data_dir, name="parent")
    request = TrainRequest(write_config(Path("child.toml"), tiny_raw(data_dir)), [], "cpu", Path("runs"), "child",
                           init_from=str(parent))
    planned = plan(request, distributed.single("cpu"))
    planned.parent.state["tok_emb.weight"] = torch.zeros(1, 1, 1)  # as a parent of another shape would be
    with pytest.raises(GptinyError, match="tok_emb.weight does not fit"):
        build_session(planned, distributed.single("cpu"))
    assert sorted(p.name for p in Path("runs").iterdir()) == [parent.name]


def test_a_vocabulary_that_does_not_extend_the_parents_says_how_to_prepare_the_data(data_dir):
    parent = train_tiny(data_dir, name="parent")
    data = _other_data("foreign", "completely different characters: 0123456789 XYZ\n" * 20)
    with pytest.raises(GptinyError, match=f"--vocab {parent} --extend"):
        _start(data, parent)
    assert sorted(p.name for p in Path("runs").iterdir()) == [parent.name]


def test_a_model_key_that_contradicts_the_parent_is_an_error_naming_it(data_dir):
    parent = train_tiny(data_dir, name="parent")
    data = _other_data("other", vocab=str(parent))
    with pytest.raises(GptinyError, match=r"model.n_embd = 32 contradicts .*only model.dropout may differ"):
        _start(data, parent, ["model.n_embd=32"])


def test_dropout_may_differ_and_unset_model_keys_come_from_the_parent(data_dir):
    parent = train_tiny(data_dir, name="parent")
    data = _other_data("other", vocab=str(parent))
    raw = tiny_raw(data)
    del raw["model"]["n_embd"]  # left to the default (384) it must not contradict the parent's 16
    write_config(Path("child.toml"), raw)
    request = TrainRequest(Path("child.toml"), ["model.dropout=0.1"], "cpu", Path("runs"), "child",
                           init_from=str(parent))
    session = build_session(plan(request, distributed.single("cpu")), distributed.single("cpu"))
    try:
        assert session.config.model.n_embd == 16 and session.config.model.dropout == 0.1
    finally:
        session.close()


def test_run_json_records_the_parent_and_its_weights_sha256_and_runs_shows_it(data_dir):
    parent = train_tiny(data_dir, name="parent")
    data = _other_data("other", vocab=str(parent))
    write_config(Path("child.toml"), tiny_raw(data, max_iters=2, eval_interval=2))
    result = CliRunner().invoke(app, ["train", "child.toml", "--device", "cpu", "--init-from", str(parent),
                                      "--init-checkpoint", "last"])
    assert result.exit_code == 0, result.output
    (child,) = [p for p in Path("runs").iterdir() if p != parent]
    init_from = json.loads((child / "run.json").read_text())["init_from"]
    weights = parent / "checkpoint" / "model-last.safetensors"
    assert init_from == {"run": str(parent), "checkpoint": "last", "weights": weights.name,
                         "sha256": hashlib.sha256(weights.read_bytes()).hexdigest()}
    listing = json.loads(CliRunner().invoke(app, ["runs", "--json"]).stdout)
    assert {r["id"]: r["parent"] for r in listing} == {child.name: parent.name, parent.name: None}


def test_init_from_and_resume_cannot_be_combined(data_dir):
    with pytest.raises(GptinyError, match="give one of them"):
        TrainRequest(resume="latest", init_from="latest").check()


def _steps_to(data: Path, parent: Path | None, name: str, target: float) -> float:
    session = _start(data, parent, name=name, max_iters=60, eval_interval=5, eval_iters=4)
    try:
        for event in loop.run(session):
            if isinstance(event, loop.EvalStats) and event.val_loss <= target:
                return event.iter
    finally:
        session.close()
    return math.inf


def test_fine_tuning_on_a_second_corpus_reaches_a_loss_in_fewer_steps_than_training_from_scratch(data_dir):
    parent = train_tiny(data_dir, name="parent", max_iters=150, eval_interval=50)
    data = _other_data("other", vocab=str(parent))
    from_scratch = _steps_to(data, None, "scratch", target=2.3)
    fine_tuned = _steps_to(data, parent, "fine-tuned", target=2.3)
    assert fine_tuned < from_scratch < math.inf


def test_the_config_of_a_fine_tuned_run_is_stored_with_the_parents_model_keys(data_dir):
    parent = train_tiny(data_dir, name="parent")
    session = _start(_other_data("other", vocab=str(parent)), parent, max_iters=1)
    session.close()
    stored = config_from_dict(read_toml(session.run_dir / "config.toml"))
    assert stored.model == load_run(parent).config.model
