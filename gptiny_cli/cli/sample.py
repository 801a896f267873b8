"""The ``sample`` command: generate text from a run, streamed, in a batch, or as JSON lines.

Registered on the app by ``cli/__init__.py``.
"""

from __future__ import annotations

import json
import math
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from gptiny_cli.cli.common import RUNS_DIR, Which, err, out, user_errors
from gptiny_cli.errors import GptinyError


class Precision(str, Enum):
    auto = "auto"
    float32 = "float32"
    bfloat16 = "bfloat16"
    int8 = "int8"


def sample(
    run: Annotated[str, typer.Argument(help="A run directory, or `latest`.")] = "latest",
    tokens: Annotated[int | None, typer.Option(help="Characters to generate \\[default: sample.tokens, 500].")] = None,
    prompt: Annotated[str, typer.Option(help="Text to continue.")] = "",
    prompt_file: Annotated[Path | None, typer.Option(help="Continue the text of this UTF-8 file.")] = None,
    temperature: Annotated[float | None, typer.Option(help="0 is greedy; higher is wilder \\[default: 1.0].")] = None,
    top_k: Annotated[int | None, typer.Option(help="Keep only the k most likely characters.")] = None,
    top_p: Annotated[float, typer.Option(help="Keep the most likely characters up to this probability mass.")] = 1.0,
    seed: Annotated[int | None, typer.Option(help="Seed for reproducible samples.")] = None,
    checkpoint: Annotated[Which, typer.Option(help="Weights with the best val loss, or the last ones.")] = Which.best,
    num_samples: Annotated[int, typer.Option(help="Independent samples, generated as one batch.")] = 1,
    stop: Annotated[list[str] | None, typer.Option(help="End a sample where this text appears (left out of it), "
                                                        "e.g. $'\\n\\n' for a blank line; repeat for several.")] = None,
    stream: Annotated[bool | None, typer.Option(help="Print as generated \\[default: on a terminal].")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per sample: text, tokens, "
                                                          "tokens_per_second, stopped.")] = False,
    kv_cache: Annotated[bool, typer.Option(help="Reuse keys and values (--no-kv-cache: the plain loop).")] = True,
    precision: Annotated[Precision, typer.Option(
        help="Number format of the weights for generating; auto: int8 on a CPU, float32 elsewhere.")] = Precision.auto,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps; auto as for serve.")] = "auto",
    runs_dir: RUNS_DIR = Path("runs"),
) -> None:
    """Generate text from a trained run. Stdout gets the prompt and the generated characters.

    Examples: gptiny sample latest --tokens 500; gptiny sample runs/<id> --prompt "ROMEO:" --temperature 0.8;
    gptiny sample latest --num-samples 4 --stop $'\\n\\n' --json
    """
    from gptiny_cli.generation.sample import SampleText, generate, seeded_generator
    from gptiny_cli.store.runs import load_run, resolve_run

    with user_errors():
        loaded = load_run(resolve_run(run, runs_dir), checkpoint.value)
        defaults = loaded.config.sample
        n = defaults.tokens if tokens is None else tokens
        temp = defaults.temperature if temperature is None else temperature
        _check_sample_args(n, temp, top_k, top_p, num_samples)
        k = defaults.top_k if top_k is None else top_k
        text = _read_prompt(prompt, prompt_file)
        _check_prompt(text, loaded.vocab, "--prompt-file" if prompt_file else "--prompt")
        model, dev = _for_inference(loaded.model, device, precision.value)
        generator = seeded_generator(dev, seed)
    unit = "characters" if loaded.vocab.kind == "char" else "tokens"
    err.print(f"sampling {n} {unit} × {num_samples} from {loaded.weights}", highlight=False)
    steps = generate(model, loaded.vocab.encode(text), n, num_samples=num_samples, temperature=temp, top_k=k,
                     top_p=top_p, generator=generator, use_cache=kv_cache, start_token=loaded.vocab.start_token)
    samples = [SampleText(tuple(s for s in stop or () if s)) for _ in range(num_samples)]
    live = not as_json and num_samples == 1 and (out.is_terminal if stream is None else stream)
    table = loaded.vocab.pieces if loaded.vocab.kind == "char" else loaded.vocab.token_bytes
    interrupted = _run(steps, table, samples, text, live)
    _render(samples, text, as_json, live)
    _report_speed(samples, interrupted)
    if interrupted:
        raise typer.Exit(130)


def _for_inference(model, device: str, precision: str):
    """The model ready to generate on its device, in the number format asked for (or ``auto``'s)."""
    from gptiny_cli.generation.inference import for_inference
    from gptiny_cli.hardware.device import auto_sample_precision, pick_device
    from gptiny_cli.hardware.setup import place, use_device

    dev = use_device(pick_device(device), tf32=False)
    chosen = auto_sample_precision(dev)[0] if precision == "auto" else precision
    return place(for_inference(model, chosen, dev), dev), dev


def _check_prompt(text: str, vocab, source: str) -> None:
    unknown = vocab.unknown(text)
    if unknown:
        raise GptinyError(f"{source} has characters this run's vocabulary lacks: {''.join(unknown)!r}")


def _report_speed(samples: list, interrupted: bool) -> None:
    total = sum(s.generated for s in samples)
    seconds = max(s.seconds for s in samples)
    err.print(f"{total:,} characters in {seconds:.2f} s ({total / max(seconds, 1e-9):,.0f} characters/s)"
              + (", interrupted" if interrupted else ""), highlight=False)


def _check_sample_args(tokens: int, temperature: float, top_k: int | None, top_p: float, num_samples: int) -> None:
    if tokens < 1:
        raise GptinyError(f"--tokens {tokens} is invalid: generate at least 1 character")
    if not (math.isfinite(temperature) and temperature >= 0):
        raise GptinyError(f"--temperature {temperature} is invalid: must be 0 (greedy) or more")
    if top_k is not None and top_k < 1:
        raise GptinyError(f"--top-k {top_k} is invalid: must be at least 1 (leave it out to keep every character)")
    if not 0 < top_p <= 1:
        raise GptinyError(f"--top-p {top_p} is invalid: must be in (0, 1]")
    if num_samples < 1:
        raise GptinyError(f"--num-samples {num_samples} is invalid: must be at least 1")


def _read_prompt(prompt: str, prompt_file: Path | None) -> str:
    if prompt_file is None:
        return prompt
    if prompt:
        raise GptinyError("give --prompt or --prompt-file, not both")
    try:
        return prompt_file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise GptinyError(f"--prompt-file {prompt_file} not found") from None
    except IsADirectoryError:
        raise GptinyError(f"--prompt-file {prompt_file} is a directory, not a text file") from None
    except UnicodeDecodeError as error:
        raise GptinyError(f"--prompt-file {prompt_file} is not UTF-8 (byte offset {error.start})") from None


def _run(steps, table: tuple, samples: list, prompt: str, live: bool) -> bool:
    """Generate into ``samples``, streaming if ``live``; True if Ctrl-C cut it short."""
    from gptiny_cli.generation.sample import follow

    def write(_: int, text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    try:
        if live:
            write(0, prompt)
        follow(steps, table, samples, write if live else None)
    except KeyboardInterrupt:
        return True
    except BrokenPipeError:  # e.g. piped into `head`: the reader has all it wants
        _quiet_stdout()
        raise typer.Exit(0) from None
    return False


def _render(samples: list, prompt: str, as_json: bool, live: bool) -> None:
    try:
        if as_json:
            for s in samples:
                speed = round(s.tokens / s.seconds, 1) if s.seconds > 0 else None
                record = {"text": prompt + s.text, "tokens": s.tokens, "tokens_per_second": speed,
                          "stopped": s.stopped}
                sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
        elif live:
            sys.stdout.write("\n")
        else:
            sys.stdout.write("\n".join(prompt + s.text + "\n" for s in samples))
        sys.stdout.flush()
    except BrokenPipeError:
        _quiet_stdout()


def _quiet_stdout() -> None:
    """Point stdout at /dev/null so that Python's final flush cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
