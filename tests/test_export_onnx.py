"""``gptiny export --format onnx``, checked by onnxruntime: cached logits, and greedy text from a numpy loop."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from gptiny_cli.errors import GptinyError
from gptiny_cli.export.onnx import verify
from gptiny_cli.store.runs import load_run
from tests.exporting import PROMPT, export, greedy_text, train_run


@pytest.fixture(scope="module", params=["learned", "rope"])
def exported(request, tmp_path_factory):
    """(run directory, its onnx export) for each position type."""
    run_dir = train_run(tmp_path_factory.mktemp("onnx"), request.param)
    return run_dir, export(run_dir, "onnx")


def session(out: Path) -> onnxruntime.InferenceSession:
    return onnxruntime.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])


def run_graph(graph: onnxruntime.InferenceSession, ids: list[list[int]], position: int, past: tuple) -> tuple:
    """Logits (B, T, V) and the new cache (keys, values) for ``ids`` continuing ``past``."""
    logits, keys, values = graph.run(["logits", "present_keys", "present_values"], {
        "input_ids": np.array(ids, dtype=np.int64), "position": np.array(position, dtype=np.int64),
        "past_keys": past[0], "past_values": past[1]})
    return logits, (keys, values)


def empty_past(spec: dict, batch: int) -> tuple:
    empty = np.zeros((spec["n_layer"], batch, spec["n_head"], 0, spec["head_dim"]), dtype=np.float32)
    return empty, empty


def onnx_greedy(out: Path, prompt: str, n: int) -> str:
    """Greedy text driven by onnxruntime alone, going past block_size as gptiny-onnx.json says."""
    spec = json.loads((out / "gptiny-onnx.json").read_text())
    chars = json.loads((out / "vocab.json").read_text())["chars"]
    graph, S = session(out), spec["block_size"]
    history = [chars.index(ch) for ch in prompt][-S:]
    logits, past = run_graph(graph, [history], 0, empty_past(spec, 1))
    position = len(history)
    for step in range(n):
        token = int(np.argmax(logits[0, -1]))
        history.append(token)
        if step + 1 == n:
            break
        if spec["position_encoding"] == "rope":  # a sliding window: the newest S - 1 positions and this one
            logits, past = run_graph(graph, [[token]], position, tuple(p[:, :, :, -(S - 1):] for p in past))
            position += 1
        elif past[0].shape[3] == S:  # learned positions: refill from the last max(1, S // 4) characters
            keep = max(1, S // 4)
            logits, past = run_graph(graph, [history[-keep:]], 0, empty_past(spec, 1))
            position = keep
        else:
            logits, past = run_graph(graph, [[token]], position, past)
            position += 1
    return prompt + "".join(chars[t] for t in history[len(prompt):])


def test_the_file_is_a_single_valid_graph_with_the_cache_explicit(exported):
    _, out = exported
    assert sorted(p.name for p in out.iterdir()) == ["gptiny-export.json", "gptiny-onnx.json", "model.onnx",
                                                     "vocab.json"]
    model = onnx.load(str(out / "model.onnx"))
    onnx.checker.check_model(model)
    assert [i.name for i in model.graph.input] == ["input_ids", "position", "past_keys", "past_values"]
    assert [o.name for o in model.graph.output] == ["logits", "present_keys", "present_values"]


def test_prefill_and_20_cached_steps_equal_pytorch(exported):
    run_dir, out = exported
    model = load_run(run_dir).model
    spec = json.loads((out / "gptiny-onnx.json").read_text())
    ids = torch.randint(0, model.vocab_size, (3, 30), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = model(ids).numpy()
    graph = session(out)
    logits, past = run_graph(graph, ids[:, :10].tolist(), 0, empty_past(spec, 3))
    assert np.abs(logits - expected[:, :10]).max() < 1e-4
    for t in range(10, 30):
        logits, past = run_graph(graph, ids[:, t : t + 1].tolist(), t, past)
        assert np.abs(logits[:, 0] - expected[:, t]).max() < 1e-4


def test_greedy_300_characters_from_onnxruntime_equal_gptiny_past_block_size(exported):
    run_dir, out = exported
    assert load_run(run_dir).model.cfg.block_size < len(PROMPT) + 300
    assert onnx_greedy(out, PROMPT, 300) == greedy_text(run_dir, PROMPT, 300)


def test_verify_refuses_a_graph_that_disagrees_with_the_model(exported):
    run_dir, out = exported
    model = load_run(run_dir).model
    with torch.no_grad():
        model.ln_f.bias += 0.01
    with pytest.raises(GptinyError, match="differ from PyTorch's"):
        verify(model, out / "model.onnx")


def test_a_gelu_run_gives_the_greedy_text_of_gptiny_sample(tmp_path):
    run_dir = train_run(tmp_path, activation="gelu")
    out = export(run_dir, "onnx")
    assert json.loads((out / "gptiny-onnx.json").read_text())["activation"] == "gelu"
    assert onnx_greedy(out, PROMPT, 60) == greedy_text(run_dir, PROMPT, 60)
