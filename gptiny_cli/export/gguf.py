"""``--format gguf``: one GGUF file that llama.cpp, and what is built on it, runs as gptiny's model.

Written directly with the gguf package, not through llama.cpp's converter, which reads neither a
GPT-2 config's activation nor a character vocabulary. What llama.cpp's graphs compute decides:

- Learned positions are architecture ``gpt2``; rotary ones ``gptneox``, with the residual
  sequential (``use_parallel_residual`` false, as ``model.Block``) and every channel rotated in
  NEOX order (channel i with i + D/2, at 10000^(-2i/D)), as ``model.Rotary``. Both take the fused
  q, k, v in our row order: llama.cpp splits the fused output into q | k | v.
- Both graphs hard-code GELU in its tanh form, so a ReLU run would silently become another model
  there: it is refused. Neither has a bias on the head: it is folded into the final LayerNorm,
  exactly as the hf export does (``hf.fold_head_bias``), or refused with the reason.
- The vocabulary is llama.cpp's ``rwkv`` tokenizer: a greedy longest match of the text's bytes
  against the tokens' bytes. Each token is one of our characters in UTF-8, which is prefix-free,
  so the longest match is always exactly one character and the ids are ours. The token text is
  unescaped first (``\\\\``, ``\\n``, ``\\t``, ``\\r``, ``\\xNN``): only the backslash is escaped here.
  That tokenizer has no special tokens, and none is added: each would be a real character here.
- ``gptiny.format`` marks the file as gptiny's, the only kind of file ``--force`` replaces.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gptiny_cli.data import Tokenizer, Vocab
from gptiny_cli.errors import GptinyError
from gptiny_cli.export import gguf_check, hf
from gptiny_cli.export.card import ACTIVATION_NAMES, data_facts
from gptiny_cli.model import GPT, count_params
from gptiny_cli.store.runs import LoadedRun, read_run_info

MARK_KEY = "gptiny.format"
MARK = "gptiny-gguf-1"
DTYPES = ("f32", "f16")
ARCHITECTURES = {"learned": "gpt2", "rope": "gptneox"}
ROPE_BASE = 10000.0  # model.Rotary's base
LAYER_NORM_EPS = 1e-5  # nn.LayerNorm's default


@dataclass(frozen=True)
class GgufExport:
    architecture: str
    shift: float
    residual: float
    check: gguf_check.GgufCheck | None  # None: not checked (--no-verify, or llama-cpp-python not installed)


def check_exportable(model: torch.nn.Module) -> None:
    """Refuse, in one line, what llama.cpp's graphs cannot run exactly."""
    if not isinstance(model, GPT):
        raise GptinyError("only GPT runs can be exported (model.arch = \"gpt\"); a bigram is a table of logits")
    if model.cfg.activation != "gelu":
        raise GptinyError(
            f"llama.cpp's {ARCHITECTURES[model.cfg.position]} graph computes GELU, not this run's ReLU, so it "
            f"would run a different model; train with model.activation = \"gelu\" to export as GGUF "
            f"(--format hf or onnx keep ReLU)")


def check_vocab(vocab: Tokenizer) -> None:
    """Refuse a BPE run: the rwkv tokenizer written here matches whole characters only. llama.cpp's
    GPT-2 BPE tokenizer would fit, but it is not written yet, nor checked against gptiny's ids."""
    if vocab.kind != "char":
        raise GptinyError(f"GGUF export supports character runs for now (this run's tokenizer is {vocab.kind}); "
                          f"export it with --format hf or --format onnx")


def token_bytes(vocab: Vocab) -> list[bytes]:
    """Each character as the token text llama.cpp's rwkv tokenizer unescapes back to its UTF-8 bytes."""
    tokens = []
    for ch in vocab.chars:
        try:
            tokens.append(b"\\\\" if ch == "\\" else ch.encode("utf-8"))
        except UnicodeEncodeError:
            raise GptinyError(f"the vocabulary holds {ch!r}, which is no Unicode character; "
                              f"it has no UTF-8 bytes for llama.cpp to match") from None
    return tokens


def gguf_tensors(model: GPT, fold: hf.Fold) -> dict[str, torch.Tensor]:
    """llama.cpp's tensor names for ``model``; each weight (out, in) as nn.Linear stores it."""
    tensors = {"token_embd.weight": model.tok_emb.weight, "output_norm.weight": model.ln_f.weight,
               "output_norm.bias": fold.ln_bias, "output.weight": model.head.weight}
    if model.cfg.position == "learned":
        tensors["position_embd.weight"] = model.pos_emb.weight
    for i, block in enumerate(model.blocks):
        layers = {"attn_norm": block.ln1, "attn_qkv": block.attn.qkv, "attn_output": block.attn.proj,
                  "ffn_norm": block.ln2, "ffn_up": block.ffn.fc, "ffn_down": block.ffn.proj}
        for name, module in layers.items():
            tensors[f"blk.{i}.{name}.weight"] = module.weight
            tensors[f"blk.{i}.{name}.bias"] = module.bias
    return tensors


def as_array(tensor: torch.Tensor, dtype: str) -> np.ndarray:
    """float32, or float16 for the matrices with ``f16`` (norms and biases stay float32, as llama.cpp's own)."""
    wide = tensor.detach().float().contiguous().cpu()
    half = dtype == "f16" and wide.dim() == 2
    return (wide.half() if half else wide).numpy().copy()


def description(loaded: LoadedRun, fold: hf.Fold) -> str:
    """The file's card (general.description): what the model is, its data, how well it did."""
    c, info = loaded.config.model, read_run_info(loaded.run_dir)
    sources, sha = data_facts(Path(loaded.config.data.path))
    loss = info.get("best_val_loss")
    loss_text = f"{loss:.4f} nats per character" if isinstance(loss, (int, float)) else "not recorded"
    shift = f", every logit lowered by {fold.shift:.6g}" if fold.shift else ""
    head = (f"The head's bias is folded into the final LayerNorm (largest logit error {fold.residual:.1e}{shift}). "
            if c.head_bias else "The head has no bias. ")
    return (f"A character-level GPT trained from scratch with gptiny: one token is one character. "
            f"{c.n_layer} layers, {c.n_head} heads, n_embd {c.n_embd}, block_size {c.block_size}, {c.position} "
            f"positions, {ACTIVATION_NAMES[c.activation]} feed-forward of {4 * c.n_embd}, "
            f"{count_params(loaded.model).total:,} parameters; the `{loaded.weights.name}` weights of run "
            f"{loaded.run_dir.name} after {info.get('iters', '?')} iterations, best validation loss {loss_text}. "
            f"Data: {'; '.join(sources[:3])}{' and more' if len(sources) > 3 else ''}, joined text sha256 {sha}. "
            f"Vocabulary: {loaded.vocab.size} characters; a prompt with any other character is refused. "
            f"{head}Within block_size characters llama.cpp computes gptiny's logits; past it gptiny slides its "
            f"context and llama.cpp does not.")


def write_gguf(loaded: LoadedRun, path: Path, dtype: str = "f32") -> hf.Fold:
    """Write the GGUF file of ``loaded`` at ``path``; the head-bias fold it used."""
    import gguf

    model = loaded.model
    check_exportable(model)
    check_vocab(loaded.vocab)
    c = model.cfg
    fold = hf.fold_of(model)
    tokens = token_bytes(loaded.vocab)
    writer = gguf.GGUFWriter(path, ARCHITECTURES[c.position])
    writer.add_name(loaded.run_dir.name)
    writer.add_description(description(loaded, fold))
    writer.add_string(MARK_KEY, MARK)
    writer.add_float32("gptiny.logit_shift", fold.shift)  # llama.cpp's logits are ours minus this
    writer.add_file_type(gguf.LlamaFileType.ALL_F32 if dtype == "f32" else gguf.LlamaFileType.MOSTLY_F16)
    writer.add_context_length(c.block_size)
    writer.add_embedding_length(c.n_embd)
    writer.add_feed_forward_length(4 * c.n_embd)
    writer.add_block_count(c.n_layer)
    writer.add_head_count(c.n_head)
    writer.add_layer_norm_eps(LAYER_NORM_EPS)
    if c.position == "rope":
        writer.add_rope_dimension_count(c.n_embd // c.n_head)
        writer.add_rope_freq_base(ROPE_BASE)
        writer.add_parallel_residual(False)
    s = loaded.config.sample
    writer.add_sampling_temp(s.temperature)
    writer.add_sampling_top_k(s.top_k)  # 0 is "every character" for llama.cpp too
    writer.add_tokenizer_model("rwkv")
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.NORMAL] * len(tokens))
    for name, tensor in gguf_tensors(model, fold).items():
        writer.add_tensor(name, as_array(tensor, dtype))
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    return fold


def is_gguf_export(path: Path) -> bool:
    """Whether ``path`` is a GGUF file that gptiny wrote, the only kind of file --force replaces."""
    try:
        import gguf

        field = gguf.GGUFReader(path).get_field(MARK_KEY)
        return field is not None and field.contents() == MARK
    except Exception:  # not GGUF at all, truncated, or from a gguf package that cannot read it
        return False


def write_checked(loaded: LoadedRun, path: Path, dtype: str = "f32", check: bool = True) -> GgufExport:
    """Write the GGUF file at ``path`` and, with ``check`` and llama-cpp-python installed, have llama.cpp check it."""
    fold = write_gguf(loaded, path, dtype)
    result = None
    if check and gguf_check.installed():
        result = gguf_check.verify(path, loaded.model, loaded.vocab, fold.shift, dtype)
    return GgufExport(ARCHITECTURES[loaded.config.model.position], fold.shift, fold.residual, result)
