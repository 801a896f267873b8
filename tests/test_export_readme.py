"""The README's Export section runs as shown: its commands, then its transformers and onnxruntime snippets."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from tests.exporting import gptiny, greedy_text, train_run

README = Path(__file__).resolve().parent.parent / "README.md"


def export_blocks() -> list[tuple[str, str]]:
    """(language, code) of each code block under the README's "## Export" heading."""
    section = README.read_text(encoding="utf-8").split("\n## Export\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```(\w+)\n(.*?)```", section, re.DOTALL)


def test_the_readme_export_commands_and_snippets_run_as_shown():
    run_dir = train_run(Path("."))
    blocks = export_blocks()
    assert [language for language, _ in blocks][:3] == ["bash", "python", "python"]
    for line in blocks[0][1].splitlines():
        args = shlex.split(line)
        assert args[0] == "gptiny"
        result = gptiny(*args[1:])
        assert result.exit_code == 0, result.output
    expected = greedy_text(run_dir, "ROMEO:", 100)
    for _, code in blocks[1:3]:
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(compile(code, "README.md", "exec"), {})
        assert printed.getvalue() == expected + "\n"


def test_the_readme_gguf_snippet_gives_gptinys_greedy_text(tmp_path):
    pytest.importorskip("llama_cpp")
    run_dir = train_run(Path("."), activation="gelu")
    out = tmp_path / "model-f32.gguf"
    result = gptiny("export", str(run_dir), "--format", "gguf", "--out", str(out))
    assert result.exit_code == 0, result.output
    (code,) = [code for language, code in export_blocks() if language == "python" and "llama_cpp" in code]
    path = re.search(r'model_path="([^"]+)"', code).group(1)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code.replace(path, str(out)), "README.md", "exec"), {})
    assert printed.getvalue() == greedy_text(run_dir, "ROMEO:", 120) + "\n"
