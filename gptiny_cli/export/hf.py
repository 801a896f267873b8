"""``--format hf``: a directory that transformers loads as GPT-2 (learned positions) or GPT-NeoX (rotary).

Both architectures compute what ``model.py`` does, given the tensors rearranged:

- GPT-2's ``Conv1D`` layers store (in, out), the transpose of ``nn.Linear``; its ``c_attn`` takes
  q, k, v fused in our order.
- GPT-NeoX's ``query_key_value`` output is read per head as [q_h, k_h, v_h], so our rows
  (q for every head, then k, then v) are regrouped head by head. Its rotary embedding rotates the
  two halves of each head (``rotate_half``), as ours does, with the same frequencies.
- Neither has a bias on the head. Logits W·n + b, with n = γ⊙x̂ + β the final LayerNorm, equal
  W·(n + δ) when W·δ = b: δ, solved in float64, is added to the LayerNorm's bias β. That needs
  V ≤ C (as many unknowns as equations); with V = C + 1 a constant shift of every logit takes the
  last degree of freedom, which changes no probability. A larger vocabulary is refused.

``config.json`` is written here, not by ``save_pretrained``, so that it loads in transformers 4.x
and 5.x alike; the token ids bos/eos/pad are null, since their defaults are real characters here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gptiny_cli.errors import GptinyError
from gptiny_cli.model import GPT

FOLD_TOLERANCE = 1e-5  # the largest logit error the folded bias may leave, after rounding to float32


@dataclass(frozen=True)
class Fold:
    """The head's bias moved into the final LayerNorm: its new bias, the shift, what is left over."""

    ln_bias: torch.Tensor  # (C,) float32
    shift: float  # every exported logit is ours minus this (0 unless V = C + 1)
    residual: float  # the largest logit error left, in float64 from the float32 bias


def fold_of(model: GPT) -> Fold:
    """The fold of ``model``'s head bias (nothing to fold for a head trained without one)."""
    ln_bias = model.ln_f.bias.detach()
    if model.head.bias is None:
        return Fold(ln_bias.float(), 0.0, 0.0)
    return fold_head_bias(model.head.weight.detach(), model.head.bias.detach(), ln_bias)


def fold_head_bias(weight: torch.Tensor, bias: torch.Tensor, ln_bias: torch.Tensor) -> Fold:
    """Solve W·δ (+ shift) = b for the head's weight W (V, C) and bias b (V,); δ joins ``ln_bias``."""
    V, C = weight.shape
    if V > C + 1:
        raise GptinyError(
            f"the head's bias cannot be folded into the model: {V} tokens need model.n_embd of at least "
            f"{V - 1} (it is {C}), since GPT-2 and GPT-NeoX have no bias there; export --format onnx instead, "
            f"which keeps it, or train with model.head_bias = false")
    W, b = weight.double(), bias.double()
    system = W if V <= C else torch.cat([W, torch.ones(V, 1, dtype=torch.float64)], dim=1)
    solution = torch.linalg.pinv(system) @ b  # the smallest δ that solves it
    shift = solution[C].item() if V > C else 0.0
    new_bias = (ln_bias.double() + solution[:C]).float()
    residual = (W @ (new_bias.double() - ln_bias.double()) + shift - b).abs().max().item()
    if not residual <= FOLD_TOLERANCE:
        raise GptinyError(f"the head's bias does not fold exactly (logit error {residual:.1e}: the head's rows "
                          f"are not independent); export --format onnx instead, which keeps it")
    return Fold(new_bias, shift, residual)


def _t(linear_weight: torch.Tensor) -> torch.Tensor:
    return linear_weight.t()  # nn.Linear (out, in) -> Conv1D (in, out)


def gpt2_tensors(model: GPT, fold: Fold) -> dict[str, torch.Tensor]:
    """The state dict of ``GPT2LMHeadModel`` for ``model``."""
    tensors = {"transformer.wte.weight": model.tok_emb.weight, "transformer.wpe.weight": model.pos_emb.weight,
               "transformer.ln_f.weight": model.ln_f.weight, "transformer.ln_f.bias": fold.ln_bias}
    for i, block in enumerate(model.blocks):
        p = f"transformer.h.{i}."
        tensors.update({
            p + "ln_1.weight": block.ln1.weight, p + "ln_1.bias": block.ln1.bias,
            p + "attn.c_attn.weight": _t(block.attn.qkv.weight), p + "attn.c_attn.bias": block.attn.qkv.bias,
            p + "attn.c_proj.weight": _t(block.attn.proj.weight), p + "attn.c_proj.bias": block.attn.proj.bias,
            p + "ln_2.weight": block.ln2.weight, p + "ln_2.bias": block.ln2.bias,
            p + "mlp.c_fc.weight": _t(block.ffn.fc.weight), p + "mlp.c_fc.bias": block.ffn.fc.bias,
            p + "mlp.c_proj.weight": _t(block.ffn.proj.weight), p + "mlp.c_proj.bias": block.ffn.proj.bias,
        })
    if not model.cfg.tie_weights:
        tensors["lm_head.weight"] = model.head.weight
    return tensors


def per_head(qkv: torch.Tensor, n_head: int) -> torch.Tensor:
    """Rows (3C, ...) ordered q, k, v, each by head, regrouped as GPT-NeoX reads them: by head, then q, k, v."""
    rest = qkv.shape[1:]
    return qkv.reshape(3, n_head, -1, *rest).transpose(0, 1).reshape(qkv.shape)


def neox_tensors(model: GPT, fold: Fold) -> dict[str, torch.Tensor]:
    """The state dict of ``GPTNeoXForCausalLM`` for ``model``."""
    H = model.cfg.n_head
    tensors = {"gpt_neox.embed_in.weight": model.tok_emb.weight,
               "gpt_neox.final_layer_norm.weight": model.ln_f.weight,
               "gpt_neox.final_layer_norm.bias": fold.ln_bias}
    for i, block in enumerate(model.blocks):
        p = f"gpt_neox.layers.{i}."
        tensors.update({
            p + "input_layernorm.weight": block.ln1.weight, p + "input_layernorm.bias": block.ln1.bias,
            p + "attention.query_key_value.weight": per_head(block.attn.qkv.weight, H),
            p + "attention.query_key_value.bias": per_head(block.attn.qkv.bias, H),
            p + "attention.dense.weight": block.attn.proj.weight, p + "attention.dense.bias": block.attn.proj.bias,
            p + "post_attention_layernorm.weight": block.ln2.weight,
            p + "post_attention_layernorm.bias": block.ln2.bias,
            p + "mlp.dense_h_to_4h.weight": block.ffn.fc.weight, p + "mlp.dense_h_to_4h.bias": block.ffn.fc.bias,
            p + "mlp.dense_4h_to_h.weight": block.ffn.proj.weight, p + "mlp.dense_4h_to_h.bias": block.ffn.proj.bias,
        })
    if not model.cfg.tie_weights:
        # the name transformers 4.x uses; 5.x renames it to lm_head.weight as it loads
        tensors["embed_out.weight"] = model.head.weight
    return tensors


def hf_tensors(model: GPT, fold: Fold) -> dict[str, torch.Tensor]:
    """Contiguous float32 copies, as safetensors stores them."""
    tensors = (gpt2_tensors if model.cfg.position == "learned" else neox_tensors)(model, fold)
    return {name: t.detach().float().contiguous().clone() for name, t in tensors.items()}


def hf_activation(activation: str) -> str:
    """transformers' name for ``model.activation``: its ``gelu_new`` is GELU's tanh form, as ours."""
    return {"relu": "relu", "gelu": "gelu_new"}[activation]


def hf_config(model: GPT) -> dict:
    """config.json for ``model``: GPT-2 for learned positions, GPT-NeoX for rotary ones."""
    c = model.cfg
    common = {"vocab_size": model.vocab_size, "tie_word_embeddings": c.tie_weights, "bos_token_id": None,
              "eos_token_id": None, "pad_token_id": None, "use_cache": True, "torch_dtype": "float32",
              "initializer_range": 0.02}
    if c.position == "learned":
        return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "n_positions": c.block_size,
                "n_ctx": c.block_size, "n_embd": c.n_embd, "n_layer": c.n_layer, "n_head": c.n_head,
                "n_inner": 4 * c.n_embd, "activation_function": hf_activation(c.activation),
                "layer_norm_epsilon": 1e-5,
                "resid_pdrop": c.dropout, "embd_pdrop": c.dropout, "attn_pdrop": c.attn_dropout,
                "scale_attn_weights": True, **common}
    return {"architectures": ["GPTNeoXForCausalLM"], "model_type": "gpt_neox", "hidden_size": c.n_embd,
            "num_hidden_layers": c.n_layer, "num_attention_heads": c.n_head, "intermediate_size": 4 * c.n_embd,
            "hidden_act": hf_activation(c.activation), "max_position_embeddings": c.block_size,
            "layer_norm_eps": 1e-5,
            "use_parallel_residual": False, "attention_bias": True, "hidden_dropout": c.dropout,
            "attention_dropout": c.attn_dropout,
            # 4.x reads rotary_pct and rotary_emb_base, 5.x rope_parameters
            "rotary_pct": 1.0, "rotary_emb_base": 10000.0,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 1.0},
            **common}


def generation_config(temperature: float, top_k: int, tokens: int) -> dict:
    """The run's sampling defaults, in transformers' terms (its top_k defaults to 50: say 0 for all)."""
    config = {"max_new_tokens": tokens, "do_sample": temperature > 0,
              "bos_token_id": None, "eos_token_id": None, "pad_token_id": None}
    if temperature > 0:  # greedy decoding takes neither, and transformers warns when they are set
        config.update(temperature=temperature, top_k=top_k)
    return config

