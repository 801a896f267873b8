"""A GGUF export checked by its consumer, llama.cpp (through llama-cpp-python): tokens, logits, greedy text.

Skipped where llama-cpp-python is not installed (.ci/run builds it).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gptiny_cli.export.gguf_check import TOLERANCE, quiet_llama
from gptiny_cli.store.runs import load_run
from tests.conftest import cli_env
from tests.exporting import EXPORT_TEXT, PROMPT, gptiny, greedy_text, train_run
from tests.test_export_cli import refused

llama_cpp = pytest.importorskip("llama_cpp")

# The export text (accents, an emoji) with a backslash (the one character the token list escapes), a tab and CJK.
TEXT = EXPORT_TEXT + "C:\\temp\\ça\tva 日本語\n" * 5


def trained(where: Path, position: str, tie: bool = False) -> Path:
    return train_run(where, position, tie, activation="gelu", text=TEXT)


@pytest.fixture(scope="module", params=[("learned", False), ("learned", True), ("rope", False)],
                ids=["learned", "learned-tied", "rope"])
def exported(request, tmp_path_factory) -> tuple[Path, Path, str]:
    """(a GELU run, its f32 GGUF file checked by the command, the command's output)."""
    run_dir = trained(tmp_path_factory.mktemp("llama"), *request.param)
    result = gptiny("export", str(run_dir), "--format", "gguf")
    assert result.exit_code == 0, result.output
    return run_dir, run_dir / "export" / "model-f32.gguf", result.stdout


def llama(path: Path, n_ctx: int):
    with quiet_llama():
        return llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, logits_all=True, verbose=False)


def test_llama_cpp_splits_a_unicode_text_into_gptinys_ids_and_back(exported):
    run_dir, path, _ = exported
    vocab = load_run(run_dir).vocab
    text = TEXT[-160:]
    assert {"\\", "\t", "\n", " ", "ç", "😀", "日"} <= set(text)
    llm = llama(path, 128)
    ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
    assert ids == vocab.encode(text)
    assert llm.detokenize(ids).decode("utf-8") == text


def test_llama_cpp_greedy_text_equals_gptiny_float32_greedy_text(exported):
    run_dir, path, _ = exported
    llm = llama(path, 128)
    completion = llm.create_completion(PROMPT, max_tokens=100, temperature=0.0, repeat_penalty=1.0)
    assert PROMPT + completion["choices"][0]["text"] == greedy_text(run_dir, PROMPT, 100)


def test_llama_cpp_logits_over_the_whole_context_are_gptinys_within_the_f32_tolerance(exported):
    run_dir, path, _ = exported
    model = load_run(run_dir).model
    ids = torch.randint(0, model.vocab_size, (model.cfg.block_size,), generator=torch.Generator().manual_seed(3))
    llm = llama(path, model.cfg.block_size)
    llm.eval(ids.tolist())
    with torch.no_grad():
        ours = model(ids[None])[0].numpy()
    assert np.abs(np.array(llm.scores[: len(ids)]) - ours).max() < TOLERANCE["f32"]


def test_the_command_reports_llama_cpps_largest_logit_difference(exported):
    _, _, output = exported
    assert "through llama.cpp: logits within" in output and "greedy characters" in output


def test_an_f16_file_runs_within_its_tolerance_in_a_real_subprocess(exported, tmp_path):
    run_dir, _, _ = exported
    out = tmp_path / "half.gguf"
    done = subprocess.run([sys.executable, "-m", "gptiny_cli", "export", str(run_dir), "--format", "gguf",
                           "--dtype", "f16", "--out", str(out)], capture_output=True, text=True, env=cli_env(),
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"wrote {out}" in done.stdout and "through llama.cpp: logits within" in done.stdout
    assert "llama_context" not in done.stderr  # llama.cpp's own log lines stay out of the output


def test_a_file_that_llama_cpp_cannot_load_is_refused_and_not_kept(exported, monkeypatch):
    import gptiny_cli.export.gguf as gguf_export

    run_dir, _, _ = exported
    original = gguf_export.gguf_tensors

    def without_a_layer_norm(model, fold):
        tensors = original(model, fold)
        del tensors["blk.0.attn_norm.weight"]
        return tensors

    monkeypatch.setattr(gguf_export, "gguf_tensors", without_a_layer_norm)
    refused(gptiny("export", str(run_dir), "--format", "gguf", "--out", "broken.gguf"), "llama.cpp could not load")
    assert not Path("broken.gguf").exists() and list(Path(".").glob(".broken.gguf*")) == []
