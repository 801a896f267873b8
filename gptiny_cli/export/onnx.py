"""``--format onnx``: one ONNX graph for the prompt and for every next token, the KV cache explicit.

A token is a character, or a piece of a byte-level BPE run's vocabulary: the run's vocab.json or
tokenizer.json lies beside the graph, and ``gptiny-onnx.json`` names it. Below, "character"
stands for either. The graph (``model.onnx``, a single file) takes

    input_ids    (B, T) int64     the new characters
    position     () int64         the position of input_ids[:, 0] in the text
    past_keys    (L, B, H, P, D)  float32, what the previous P positions left, oldest first
    past_values  (L, B, H, P, D)

and gives logits (B, T, V) with present_keys and present_values (L, B, H, P + T, D): the past
with the new positions appended. A prompt is fed with P = 0; each next character with T = 1 and
the last outputs. The attention mask is explicit and aligned to the newest positions (query i
is position P + i of the keys): SDPA's ``is_causal`` aligns to the top-left corner, wrong with a
cache. A query sees at most block_size positions, itself included, as in ``model.py``.

Past block_size characters, do what gptiny does (``generation/sample.py``): with rotary
positions keep only the newest block_size - 1 positions of the cache and go on counting
``position``; with learned positions refill from the last max(1, block_size // 4) characters with P = 0
and position 0. ``gptiny-onnx.json`` says this too, with the names and shapes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from gptiny_cli.data import Tokenizer
from gptiny_cli.errors import GptinyError
from gptiny_cli.model import GPT, Block, Rotary
from gptiny_cli.store import atomic

INPUTS = ("input_ids", "position", "past_keys", "past_values")
OUTPUTS = ("logits", "present_keys", "present_values")
TOLERANCE = 1e-4  # the largest logit difference from PyTorch that --verify accepts


class CachedGPT(nn.Module):
    """A GPT's forward pass with its KV cache as tensors in and out, for tracing into a graph."""

    def __init__(self, model: GPT) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, position: torch.Tensor, past_keys: torch.Tensor,
                past_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        m, cfg = self.model, self.model.cfg
        T, P = input_ids.shape[1], past_keys.shape[3]
        positions = position + torch.arange(T, device=input_ids.device)  # (T,)
        x = m.tok_emb(input_ids)  # (B, T, C)
        rope = None
        if cfg.position == "learned":
            x = x + m.pos_emb(positions)
        else:
            rope = Rotary(positions, cfg.n_embd // cfg.n_head)
        query = torch.arange(P, P + T, device=x.device)[:, None]  # (T, 1): where each new position sits
        key = torch.arange(P + T, device=x.device)[None, :]  # (1, P + T)
        mask = (key <= query) & (key > query - cfg.block_size)  # (T, P + T)
        keys, values = [], []
        for layer, block in enumerate(m.blocks):
            x, k, v = _block(block, x, rope, mask, past_keys[layer], past_values[layer])
            keys.append(k)
            values.append(v)
        return m.head(m.ln_f(x)), torch.stack(keys), torch.stack(values)


def _block(block: Block, x: torch.Tensor, rope: Rotary | None, mask: torch.Tensor, past_k: torch.Tensor,
           past_v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One block of ``model.py`` with the layer's cache (B, H, P, D) given and returned extended."""
    B, T, C = x.shape
    H = block.attn.n_head
    qkv = block.attn.qkv(block.ln1(x)).split(C, dim=2)  # 3 × (B, T, C)
    q, k, v = (t.reshape(B, T, H, C // H).transpose(1, 2) for t in qkv)  # (B, H, T, D) each
    if rope is not None:
        q, k = rope.rotate(q), rope.rotate(k)
    k, v = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)  # (B, H, P + T, D)
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, T, D)
    x = x + block.attn.proj(y.transpose(1, 2).reshape(B, T, C))
    return x + block.ffn(block.ln2(x)), k, v


def _example(model: GPT) -> tuple[torch.Tensor, ...]:
    # Sizes of 2 and more: tracing specialises the sizes 0 and 1, which the graph must still take.
    c = model.cfg
    past = torch.zeros(c.n_layer, 2, c.n_head, 3, c.n_embd // c.n_head)
    return torch.zeros(2, 4, dtype=torch.long), torch.tensor(3), past, past.clone()


def write_graph(model: GPT, path: Path) -> None:
    """Trace ``model`` into a single-file ONNX graph at ``path``."""
    from torch.export import Dim

    batch, sequence, past = Dim("batch"), Dim("sequence"), Dim("past")
    shapes = {"input_ids": {0: batch, 1: sequence}, "position": None,
              "past_keys": {1: batch, 3: past}, "past_values": {1: batch, 3: past}}
    try:
        with torch.no_grad():
            torch.onnx.export(CachedGPT(model).eval(), _example(model), str(path), dynamo=True,
                              input_names=list(INPUTS), output_names=list(OUTPUTS), dynamic_shapes=shapes,
                              external_data=False, verbose=False)
    except Exception as error:  # the exporter's own failures (often an onnxscript too old for this torch)
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise GptinyError(f"torch.onnx could not export the model ({type(error).__name__}: {first}); "
                          f"pip install -U 'gptiny[onnx]' brings versions that work with torch "
                          f"{torch.__version__}") from None


def graph_logits(session, ids: torch.Tensor, prefill: int) -> torch.Tensor:
    """Logits (B, T, V) from an onnxruntime ``session`` fed ``ids`` (B, T): the first ``prefill``
    positions at once, then one at a time through the cache."""
    import numpy as np

    model_cache = session.get_inputs()[2].shape  # (L, B, H, P, D), B and P named
    empty = np.zeros((model_cache[0], ids.shape[0], model_cache[2], 0, model_cache[4]), dtype=np.float32)
    feeds = {"past_keys": empty, "past_values": empty}
    chunks = [(0, prefill)] + [(t, t + 1) for t in range(prefill, ids.shape[1])]
    logits = []
    for start, end in chunks:
        feeds.update(input_ids=ids[:, start:end].numpy(), position=np.array(start, dtype=np.int64))
        out, feeds["past_keys"], feeds["past_values"] = session.run(list(OUTPUTS), feeds)
        logits.append(torch.from_numpy(out))
    return torch.cat(logits, dim=1)


def verify(model: GPT, path: Path, seed: int = 0) -> float:
    """The largest logit difference between the graph at ``path`` and ``model`` on a random prompt,
    fed half at once and half one position at a time; raise GptinyError above TOLERANCE."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    n = min(model.cfg.block_size, 24)
    ids = torch.randint(0, model.vocab_size, (2, n), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        expected = model(ids)
    difference = (graph_logits(session, ids, max(1, n // 2)) - expected).abs().max().item()
    if not difference <= TOLERANCE:
        raise GptinyError(f"the ONNX graph's logits differ from PyTorch's by {difference:.2e} "
                          f"(more than {TOLERANCE:.0e}); nothing was written")
    return difference


def description(model: GPT, vocab: Tokenizer) -> dict:
    """What ``gptiny-onnx.json`` says: names, shapes, how to go past block_size and which tokenizer file.

    A BPE export says ``"tokenizer": "bpe"``; a character export says nothing, as before BPE, so a
    reader takes a missing ``tokenizer`` for characters.
    """
    c = model.cfg
    per = "characters" if vocab.kind == "char" else "tokens"
    cache = ["n_layer", "batch", "n_head", "past", "head_dim"]
    rolling = ("keep the newest block_size - 1 positions of present_keys/present_values as the next past, "
               "and let position go on counting")
    refill = (f"when past holds block_size positions, feed the last max(1, block_size // 4) {per} again "
              "with an empty past and position 0")
    spec = {
        "format": "gptiny-onnx-1",
        "inputs": {"input_ids": {"shape": ["batch", "sequence"], "dtype": "int64"},
                   "position": {"shape": [], "dtype": "int64", "means": "position of input_ids[:, 0]"},
                   "past_keys": {"shape": cache, "dtype": "float32"},
                   "past_values": {"shape": cache, "dtype": "float32"}},
        "outputs": {"logits": {"shape": ["batch", "sequence", "vocab_size"], "dtype": "float32"},
                    "present_keys": {"shape": cache[:3] + ["past + sequence", "head_dim"], "dtype": "float32"},
                    "present_values": {"shape": cache[:3] + ["past + sequence", "head_dim"], "dtype": "float32"}},
        "n_layer": c.n_layer, "n_head": c.n_head, "head_dim": c.n_embd // c.n_head, "vocab_size": vocab.size,
        "block_size": c.block_size, "position_encoding": c.position, "activation": c.activation,
        "past_block_size": rolling if c.position == "rope" else refill,
        "start_token": vocab.start_token,
        "vocab": vocab.filename,
    }
    if vocab.kind != "char":
        spec["tokenizer"] = vocab.kind
    return spec


@dataclass(frozen=True)
class OnnxExport:
    difference: float | None  # from --verify, None without it


def write_onnx(model: nn.Module, vocab: Tokenizer, out: Path, check: bool = True) -> OnnxExport:
    """Fill the directory ``out`` with model.onnx, the run's vocab.json or tokenizer.json, and gptiny-onnx.json."""
    if not isinstance(model, GPT):
        raise GptinyError("only GPT runs can be exported (model.arch = \"gpt\"); a bigram is a table of logits")
    _quietly(write_graph, model, out / "model.onnx")
    difference = verify(model, out / "model.onnx") if check else None
    atomic.write_text(out / vocab.filename, vocab.serialized())
    atomic.write_json(out / "gptiny-onnx.json", description(model, vocab))
    return OnnxExport(difference)


def _quietly(function, *args) -> None:
    """Call ``function`` without the exporter's warnings and log lines (torchvision missing, ...)."""
    import logging
    import warnings

    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            function(*args)
    finally:
        logger.setLevel(level)
