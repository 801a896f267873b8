"""``gptiny export`` refuses bad input in one line and leaves nothing half-written."""

from __future__ import annotations

from pathlib import Path

import pytest

from gptiny_cli.errors import GptinyError
from gptiny_cli.export.target import require
from tests.exporting import gptiny, train_run


@pytest.fixture
def run_dir() -> Path:
    return train_run(Path("."))


def export_to(run_dir: Path, out: str) -> Path:
    result = gptiny("export", str(run_dir), "--format", "hf", "--out", out)
    assert result.exit_code == 0, result.output
    return Path(out)


def files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def refused(result, message: str) -> None:
    """Exit status 1 with exactly one error line, which says ``message``."""
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert result.exit_code == 1, result.output
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert "Traceback" not in result.output


def test_the_default_output_is_the_runs_export_folder_for_the_format(run_dir):
    result = gptiny("export", str(run_dir), "--format", "hf")
    assert result.exit_code == 0, result.output
    assert (run_dir / "export" / "hf" / "model.safetensors").is_file()
    assert f"wrote {run_dir / 'export' / 'hf'}" in result.stdout


def test_a_run_without_weights_is_refused(run_dir):
    (run_dir / "checkpoint" / "model.safetensors").unlink()
    before = files(run_dir)
    refused(gptiny("export", str(run_dir), "--format", "hf"), "model.safetensors is missing")
    assert files(run_dir) == before


def test_a_damaged_checkpoint_is_refused_by_its_manifest(run_dir):
    (run_dir / "checkpoint" / "model.safetensors").write_bytes(b"\x00" * 64)
    before = files(run_dir)
    refused(gptiny("export", str(run_dir), "--format", "onnx"), "model.safetensors is damaged")
    assert files(run_dir) == before


def test_an_unknown_format_is_refused(run_dir):
    refused(gptiny("export", str(run_dir), "--format", "ggml"), "--format 'ggml' is unknown: use hf")
    assert not (run_dir / "export").exists()


def test_an_earlier_export_is_kept_unless_forced(run_dir):
    out = export_to(run_dir, "first")
    (out / "notes.txt").write_text("from the first export")
    refused(gptiny("export", str(run_dir), "--format", "onnx", "--out", "first"), "add --force to replace it")
    assert "notes.txt" in files(out)
    result = gptiny("export", str(run_dir), "--format", "onnx", "--out", "first", "--force")
    assert result.exit_code == 0, result.output
    assert "notes.txt" not in files(out) and "model.onnx" in files(out) and "config.json" not in files(out)
    assert [p.name for p in Path(".").iterdir() if p.name.startswith(".first")] == []


def test_a_directory_that_holds_no_export_is_never_replaced(run_dir):
    out = Path("mine")
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    refused(gptiny("export", str(run_dir), "--format", "hf", "--out", "mine", "--force"), "holds no earlier export")
    assert files(out) == ["notes.txt"]


def test_a_model_directory_gptiny_did_not_write_is_not_replaced_even_with_the_same_file_names(run_dir):
    out = Path("someone-elses")
    out.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "their-notes.md"):
        (out / name).write_text("theirs")
    refused(gptiny("export", str(run_dir), "--format", "hf", "--out", str(out), "--force"), "holds no earlier export")
    assert files(out) == ["config.json", "model.safetensors", "their-notes.md", "tokenizer.json"]


def test_an_output_that_holds_the_run_is_refused_even_with_force(run_dir):
    before = files(run_dir)
    refused(gptiny("export", str(run_dir), "--format", "hf", "--out", str(run_dir.parent), "--force"),
            "holds the run")
    assert files(run_dir) == before


def test_an_output_below_a_file_is_refused(run_dir):
    Path("notes").write_text("keep me")
    refused(gptiny("export", str(run_dir), "--format", "hf", "--out", "notes/model"), "notes is a file")
    assert Path("notes").read_text() == "keep me"


def test_a_vocabulary_too_large_to_fold_is_refused_and_onnx_still_exports(tmp_path):
    small = train_run(tmp_path, n_embd=16)  # the corpus has more than 17 characters
    before = files(small)
    refused(gptiny("export", str(small), "--format", "hf"), "cannot be folded")
    assert files(small) == before
    result = gptiny("export", str(small), "--format", "onnx")
    assert result.exit_code == 0, result.output


def test_a_missing_extra_names_the_install_command():
    with pytest.raises(GptinyError, match=r"pip install 'gptiny\[hf\]'"):
        require("hf", ["gptiny_export_test_no_such_module"])
