"""The ``doctor`` command: what gptiny finds on this machine, to read or to attach to a bug report.

Registered on the app by ``cli/__init__.py``.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from gptiny_cli.cli.common import out


def doctor(
    as_json: Annotated[bool, typer.Option("--json", help="Print everything as one JSON object.")] = False,
    seconds: Annotated[float, typer.Option(help="How long to time the matmul.", min=0.05, max=30)] = 1.0,
) -> None:
    """Show versions, devices, what `auto` would choose and why, CPU features, a matmul's speed and the extras.

    Examples: gptiny doctor; gptiny doctor --json > doctor.json
    """
    from gptiny_cli.hardware.doctor import report

    found = report(seconds)
    if as_json:
        out.print_json(json.dumps(found))
        return
    for line in describe(found):
        out.print(line, highlight=False, soft_wrap=True)


def describe(found: dict) -> list[str]:
    """The report as lines of text."""
    v, c, m = found["versions"], found["cpu"], found["matmul"]
    lines = [f"gptiny {v['gptiny'] or '(not installed)'}, Python {v['python']}, torch {v['torch']} "
             f"({v['torch_build']} build) on {v['platform']}", "", "devices:"]
    for d in found["devices"]:
        extra = "".join(f", {label} {d[key]}" for key, label in (("memory_gb", "GB"), ("capability", "capability"))
                        if d[key] is not None)
        lines.append(f"  {d['device']}: {d['name']}{extra}; bf16 {d['bf16']}")
    lines += ["", "auto chooses:"]
    for key, label in (("device", "--device"), ("train_dtype", "train.dtype"), ("compile", "train.compile"),
                       ("sample_precision", "sample --precision")):
        choice = found["auto"][key]
        lines.append(f"  {label} = {str(choice['value']).lower()}: {choice['why']}")
    flags = ", ".join(f"{name} {_yes(c[key])}" for key, name in (("avx512", "AVX-512"),
                                                                   ("avx512_bf16", "AVX512-BF16"), ("amx", "AMX")))
    held = f" (held down by {', '.join(c['held_down_by'])})" if c["held_down_by"] else ""
    lines += ["", f"cpu: {c['model']}; computes as class {c['class']}{held}: torch kernels {c['torch_capability']}, "
                  f"oneDNN {c['onednn_limit'] or 'unlimited'}; {flags}; "
                  f"torch uses {c['torch_threads']} of {c['logical_cores']} logical cores"]
    lines += [_matmul_line(m), "extras: " + ", ".join(f"{name} {'installed' if ok else 'missing'}"
                                                      for name, ok in found["extras"].items())]
    return lines


def _matmul_line(m: dict) -> str:
    if m["flops"] is None:
        return f"matmul: not measured: {m['error']}"
    speed = f"{m['flops'] / 1e12:.2f} TFLOP/s" if m["flops"] >= 1e12 else f"{m['flops'] / 1e9:.0f} GFLOP/s"
    against = (f", {m['fraction_of_peak']:.0%} of the {m['peak_flops'] / 1e12:g} TFLOP/s peak ({m['peak_source']})"
               if m["peak_flops"] else f"; peak: {m['peak_source']}")
    return f"matmul: {m['size']}x{m['size']} {m['dtype']} on {m['device']}: {speed}{against}"


def _yes(flag: bool | None) -> str:
    return "unknown" if flag is None else ("yes" if flag else "no")
