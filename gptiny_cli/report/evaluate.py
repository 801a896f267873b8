"""``gptiny eval``: a trained run's exact loss, bits per character and per byte, on its validation split
or any text.

Both use ``training.losses.full_split_loss``, the loss training reports at its end: the mean over every
token, in order, in windows of ``block_size``. A text may hold characters the run's vocabulary
lacks. The model cannot predict those, and dropping them would glue together neighbours that
never met in the text, so the text is split around them instead: each stretch between unknown
characters is scored on its own and the losses are averaged over all scored tokens. The report
says which characters were skipped and how often. A BPE run encodes any text (its bytes), and
its loss per token becomes bits per character and per byte through the text's size, the units
in which a character run and a BPE run compare.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

from gptiny_cli.data import Corpus, TargetText, Tokenizer, load_corpus
from gptiny_cli.errors import GptinyError
from gptiny_cli.hardware.setup import for_evaluation, place
from gptiny_cli.prepare.corpus import read_corpus
from gptiny_cli.store.runs import LoadedRun, load_run
from gptiny_cli.training.losses import full_split_loss

PRECISIONS = ("float32", "auto")


@dataclass
class EvalReport:
    run: str
    weights: str
    source: str  # "validation split of DIR" or the text file
    tokens: int  # predictions scored
    loss: float  # mean cross-entropy in nats per token (a character's, for a character run)
    text: TargetText  # the size of what was predicted
    unknown_chars: dict[str, int] = field(default_factory=dict)  # skipped character -> occurrences
    baselines: dict | None = None  # the data's unigram and bigram losses, for its validation split only

    @property
    def bits_per_char(self) -> float:
        return self.loss * self.text.tokens / math.log(2) / max(self.text.chars, 1)

    @property
    def bits_per_byte(self) -> float:
        return self.loss * self.text.tokens / math.log(2) / max(self.text.bytes, 1)

    def to_json(self) -> dict:
        return {"run": self.run, "weights": self.weights, "source": self.source, "tokens": self.tokens,
                "loss": self.loss, "bits_per_char": self.bits_per_char, "bits_per_byte": self.bits_per_byte,
                "chars": self.text.chars, "bytes": self.text.bytes, "unknown_chars": self.unknown_chars,
                "baselines": self.baselines}


def split_known(text: str, vocab: Tokenizer) -> tuple[list[list[int]], Counter[str]]:
    """The token ids of each stretch of ``text`` between characters outside ``vocab``, and those characters."""
    if vocab.kind == "bpe":
        return [vocab.encode(text)], Counter()
    index = {ch: i for i, ch in enumerate(vocab.chars)}
    segments: list[list[int]] = [[]]
    unknown: Counter[str] = Counter()
    for ch in text:
        token = index.get(ch)
        if token is None:
            unknown[ch] += 1
            if segments[-1]:
                segments.append([])
        else:
            segments[-1].append(token)
    return [s for s in segments if s], unknown


def _segments_loss(loaded: LoadedRun, segments: list[torch.Tensor], device: str,
                   precision_name: str) -> tuple[float, int]:
    """Mean loss over every prediction in every segment (a segment of n tokens makes n - 1)."""
    dtype = loaded.config.train.dtype if precision_name == "auto" else precision_name
    dev, precision = for_evaluation(device, dtype)
    model = place(loaded.model, dev)
    block, batch = loaded.config.model.block_size, loaded.config.train.batch_size
    total, count = 0.0, 0
    for tokens in segments:
        if len(tokens) < 2:
            continue
        n = len(tokens) - 1
        total += full_split_loss(model, tokens, block, batch, dev, precision) * n
        count += n
    if count == 0:
        raise GptinyError("nothing to evaluate: the text has no two neighbouring characters in the run's vocabulary")
    return total / count, count


def _validation_split(loaded: LoadedRun) -> tuple[Corpus, str, dict | None]:
    data = Path(loaded.config.data.path)
    if not (data / "meta.json").is_file():
        raise GptinyError(
            f"{loaded.run_dir} was trained on {data}, which is not here; run from the directory it was "
            "trained in, or evaluate a text file with --text FILE"
        )
    corpus = load_corpus(data)
    if corpus.vocab != loaded.vocab:
        raise GptinyError(
            f"{corpus.directory} now holds a different vocabulary from the one {loaded.run_dir} was trained "
            "on; it was prepared again from another corpus. Evaluate a text file with --text FILE"
        )
    return corpus, f"validation split of {corpus.directory}", corpus.meta.get("baselines")


def evaluate(run_dir: Path, text: Path | None = None, which: str = "best", device: str = "auto",
             precision: str = "float32") -> EvalReport:
    """Score a run's weights on its validation split (all of it), or on a UTF-8 text file.

    ``precision`` "float32" (the default) computes the exact figure; "auto" uses the run's training
    dtype, as training's own whole-split loss does (bf16 moves it by about 1e-3).
    """
    if precision not in PRECISIONS:
        raise GptinyError(f"--precision {precision!r} is invalid: must be one of {', '.join(PRECISIONS)}")
    loaded = load_run(run_dir, which)
    unknown: Counter[str] = Counter()
    baselines = None
    if text is None:
        corpus, source, baselines = _validation_split(loaded)
        segments, size = [corpus.val], TargetText.of_corpus(corpus)
    else:
        ids, unknown = split_known(read_corpus(text), loaded.vocab)
        segments, source = [torch.tensor(s, dtype=torch.long) for s in ids], str(text)
        size = _predicted(loaded.vocab, ids)
    loss, tokens = _segments_loss(loaded, segments, device, precision)
    return EvalReport(str(run_dir), str(loaded.weights), source, tokens, loss, size, dict(unknown.most_common()),
                      baselines)


def _predicted(vocab: Tokenizer, segments: list[list[int]]) -> TargetText:
    """The size of what the segments' predictions cover: every token of a segment but its first."""
    counts = Counter(t for s in segments if len(s) > 1 for t in s[1:])
    return TargetText.of_counts(vocab, [counts.get(i, 0) for i in range(vocab.size)])
