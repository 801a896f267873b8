"""Configs: every mistake a user can make gets an error that names the key and the rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from gptiny_cli.config import RunConfig, config_from_dict, load_config, parse_override
from gptiny_cli.errors import GptinyError
from tests.conftest import write_config

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.toml"))


def config_error(raw: dict) -> str:
    with pytest.raises(GptinyError) as info:
        config_from_dict(raw)
    return str(info.value)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    config = load_config(path)
    assert config.model.n_embd % config.model.n_head == 0
    assert config.data.path == "data/input"


def test_reference_config_has_the_reference_values():
    config = load_config(Path(__file__).parent.parent / "configs" / "shakespeare.toml")
    m, t = config.model, config.train
    assert (m.n_embd, m.block_size, m.n_layer, m.n_head, m.dropout) == (384, 256, 3, 4, 0.2)
    assert (t.batch_size, t.learning_rate, t.max_iters, t.eval_interval, t.eval_iters) == (64, 3e-4, 5000, 500, 200)


def test_toml_syntax_error_names_file_line_and_column(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[model]\nn_embd = = 3\n")
    with pytest.raises(GptinyError, match=r"bad\.toml.*line 2, column"):
        load_config(path)


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(GptinyError, match="config file not found: .*nope.toml"):
        load_config(tmp_path / "nope.toml")


def test_unknown_key_suggests_the_closest_one():
    assert config_error({"model": {"n_heads": 4}}) == "unknown key model.n_heads; did you mean n_head?"


def test_unknown_section_is_named():
    assert "unknown section [modle]; did you mean [model]?" in config_error({"modle": {}})


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"model": {"n_layer": 0}}, "model.n_layer = 0 is invalid: must be at least 1"),
        ({"model": {"n_embd": 100, "n_head": 3}},
         "model.n_embd = 100 is invalid: must be divisible by model.n_head (3)"),
        ({"model": {"dropout": 1.0}}, "model.dropout = 1.0 is invalid: must be in [0, 1)"),
        ({"model": {"dropout": -0.1}}, "model.dropout = -0.1 is invalid: must be in [0, 1)"),
        ({"model": {"n_embd": "big"}}, "model.n_embd = 'big' is invalid: must be int"),
        ({"model": {"n_embd": 3.5}}, "model.n_embd = 3.5 is invalid: must be int"),
        ({"model": {"tie_weights": 1}}, "model.tie_weights = 1 is invalid: must be bool"),
        ({"model": {"arch": "lstm"}}, "model.arch = 'lstm' is invalid: must be one of 'gpt', 'bigram'"),
        ({"model": {"activation": "swish"}}, "model.activation = 'swish' is invalid: must be one of 'relu', 'gelu'"),
        ({"train": {"batch_size": 0}}, "train.batch_size = 0 is invalid: must be at least 1"),
        ({"train": {"learning_rate": -1.0}}, "train.learning_rate = -1.0 is invalid: must be a positive number"),
        ({"train": {"dtype": "fp8"}}, "train.dtype = 'fp8' is invalid: must be one of"),
        ({"train": {"compile": "yes"}}, "train.compile = 'yes' is invalid: must be one of 'auto'"),
        ({"model": "wide"}, "[model] must be a table of keys"),
    ],
)
def test_invalid_values_name_the_key_and_the_rule(raw, message):
    assert message in config_error(raw)


def test_integers_are_accepted_where_floats_are_expected():
    assert config_from_dict({"train": {"learning_rate": 1}}).train.learning_rate == 1.0


def test_attention_dropout_is_its_own_key():
    model = config_from_dict({"model": {"dropout": 0.3, "attn_dropout": 0.1}}).model
    assert (model.dropout, model.attn_dropout) == (0.3, 0.1)
    assert "model.attn_dropout = 1.5 is invalid" in config_error({"model": {"attn_dropout": 1.5}})


def test_overrides_are_typed_and_validated(tmp_path):
    path = write_config(tmp_path / "c.toml", {"model": {"n_layer": 2}})
    config = load_config(path, ["train.max_iters=200", "model.dropout=0.1", "data.path=elsewhere/x",
                                "train.compile=true"])
    assert config.train.max_iters == 200
    assert config.model.dropout == 0.1
    assert config.data.path == "elsewhere/x"
    assert config.train.compile is True
    with pytest.raises(GptinyError, match="model.n_head = 0 is invalid"):
        load_config(path, ["model.n_head=0"])
    with pytest.raises(GptinyError, match="unknown key train.max_iter; did you mean max_iters"):
        load_config(path, ["train.max_iter=5"])


@pytest.mark.parametrize("text", ["max_iters=3", "train.max_iters", "=3", "train.=3"])
def test_malformed_overrides_are_rejected(text):
    with pytest.raises(GptinyError, match="use SECTION.KEY=VALUE"):
        parse_override(text)


def test_written_config_reads_back_identically():
    config = config_from_dict({"model": {"n_layer": 2, "dropout": 0.1}, "data": {"path": 'we"ird\\path'}})
    path = Path("round.toml")
    path.write_text(config.to_toml())
    assert load_config(path) == config
    assert load_config(path) != RunConfig()
