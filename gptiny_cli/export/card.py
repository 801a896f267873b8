"""The model card (``README.md``) of a Hugging Face export: what the model is, its data, how to load it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from gptiny_cli.errors import listing
from gptiny_cli.generation.sample import generate
from gptiny_cli.model import count_params
from gptiny_cli.store.runs import LoadedRun, read_run_info

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


def _loss_line(info: dict) -> str:
    parts = [f"{label} {loss:.4f} nats per character ({loss / math.log(2):.4f} bits per character)"
             for label, loss in (("best", info.get("best_val_loss")), ("final", info.get("final_val_loss")))
             if isinstance(loss, (int, float))]
    return "- validation loss: " + ("; ".join(parts) if parts else "not recorded")


FENCE = "```"
ACTIVATION_NAMES = {"relu": "ReLU", "gelu": "GELU (tanh)"}


def model_card(loaded: LoadedRun, architecture: str, shift: float, residual: float) -> str:
    """The text of README.md for the export of ``loaded``."""
    header = f"""---
library_name: transformers
pipeline_tag: text-generation
tags: [gptiny, character-level]
---

# {loaded.run_dir.name}

A character-level GPT trained from scratch with gptiny, exported as a `{architecture}` that
transformers loads without custom code. One token is one character.
"""
    return "\n".join([header, _data(loaded), _model(loaded, shift, residual), _usage(), _sample(loaded)])


def _data(loaded: LoadedRun) -> str:
    sources, sha = data_facts(Path(loaded.config.data.path))
    listed = "\n  - " + listing(sources, LISTED_SOURCES, "\n  - ")
    chars = json.dumps("".join(loaded.vocab.chars), ensure_ascii=False)
    return f"""## Data

- sources:{listed}
- sha256 of the joined text: `{sha}`
- vocabulary: {loaded.vocab.size} characters, in this order: `{chars}`

Characters outside this vocabulary are **dropped silently** by the tokenizer: check a prompt with
`tokenizer.decode(tokenizer(text).input_ids) == text`.
"""


def _model(loaded: LoadedRun, shift: float, residual: float) -> str:
    c, info = loaded.config.model, read_run_info(loaded.run_dir)
    shift_note = f" Every logit is lowered by the same {shift:.6g}, which changes no probability." if shift else ""
    return f"""## Model

- {c.n_layer} layers, {c.n_head} heads, n_embd {c.n_embd}, block_size {c.block_size}, {c.position} positions,
  {ACTIVATION_NAMES[c.activation]} feed-forward of {4 * c.n_embd}, head tied to the embedding:
  {str(c.tie_weights).lower()}
- parameters: {count_params(loaded.model).total:,}
- weights: `{loaded.weights.name}` of the run, {info.get("iters", "?")} iterations
{_loss_line(info)}

gptiny's head has a bias and this architecture has none: it was folded exactly into the final
LayerNorm's bias (largest logit error {residual:.1e}).{shift_note} Within block_size characters the
logits equal gptiny's. Past block_size, gptiny slides its context; GPT-2 cannot go past
`n_positions` and GPT-NeoX attends to every earlier character, which the model was not trained for.
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
