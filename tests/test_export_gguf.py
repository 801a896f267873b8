"""``gptiny export --format gguf``: the file as llama.cpp reads it (read back with the gguf package), and its refusals.

What llama.cpp itself makes of the file is in test_export_gguf_llama.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gptiny_cli.errors import GptinyError
from gptiny_cli.export.gguf import is_gguf_export
from gptiny_cli.store.runs import load_run
from tests.exporting import gptiny, train_run
from tests.test_export_cli import files, refused

gguf = pytest.importorskip("gguf")


@pytest.fixture(scope="module", params=["learned", "rope"])
def exported(request, tmp_path_factory) -> tuple[Path, Path]:
    """(a GELU run, its f32 GGUF file written with --no-verify) for each position type."""
    run_dir = train_run(tmp_path_factory.mktemp("gguf"), request.param, activation="gelu")
    result = gptiny("export", str(run_dir), "--format", "gguf", "--no-verify")
    assert result.exit_code == 0, result.output
    return run_dir, run_dir / "export" / "model-f32.gguf"


@pytest.fixture
def gelu_run() -> Path:
    return train_run(Path("."), activation="gelu")


def field(reader, key: str):
    value = reader.get_field(key)
    return None if value is None else value.contents()


def test_learned_positions_are_gpt2_and_rotary_ones_gptneox_sequential(exported):
    run_dir, path = exported
    reader = gguf.GGUFReader(path)
    arch = field(reader, "general.architecture")
    assert arch == ("gpt2" if "learned" in run_dir.name else "gptneox")
    if arch == "gptneox":
        assert field(reader, "gptneox.use_parallel_residual") is False
        cfg = load_run(run_dir).config.model
        assert field(reader, "gptneox.rope.dimension_count") == cfg.n_embd // cfg.n_head  # every channel rotates


def test_the_sizes_are_the_runs_feed_forward_width_included(exported):
    run_dir, path = exported
    reader, cfg = gguf.GGUFReader(path), load_run(run_dir).config.model
    arch = field(reader, "general.architecture")
    assert field(reader, f"{arch}.context_length") == cfg.block_size
    assert field(reader, f"{arch}.embedding_length") == cfg.n_embd
    assert field(reader, f"{arch}.feed_forward_length") == 4 * cfg.n_embd
    assert field(reader, f"{arch}.block_count") == cfg.n_layer
    assert field(reader, f"{arch}.attention.head_count") == cfg.n_head


def test_the_vocabulary_is_our_characters_in_our_order_with_no_special_token(exported):
    run_dir, path = exported
    reader = gguf.GGUFReader(path)
    assert field(reader, "tokenizer.ggml.model") == "rwkv"
    assert field(reader, "tokenizer.ggml.tokens") == list(load_run(run_dir).vocab.chars)
    special = [f for f in reader.fields if f.endswith("_token_id")]
    assert special == []


def test_the_weights_are_the_models_with_the_head_bias_folded(exported):
    run_dir, path = exported
    model = load_run(run_dir).model
    tensors = {t.name: t for t in gguf.GGUFReader(path).tensors}
    qkv = tensors["blk.0.attn_qkv.weight"]
    assert np.array_equal(np.asarray(qkv.data), model.blocks[0].attn.qkv.weight.detach().numpy())
    assert "output.bias" not in tensors and "output_norm.bias" in tensors
    assert ("position_embd.weight" in tensors) == ("learned" in run_dir.name)


def test_the_file_names_itself_and_carries_a_card(exported):
    run_dir, path = exported
    reader = gguf.GGUFReader(path)
    assert field(reader, "general.name") == run_dir.name
    card = field(reader, "general.description")
    assert "character-level GPT" in card and "GELU (tanh)" in card and run_dir.name in card
    assert is_gguf_export(path)


def test_f16_stores_the_matrices_in_half_precision_and_the_norms_in_full(gelu_run):
    result = gptiny("export", str(gelu_run), "--format", "gguf", "--dtype", "f16", "--no-verify")
    assert result.exit_code == 0, result.output
    types = {t.name: t.tensor_type for t in gguf.GGUFReader(gelu_run / "export" / "model-f16.gguf").tensors}
    assert types["blk.0.ffn_up.weight"] == gguf.GGMLQuantizationType.F16
    assert types["blk.0.ffn_up.bias"] == gguf.GGMLQuantizationType.F32
    assert types["output_norm.weight"] == gguf.GGMLQuantizationType.F32


def test_a_relu_run_is_refused_with_what_to_train_instead():
    run_dir = train_run(Path("."), activation="relu")
    refused(gptiny("export", str(run_dir), "--format", "gguf"), 'train with model.activation = "gelu"')
    assert not (run_dir / "export").exists()


def test_a_vocabulary_too_large_to_fold_leaves_no_export_folder():
    run_dir = train_run(Path("."), n_embd=16, activation="gelu")
    refused(gptiny("export", str(run_dir), "--format", "gguf"), "the head's bias cannot be folded")
    assert not (run_dir / "export").exists()


def test_an_earlier_export_is_kept_without_force_and_replaced_with_it(gelu_run):
    out = Path("model.gguf")
    assert gptiny("export", str(gelu_run), "--format", "gguf", "--out", str(out), "--no-verify").exit_code == 0
    before = out.read_bytes()
    refused(gptiny("export", str(gelu_run), "--format", "gguf", "--out", str(out)), "add --force")
    assert out.read_bytes() == before
    result = gptiny("export", str(gelu_run), "--format", "gguf", "--out", str(out), "--force", "--no-verify")
    assert result.exit_code == 0, result.output
    assert is_gguf_export(out) and sorted(p.name for p in Path(".").glob(".model.gguf*")) == []


def test_force_never_replaces_a_file_that_no_gptiny_export_wrote(gelu_run):
    other = Path("notes.gguf")
    other.write_text("my notes\n")
    refused(gptiny("export", str(gelu_run), "--format", "gguf", "--out", str(other), "--force"),
            "no gptiny export wrote")
    assert other.read_text() == "my notes\n"


def test_a_directory_as_the_output_is_refused(gelu_run):
    Path("somewhere").mkdir()
    refused(gptiny("export", str(gelu_run), "--format", "gguf", "--out", "somewhere"), "is a directory")
    assert files(Path("somewhere")) == []


@pytest.mark.parametrize(("args", "message"), [(["--format", "hf", "--dtype", "f16"], "--dtype is for --format gguf"),
                                               (["--format", "gguf", "--dtype", "q4"], "--dtype 'q4' is unknown")])
def test_a_dtype_is_for_gguf_and_one_of_f32_f16(gelu_run, args, message):
    refused(gptiny("export", str(gelu_run), *args), message)
    assert not (gelu_run / "export").exists()


def test_no_verify_says_the_file_was_not_checked(gelu_run):
    result = gptiny("export", str(gelu_run), "--format", "gguf", "--no-verify")
    assert result.exit_code == 0, result.output
    assert "not checked by llama.cpp (--no-verify)" in result.stdout


def test_a_bigram_is_refused_by_the_library():
    from gptiny_cli.config import ModelConfig
    from gptiny_cli.export.gguf import check_exportable
    from gptiny_cli.model import build_model

    with pytest.raises(GptinyError, match="only GPT runs"):
        check_exportable(build_model(ModelConfig(arch="bigram"), 10))
