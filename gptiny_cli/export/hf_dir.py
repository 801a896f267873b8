"""The files of a Hugging Face export, and the check that transformers reads them as we meant.

    config.json             written by ``hf.hf_config``
    generation_config.json  the run's sampling defaults
    model.safetensors       the weights, named and laid out as transformers expects
    tokenizer.json          characters: a BPE model whose vocabulary is our characters in our order,
                            no merges, a Fuse decoder (characters join without spaces), no special
                            tokens; byte-level BPE: the run's own tokenizer.json, as trained
    tokenizer_config.json   PreTrainedTokenizerFast, clean_up_tokenization_spaces false
    README.md               the model card
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from gptiny_cli.data import Tokenizer, Vocab
from gptiny_cli.errors import GptinyError
from gptiny_cli.export import card, hf
from gptiny_cli.model import GPT
from gptiny_cli.store import atomic
from gptiny_cli.store.runs import LoadedRun
from gptiny_cli.store.tensorfile import save_tensors

TOLERANCE = 1e-4  # the largest logit difference from gptiny that --verify accepts
# What a BPE export's tokenizer must split as gptiny does: ASCII, CJK and an emoji, whose bytes
# a small vocabulary may hold only as pieces of a character.
MIXED_TEXT = "The fox, 42 times:\n  日本語 😀 ok?"


@dataclass(frozen=True)
class HfExport:
    architecture: str
    shift: float
    residual: float
    difference: float | None  # from --verify, None without it


def write_tokenizer(vocab: Tokenizer, out: Path) -> None:
    """tokenizer.json and tokenizer_config.json: a BPE run's own tokenizer is already one that
    transformers reads; a character vocabulary is written as a BPE without merges."""
    if isinstance(vocab, Vocab):
        from tokenizers import Tokenizer as HfTokenizer
        from tokenizers import decoders, models

        tokenizer = HfTokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(vocab.chars)}, merges=[]))
        tokenizer.decoder = decoders.Fuse()
        atomic.write_text(out / "tokenizer.json", tokenizer.to_str(pretty=True) + "\n")
    else:
        atomic.write_text(out / "tokenizer.json", vocab.serialized())  # the run's file, byte for byte
    atomic.write_json(out / "tokenizer_config.json", {
        "tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False,
        "model_max_length": None, "add_prefix_space": False})


def write_hf(loaded: LoadedRun, out: Path, check: bool = True) -> HfExport:
    """Fill the directory ``out`` with a transformers model of ``loaded``; verify it with transformers."""
    model = loaded.model
    if not isinstance(model, GPT):
        raise GptinyError("only GPT runs can be exported (model.arch = \"gpt\"); a bigram is a table of logits")
    fold = hf.fold_of(model)
    config = hf.hf_config(model)
    save_tensors(hf.hf_tensors(model, fold), out / "model.safetensors", {"format": "pt"})
    atomic.write_json(out / "config.json", config)
    s = loaded.config.sample
    atomic.write_json(out / "generation_config.json", hf.generation_config(s.temperature, s.top_k, s.tokens))
    write_tokenizer(loaded.vocab, out)
    architecture = config["architectures"][0]
    atomic.write_text(out / "README.md", card.model_card(loaded, architecture, fold.shift, fold.residual))
    difference = verify(model, loaded.vocab, out, fold.shift) if check else None
    return HfExport(architecture, fold.shift, fold.residual, difference)


def check_tokenizer(vocab: Tokenizer, out: Path) -> None:
    """Raise GptinyError unless transformers' tokenizer of ``out`` splits text into gptiny's ids:
    every character of a character vocabulary, or for BPE a mixed text, encoded and decoded back."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(out)
    if isinstance(vocab, Vocab):
        if tokenizer("".join(vocab.chars)).input_ids != list(range(vocab.size)):
            raise GptinyError("the exported tokenizer does not give gptiny's ids for its own vocabulary")
        return
    ids = tokenizer(MIXED_TEXT).input_ids
    if ids != vocab.encode(MIXED_TEXT):
        raise GptinyError(f"the exported tokenizer does not split {MIXED_TEXT!r} into gptiny's BPE ids")
    if tokenizer.decode(ids) != MIXED_TEXT:
        raise GptinyError(f"the exported tokenizer does not decode gptiny's BPE ids of {MIXED_TEXT!r} back")


def verify(model: GPT, vocab: Tokenizer, out: Path, shift: float, seed: int = 0) -> float:
    """Load ``out`` with transformers; the largest logit difference from ``model`` on a random prompt.

    Raises GptinyError above TOLERANCE, or if the tokenizer does not give our ids (``check_tokenizer``).
    """
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging

    check_tokenizer(vocab, out)
    logging.disable_progress_bar()  # its "Loading weights" bar would interleave with our output
    try:
        exported = AutoModelForCausalLM.from_pretrained(out).eval()
    finally:
        logging.enable_progress_bar()
    ids = torch.randint(0, vocab.size, (2, min(model.cfg.block_size, 24)),
                        generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        difference = (exported(ids).logits + shift - model(ids)).abs().max().item()
    if not difference <= TOLERANCE:
        raise GptinyError(f"transformers' logits differ from gptiny's by {difference:.2e} "
                          f"(more than {TOLERANCE:.0e}); nothing was written")
    return difference
