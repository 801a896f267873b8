"""The model card (``README.md``) of a Hugging Face export: what the model is, its data, how to load it."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from gptiny_cli.errors import listing
from gptiny_cli.generation.sample import generate
from gptiny_cli.model import count_params
from gptiny_cli.store.runs import LoadedRun, read_run_info, val_bits

SAMPLE_CHARS = 300
LISTED_SOURCES = 10  # documents named in the card before "and N more"


def data_facts(data_dir: Path) -> tuple[list[str], str]:
    """From the data directory's meta.json: a line per source document (its path and sha256), and
    the sha256 of the joined text; "unknown" where it cannot be read."""
    try:
        meta = json.loads((Path(data_dir) / "meta.json").read_text(encoding="utf-8"))
        # meta.json written before several inputs names its one file as "source"
        sources = meta.get("sources") or [{"path": meta.get("source"), "sha256": meta.get("sha256")}]
        lines = [f"`{s.get('path') or 'unknown'}` (sha256 `{s.get('sha256') or 'unknown'}`)" for s in sources]
        return lines, str(meta.get("sha256") or "unknown")
    except (OSError, ValueError, AttributeError, TypeError):
        return ["unknown"], "unknown"


def sample_text(loaded: LoadedRun, n: int = SAMPLE_CHARS) -> str:
    """A reproducible sample with the run's own sampling defaults (seed 0), from a newline."""
    s = loaded.config.sample
    steps = generate(loaded.model, [], n, temperature=s.temperature, top_k=s.top_k,
                     generator=torch.Generator().manual_seed(0), start_token=loaded.vocab.start_token)
    return loaded.vocab.decode([int(step[0]) for step in steps])


def unit(loaded: LoadedRun) -> str:
    """What one token is, in the card's sentences: a character, or a piece of a BPE vocabulary."""
    return "character" if loaded.vocab.kind == "char" else "token"


def _loss_line(info: dict, per: str) -> str:
    """The val losses, per token as trained and in bits per character, the unit any two tokenizers share."""
    parts = []
    for label, loss in (("best", info.get("best_val_loss")), ("final", info.get("final_val_loss"))):
        if isinstance(loss, (int, float)):
            bpc = val_bits(info, loss)[0]
            bits = "bits per character not recorded" if bpc is None else f"{bpc:.4f} bits per character"
            parts.append(f"{label} {loss:.4f} nats per {per} ({bits})")
    return "- validation loss: " + ("; ".join(parts) if parts else "not recorded")


FENCE = "```"
ACTIVATION_NAMES = {"relu": "ReLU", "gelu": "GELU (tanh)"}


def model_card(loaded: LoadedRun, architecture: str, shift: float, residual: float) -> str:
    """The text of README.md for the export of ``loaded``."""
    if loaded.vocab.kind == "char":
        tag, kind, token = "character-level", "A character-level", "One token is one character."
    else:
        tag, kind, token = "byte-level-bpe", "A byte-level BPE", "One token is a learnt run of bytes."
    header = f"""---
library_name: transformers
pipeline_tag: text-generation
tags: [gptiny, {tag}]
---

# {loaded.run_dir.name}

{kind} GPT trained from scratch with gptiny, exported as a `{architecture}` that
transformers loads without custom code. {token}
"""
    return "\n".join([header, _data(loaded), _model(loaded, shift, residual), _usage(), _sample(loaded)])


def _data(loaded: LoadedRun) -> str:
    sources, sha = data_facts(Path(loaded.config.data.path))
    listed = "\n  - " + listing(sources, LISTED_SOURCES, "\n  - ")
    return f"""## Data

- sources:{listed}
- sha256 of the joined text: `{sha}`
{_vocabulary(loaded)}"""


def _vocabulary(loaded: LoadedRun) -> str:
    vocab = loaded.vocab
    if vocab.kind == "char":
        chars = json.dumps("".join(vocab.chars), ensure_ascii=False)
        return f"""- vocabulary: {vocab.size} characters, in this order: `{chars}`

Characters outside this vocabulary are **dropped silently** by the tokenizer: check a prompt with
`tokenizer.decode(tokenizer(text).input_ids) == text`.
"""
    return f"""- vocabulary: {vocab.size} tokens of a byte-level BPE learnt on the training text by `gptiny prepare`
  (the 256 bytes and {len(vocab.identity()["merges"])} merges), in `tokenizer.json` as it was trained

Every text encodes, since any character is made of bytes; a token may hold part of a character
(a CJK character or an emoji is 3 or 4 bytes), so decode whole sequences, not single tokens.
"""


def _model(loaded: LoadedRun, shift: float, residual: float) -> str:
    c, info, per = loaded.config.model, read_run_info(loaded.run_dir), unit(loaded)
    shift_note = f" Every logit is lowered by the same {shift:.6g}, which changes no probability." if shift else ""
    head = ("gptiny's head has a bias and this architecture has none: it was folded exactly into the final\n"
            f"LayerNorm's bias (largest logit error {residual:.1e}).{shift_note}" if c.head_bias else
            "The head was trained without a bias, as this architecture's is.")
    return f"""## Model

- {c.n_layer} layers, {c.n_head} heads, n_embd {c.n_embd}, block_size {c.block_size}, {c.position} positions,
  {ACTIVATION_NAMES[c.activation]} feed-forward of {4 * c.n_embd}, head tied to the embedding:
  {str(c.tie_weights).lower()}
- parameters: {count_params(loaded.model).total:,}
- weights: `{loaded.weights.name}` of the run, {info.get("iters", "?")} iterations
{_loss_line(info, per)}

{head} Within block_size {per}s the
logits equal gptiny's. Past block_size, gptiny slides its context; GPT-2 cannot go past
`n_positions` and GPT-NeoX attends to every earlier {per}, which the model was not trained for.
"""


def _usage() -> str:
    return f"""## Load it

{FENCE}python
from transformers import AutoModelForCausalLM, AutoTokenizer

model = AutoModelForCausalLM.from_pretrained("PATH")
tokenizer = AutoTokenizer.from_pretrained("PATH")
ids = tokenizer("\\n", return_tensors="pt").input_ids
print(tokenizer.decode(model.generate(ids, max_new_tokens=200)[0]))
{FENCE}
"""


def _sample(loaded: LoadedRun) -> str:
    s = loaded.config.sample
    return f"""## A sample

With the run's sampling defaults (temperature {s.temperature}, top_k {s.top_k or "off"}), seed 0:

{FENCE}`text
{sample_text(loaded)}
{FENCE}`
"""
