"""Run configuration: one typed dataclass per TOML section, each validating itself.

Defaults live here and nowhere else. Every error names the user-facing key
(``model.n_head``) and the rule it broke, so a bad config is fixed in one go.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from gptiny_cli.errors import GptinyError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib


def _check(ok: bool, key: str, rule: str, value: Any) -> None:
    if not ok:
        raise GptinyError(f"{key} = {value!r} is invalid: {rule}")


def _choice(key: str, value: Any, options: tuple[str, ...]) -> None:
    _check(value in options, key, f"must be one of {', '.join(map(repr, options))}", value)


@dataclass
class DataConfig:
    """Where the prepared corpus lives (what ``gptiny prepare`` wrote)."""

    SECTION: ClassVar[str] = "data"
    path: str = "data/input"

    def __post_init__(self) -> None:
        _check(self.path != "", "data.path", "must name a prepared data directory", self.path)


@dataclass
class ModelConfig:
    """The network: sizes, regularisation and architecture choices."""

    SECTION: ClassVar[str] = "model"
    arch: str = "gpt"
    n_embd: int = 384
    block_size: int = 256
    n_layer: int = 3
    n_head: int = 4
    dropout: float = 0.2  # on the embeddings, the residual branches and the feed-forward path
    # Dropout on the attention probabilities. Off by default: it pushes PyTorch's CPU attention
    # kernel onto a slow path (a training step 1.5x slower in bf16, benchmarks/README.md).
    attn_dropout: float = 0.0
    tie_weights: bool = False
    # A bias on the output head, as the seed model has. GPT-2's and GPT-NeoX's heads have none, so
    # exporting folds it into the final LayerNorm, which needs n_embd ≥ vocabulary − 1; a BPE run
    # with a larger vocabulary than that exports to Hugging Face and GGUF only without it.
    head_bias: bool = True
    position: str = "learned"  # learned absolute embeddings, or rotary ("rope") inside attention
    # The feed-forward nonlinearity: ReLU (the seed's), or GELU in its tanh form. GELU did not lower
    # the loss (benchmarks/README.md, "Keep or drop") but is what llama.cpp's gpt2 and gptneox graphs
    # compute, so only a GELU run can be exported as GGUF (docs/export.md).
    activation: str = "relu"
    # Only choices that measurably helped, or that a runtime needs, are keys. Rotary positions lowered
    # the loss at equal steps; RMSNorm, squared ReLU, SwiGLU and bias-free layers did not, so the
    # blocks keep the classic LayerNorm and biases.

    def __post_init__(self) -> None:
        _choice("model.arch", self.arch, ("gpt", "bigram"))
        _choice("model.position", self.position, ("learned", "rope"))
        _choice("model.activation", self.activation, ("relu", "gelu"))
        for key in ("n_embd", "block_size", "n_layer", "n_head"):
            _check(getattr(self, key) >= 1, f"model.{key}", "must be at least 1", getattr(self, key))
        _check(
            self.n_embd % self.n_head == 0,
            "model.n_embd",
            f"must be divisible by model.n_head ({self.n_head})",
            self.n_embd,
        )
        for key in ("dropout", "attn_dropout"):
            value = getattr(self, key)
            _check(0.0 <= value < 1.0, f"model.{key}", "must be in [0, 1)", value)


@dataclass
class TrainConfig:
    """Optimisation, evaluation and the numeric format of training."""

    SECTION: ClassVar[str] = "train"
    batch_size: int = 64
    learning_rate: float = 3e-4
    max_iters: int = 5000
    eval_interval: int = 500
    eval_iters: int = 200
    log_interval: int = 10
    seed: int = 1337
    dtype: str = "auto"
    compile: bool | str = "auto"
    optimizer: str = "adamw"  # or "muon": Muon for the hidden matrices, AdamW for the rest
    muon_lr: float = 0.02
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0
    grad_accum: int = 1
    warmup_iters: int = 100
    lr_decay: str = "cosine"  # or "constant", or "wsd": warm-up, stable, then linear decay
    decay_fraction: float = 0.4  # for "wsd": the last part of training over which the rate decays
    min_lr_fraction: float = 0.1
    # A time budget for the training loop and its evaluations, in minutes (0: none, the steps
    # decide); the schedule then runs on the fraction of it spent. max_iters still caps the steps.
    max_minutes: float = 0.0
    # An exponential moving average of the weights, begun when ema_start of the run is done (of the
    # time budget, or of max_iters), saved as the best weights when its val loss is lower. 0: off.
    ema_decay: float = 0.0
    ema_start: float = 0.5
    checkpoint_interval: int = 500
    patience: int = 0

    def __post_init__(self) -> None:
        for key in ("batch_size", "max_iters", "eval_interval", "eval_iters", "log_interval"):
            _check(getattr(self, key) >= 1, f"train.{key}", "must be at least 1", getattr(self, key))
        for key in ("grad_accum", "checkpoint_interval"):
            _check(getattr(self, key) >= 1, f"train.{key}", "must be at least 1", getattr(self, key))
        _check(
            math.isfinite(self.learning_rate) and self.learning_rate > 0,
            "train.learning_rate", "must be a positive number", self.learning_rate,
        )
        for key in ("weight_decay", "grad_clip", "warmup_iters", "patience"):
            _check(getattr(self, key) >= 0, f"train.{key}", "must not be negative", getattr(self, key))
        for key in ("beta1", "beta2"):
            _check(0.0 <= getattr(self, key) < 1.0, f"train.{key}", "must be in [0, 1)", getattr(self, key))
        _check(0.0 <= self.min_lr_fraction <= 1.0, "train.min_lr_fraction", "must be in [0, 1]",
               self.min_lr_fraction)
        _choice("train.dtype", self.dtype, ("auto", "float32", "bfloat16", "float16"))
        _choice("train.lr_decay", self.lr_decay, ("cosine", "constant", "wsd"))
        _check(0.0 < self.decay_fraction <= 1.0, "train.decay_fraction", "must be in (0, 1]", self.decay_fraction)
        _check(math.isfinite(self.max_minutes) and self.max_minutes >= 0, "train.max_minutes",
               "must be a number of minutes, or 0 for no time budget", self.max_minutes)
        _check(0.0 <= self.ema_decay < 1.0, "train.ema_decay", "must be in [0, 1) (0 turns the average off)",
               self.ema_decay)
        _check(0.0 <= self.ema_start < 1.0, "train.ema_start", "must be in [0, 1): the share of the run done",
               self.ema_start)
        _choice("train.optimizer", self.optimizer, ("adamw", "muon"))
        _check(math.isfinite(self.muon_lr) and self.muon_lr > 0, "train.muon_lr", "must be a positive number",
               self.muon_lr)
        if isinstance(self.compile, str):
            _choice("train.compile", self.compile, ("auto",))


@dataclass
class SampleConfig:
    """Defaults for ``gptiny sample``; its command-line options override them."""

    SECTION: ClassVar[str] = "sample"
    tokens: int = 500
    temperature: float = 1.0
    # 0 keeps every candidate (TOML has no null).
    top_k: int = 0

    def __post_init__(self) -> None:
        _check(self.tokens >= 1, "sample.tokens", "must be at least 1", self.tokens)
        _check(self.temperature >= 0, "sample.temperature", "must not be negative", self.temperature)
        _check(self.top_k >= 0, "sample.top_k", "must not be negative (0 turns it off)", self.top_k)


@dataclass
class LogConfig:
    """Where training metrics go besides metrics.jsonl."""

    SECTION: ClassVar[str] = "log"
    # TensorBoard event files in the run directory; needs the optional extra gptiny[tensorboard].
    tensorboard: bool = False

    def require_installed(self) -> None:
        """Refuse, before any run is created or changed, a log that needs a package not installed."""
        if not self.tensorboard:
            return
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            raise GptinyError("log.tensorboard = true needs the tensorboard package, an optional extra: "
                              "pip install 'gptiny[tensorboard]' (or set log.tensorboard = false)") from None


SECTIONS: tuple[type, ...] = (DataConfig, ModelConfig, TrainConfig, SampleConfig, LogConfig)


@dataclass
class RunConfig:
    """A whole run: one attribute per TOML section."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {cls.SECTION: dataclasses.asdict(getattr(self, cls.SECTION)) for cls in SECTIONS}

    def to_toml(self) -> str:
        """Every key written out, defaults included, so a run records what it used."""
        lines: list[str] = []
        for section, values in self.to_dict().items():
            lines.append(f"[{section}]")
            lines.extend(f"{key} = {toml_value(value)}" for key, value in values.items())
            lines.append("")
        return "\n".join(lines)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _accepts(annotation: Any, value: Any) -> Any:
    """Return value converted to the annotated type, or raise TypeError."""
    options = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    for option in options:
        if option is type(None) and value is None:
            return None
        if option is bool and isinstance(value, bool):
            return value
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if option is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                return float(value)
            except OverflowError:
                raise TypeError("a number within float range") from None
        if option is str and isinstance(value, str):
            return value
    names = " or ".join("null" if o is type(None) else o.__name__ for o in options)
    raise TypeError(names)


def _build_section(cls: type, values: Any) -> Any:
    section = cls.SECTION
    if not isinstance(values, dict):
        raise GptinyError(f"[{section}] must be a table of keys, not {values!r}")
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {close[0]}?" if close else f"; valid keys: {', '.join(known)}"
            raise GptinyError(f"unknown key {section}.{key}{hint}")
        try:
            kwargs[key] = _accepts(hints[key], value)
        except TypeError as err:
            raise GptinyError(f"{section}.{key} = {value!r} is invalid: must be {err}") from None
    return cls(**kwargs)


def config_from_dict(raw: dict[str, Any]) -> RunConfig:
    """Build and validate a config from parsed TOML; raises GptinyError on any problem."""
    by_name = {cls.SECTION: cls for cls in SECTIONS}
    for name in raw:
        if name not in by_name:
            close = difflib.get_close_matches(name, list(by_name), n=1)
            hint = f"; did you mean [{close[0]}]?" if close else f"; valid: {', '.join(by_name)}"
            raise GptinyError(f"unknown section [{name}]{hint}")
    sections = {name: _build_section(cls, raw.get(name, {})) for name, cls in by_name.items()}
    return RunConfig(**sections)


def parse_override(text: str) -> tuple[str, str, Any]:
    """Split ``section.key=value``; the value is read as a TOML literal, else as a string."""
    target, sep, literal = text.partition("=")
    section, dot, key = target.strip().partition(".")
    if not sep or not dot or not section or not key:
        raise GptinyError(f"--set {text!r} is invalid: use SECTION.KEY=VALUE, e.g. train.max_iters=200")
    try:
        value = tomllib.loads(f"v = {literal.strip()}")["v"]
    except ValueError:  # not a TOML literal (or an integer too long to read): take it as text
        value = literal.strip()
    return section, key.strip(), value


def read_toml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise GptinyError(f"config file not found: {path}")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise GptinyError(f"{path}: not a UTF-8 text file") from None
    except ValueError as err:  # TOMLDecodeError, or an integer too long for Python to read
        raise GptinyError(f"{path}: invalid TOML: {err}") from None


def load_config(path: Path, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Read a TOML run config, apply ``--set`` overrides, validate the result."""
    raw = read_toml(path)
    for text in overrides:
        section, key, value = parse_override(text)
        table = raw.setdefault(section, {})
        if not isinstance(table, dict):
            raise GptinyError(f"--set {text!r}: [{section}] is not a table in {path}")
        table[key] = value
    return config_from_dict(raw)
