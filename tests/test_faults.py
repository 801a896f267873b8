"""Faults: a diverging loss, no memory, a full or read-only disk, damaged and hostile files.

Each gives one clear line, marks the run as what it is, and leaves the last checkpoint loadable.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import resource
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from gptiny_cli.cli import app
from gptiny_cli.config import config_from_dict
from gptiny_cli.errors import GptinyError
from gptiny_cli.store import manifest, tensorfile
from gptiny_cli.store.runs import load_run
from gptiny_cli.training.resume import resume
from gptiny_cli.training.session import setup
from tests.conftest import cli_env, tiny_raw, write_config
from tests.runtools import CHECKPOINT, run_info, saved_step, tensors, train_until

runner = CliRunner()


def gptiny(*args: str):
    return runner.invoke(app, list(args))


def one_line_error(result) -> str:
    """The one error line of a failed command (train announces its run on stderr first)."""
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and not any(line.startswith("error: ") for line in lines[:-1])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return lines[-1]


@pytest.fixture
def config_path(data_dir) -> Path:
    return write_config(Path("tiny.toml"), tiny_raw(data_dir, checkpoint_interval=2))


def the_run() -> Path:
    (run_dir,) = Path("runs").iterdir()
    return run_dir


# A loss that stops being a number


def test_a_nan_loss_stops_training_names_the_iteration_and_keeps_the_last_good_checkpoint(config_path, monkeypatch):
    monkeypatch.setenv("GPTINY_FAULT_NAN_AT", "3")
    line = one_line_error(gptiny("train", str(config_path), "--device", "cpu"))
    run_dir = the_run()
    assert "the loss became nan or infinite at iteration 3" in line
    assert "the checkpoint of iteration 2 is kept" in line
    assert f"gptiny train --resume {run_dir} --set train.learning_rate=0.001" in line
    info = run_info(run_dir)
    assert info["status"] == "failed" and "iteration 3" in info["error"]
    assert saved_step(run_dir) == 2
    weights = tensors(run_dir / CHECKPOINT / "model-last.safetensors")
    assert all(torch.isfinite(t).all() for t in weights.values())
    load_run(run_dir, "last")


def test_a_diverged_run_resumes_from_its_last_good_checkpoint_with_a_lower_learning_rate(config_path, monkeypatch):
    monkeypatch.setenv("GPTINY_FAULT_NAN_AT", "3")
    gptiny("train", str(config_path), "--device", "cpu")
    monkeypatch.delenv("GPTINY_FAULT_NAN_AT")
    result = gptiny("train", "--resume", "latest", "--set", "train.learning_rate=0.001", "--device", "cpu")
    assert result.exit_code == 0, result.output
    info = run_info(the_run())
    assert info["status"] == "completed" and info["iters"] == 20 and "error" not in info
    assert info["resumes"] == [{"at_iter": 2, "time": info["resumes"][0]["time"],
                                "overrides": {"train.learning_rate": 0.001}, "world_size": 1}]


# Out of memory, in a child process with a capped address space


OOM_CHILD = """
import resource, sys
import torch
from gptiny_cli.cli import main
size = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (size + (1 << 30), resource.RLIM_INFINITY))
sys.argv = ["gptiny", "train", sys.argv[1], "--device", "cpu", "--set", "train.batch_size=4000000"]
main()
"""


def test_out_of_memory_says_to_lower_the_batch_size_and_does_not_mark_the_run_completed(config_path):
    proc = subprocess.run([sys.executable, "-c", OOM_CHILD, str(config_path)], capture_output=True, text=True,
                          env=cli_env(), timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "out of memory on cpu at iteration 0: lower train.batch_size (now 4000000" in proc.stderr
    assert "model.block_size (now 8)" in proc.stderr
    info = run_info(the_run())
    assert info["status"] == "failed" and info["error"] == "out of memory"


# A full disk (a file size limit in a child process) and a read-only one


def limit_file_size(limit: int):
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_a_full_disk_stops_a_new_run_before_it_trains_and_leaves_no_partial_checkpoint(config_path):
    proc = subprocess.run([sys.executable, "-m", "gptiny_cli", "train", str(config_path), "--device", "cpu"],
                          capture_output=True, text=True, env=cli_env(), timeout=120,
                          preexec_fn=limit_file_size(8_000))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    run_dir = the_run()
    assert f"cannot write to {run_dir}: File too large; nothing had been saved yet" in proc.stderr
    assert run_info(run_dir)["status"] == "failed" and run_info(run_dir)["iters"] == 0
    assert sorted(p.name for p in run_dir.iterdir() if p.name.startswith(("checkpoint", ".checkpoint"))) == []


def test_a_full_disk_during_a_save_keeps_the_previous_checkpoint_intact(data_dir):
    run_dir = train_until(config_from_dict(tiny_raw(data_dir, checkpoint_interval=2)), stop_at=4)
    before = {p.name: p.read_bytes() for p in (run_dir / CHECKPOINT).iterdir()}
    proc = subprocess.run([sys.executable, "-m", "gptiny_cli", "train", "--resume", str(run_dir), "--device", "cpu"],
                          capture_output=True, text=True, env=cli_env(), timeout=120,
                          preexec_fn=limit_file_size(8_000))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "File too large; the checkpoint of iteration 4 is kept" in proc.stderr
    assert f"resume it: gptiny train --resume {run_dir}" in proc.stderr
    assert {p.name: p.read_bytes() for p in (run_dir / CHECKPOINT).iterdir()} == before
    assert not list(run_dir.glob(".checkpoint*"))
    assert run_info(run_dir)["status"] == "failed"
    load_run(run_dir, "last")


def test_too_little_free_space_is_refused_before_training(tmp_path):
    free = shutil.disk_usage(tmp_path).free
    with pytest.raises(GptinyError, match=r"not enough free space in .*: checkpoints need about"):
        manifest.preflight(tmp_path, checkpoint_bytes=free)
    manifest.preflight(tmp_path, checkpoint_bytes=1000)


@pytest.fixture
def read_only():
    """Make a directory unwritable, even for root (an immutable directory), and writable again afterwards."""
    made = []

    def make(path: Path) -> None:
        if os.geteuid() == 0:
            if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(path)]).returncode != 0:
                pytest.skip("root here, and this filesystem cannot make a directory immutable")
        else:
            path.chmod(0o555)
        made.append(path)

    yield make
    for path in made:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        else:
            path.chmod(0o755)


def test_a_read_only_runs_directory_is_refused_before_anything_is_trained(config_path, read_only):
    Path("runs").mkdir()
    read_only(Path("runs"))
    line = one_line_error(gptiny("train", str(config_path), "--device", "cpu"))
    assert "cannot create a run in runs" in line


def test_a_read_only_run_is_refused_on_resume_and_left_as_it_was(data_dir, read_only):
    run_dir = train_until(config_from_dict(tiny_raw(data_dir)), stop_at=4)
    read_only(run_dir)
    with pytest.raises(GptinyError, match=f"cannot write to {run_dir}"):
        resume(run_dir, device="cpu")
    assert run_info(run_dir)["status"] == "interrupted"


# Damaged, hostile and half-written runs


@pytest.fixture
def run_dir(data_dir) -> Path:
    return train_until(config_from_dict(tiny_raw(data_dir)), stop_at=4)


COMMANDS = {
    "sample": lambda run: ["sample", str(run), "--tokens", "5"],
    "inspect": lambda run: ["inspect", str(run)],
    "resume": lambda run: ["train", "--resume", str(run), "--device", "cpu"],
}


def refusal(command: str, run: Path) -> str:
    before = run_info(run)
    line = one_line_error(gptiny(*COMMANDS[command](run)))
    assert run_info(run) == before
    return line


@pytest.mark.parametrize("command", COMMANDS)
def test_a_run_killed_before_its_first_save_lists_what_is_missing(data_dir, command):
    session = setup(config_from_dict(tiny_raw(data_dir)), device="cpu")
    session.close()  # the process died here: config, vocabulary and run.json, no weights
    assert f"{session.run_dir} is incomplete: missing checkpoint/ (weights and training state)" in refusal(
        command, session.run_dir)


@pytest.mark.parametrize("command", COMMANDS)
def test_a_checkpoint_without_its_manifest_lists_what_is_missing(run_dir, command):
    (run_dir / CHECKPOINT / "manifest.json").unlink()
    (run_dir / CHECKPOINT / "state.json").unlink()
    line = refusal(command, run_dir)
    assert "is incomplete: missing" in line and "manifest.json" in line
    if command == "resume":
        assert "state.json" in line


@pytest.mark.parametrize("command", COMMANDS)
def test_truncated_weights_are_named(run_dir, command):
    weights = run_dir / CHECKPOINT / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    assert f"{weights} is damaged: " in refusal(command, run_dir)


def test_damaged_training_state_is_named_on_resume(run_dir):
    path = run_dir / CHECKPOINT / "state.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # one flipped bit's worth of damage, same size
    path.write_bytes(bytes(data))
    assert f"{path} is damaged: its sha256 differs from the manifest's" in refusal("resume", run_dir)


def forge(run_dir: Path, name: str, data: bytes) -> Path:
    """Replace a checkpoint file and make the manifest agree, as someone handing over a hostile run would."""
    path = run_dir / CHECKPOINT / name
    path.write_bytes(data)
    manifest_path = run_dir / CHECKPOINT / "manifest.json"
    recorded = json.loads(manifest_path.read_text())
    recorded["files"][name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    manifest_path.write_text(json.dumps(recorded))
    return path


def with_header(header: dict, data: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


class Payload:
    """Unpickling this runs a command; a loader that unpickled would create the file ``pwned``."""

    def __reduce__(self):
        return (os.system, ("touch pwned",))


def hostile_files(weights: bytes) -> dict[str, tuple[bytes, str]]:
    length = struct.unpack("<Q", weights[:8])[0]
    header = json.loads(weights[8:8 + length])
    data = weights[8 + length:]
    first = next(k for k in header if k != "__metadata__")
    out_of_range = {**header, first: {**header[first], "data_offsets": [0, 1 << 40]}}
    buffer = __import__("io").BytesIO()
    torch.save({"tok_emb.weight": torch.zeros(3), "x": Payload()}, buffer)
    return {
        "truncated": (weights[:-37], "(truncated?)"),
        "terabyte header": (struct.pack("<Q", 1 << 40) + weights[8:], "its header claims 1,099,511,627,776 bytes"),
        "offsets out of range": (with_header(out_of_range, data),
                                 f"tensor {first!r} claims bytes 0..1,099,511,627,776"),
        "header not json": (struct.pack("<Q", 4) + b"{{{{" + data, "its header is not JSON"),
        "torch.save pickle": (buffer.getvalue(), "is not a valid safetensors file"),
        "plain pickle": (pickle.dumps(Payload()), "is not a valid safetensors file"),
        "empty": (b"", "only 0 bytes"),
    }


@pytest.mark.parametrize("case", ["truncated", "terabyte header", "offsets out of range", "header not json",
                                  "torch.save pickle", "plain pickle", "empty"])
def test_hostile_weights_are_refused_with_a_clear_message_and_never_unpickled(run_dir, case):
    weights = run_dir / CHECKPOINT / "model.safetensors"
    data, message = hostile_files(weights.read_bytes())[case]
    forge(run_dir, "model.safetensors", data)
    for command in COMMANDS:
        line = refusal(command, run_dir)
        assert str(weights) in line and message in line, line
    assert not Path("pwned").exists()


def tiny_tensors(run_dir: Path) -> dict[str, torch.Tensor]:
    return tensors(run_dir / CHECKPOINT / "model.safetensors")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.pop("head.bias"), "missing head.bias"),
        (lambda t: t.update(extra=torch.zeros(2)), "unexpected extra"),
        (lambda t: t.update({"head.bias": torch.zeros(3)}), "head.bias is F32[3], its config needs F32["),
        (lambda t: t.update({"head.bias": t["head.bias"].double()}), "head.bias is F64["),
    ],
    ids=["missing", "unexpected", "shape", "dtype"],
)
def test_weights_that_do_not_fit_the_config_are_refused_naming_the_tensor(run_dir, change, message):
    weights = tiny_tensors(run_dir)
    change(weights)
    save_file(weights, "forged.safetensors", metadata=tensorfile.read_header(
        run_dir / CHECKPOINT / "model.safetensors")[0])
    forge(run_dir, "model.safetensors", Path("forged.safetensors").read_bytes())
    for command in COMMANDS:
        assert message in refusal(command, run_dir)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.pop("optim.head.bias.exp_avg"), "missing optim.head.bias.exp_avg"),
        (lambda t: t.update({"optim.nothing.exp_avg": torch.zeros(2)}), "unexpected optim.nothing.exp_avg"),
        (lambda t: t.update({"optim.head.bias.exp_avg": torch.zeros(3)}), "optim.head.bias.exp_avg is F32[3]"),
    ],
    ids=["missing-moment", "unexpected", "shape"],
)
def test_training_state_that_does_not_fit_the_model_is_refused_naming_the_tensor(run_dir, change, message):
    path = run_dir / CHECKPOINT / "state.safetensors"
    state = tensors(path)
    change(state)
    save_file(state, "forged.safetensors", metadata={"iter": "4"})
    forge(run_dir, "state.safetensors", Path("forged.safetensors").read_bytes())
    assert message in refusal("resume", run_dir)


def test_a_vocabulary_that_does_not_match_the_weights_is_refused(run_dir):
    vocab = run_dir / "vocab.json"
    chars = json.loads(vocab.read_text())["chars"]
    vocab.write_text(json.dumps({"chars": chars[1:] + ["€"]}))  # as many characters, not the same ones
    for command in COMMANDS:
        assert f"{vocab} does not match the weights" in refusal(command, run_dir)
    vocab.write_text(json.dumps({"chars": chars[:-1]}))
    message = f"has {len(chars) - 1} characters but model.safetensors was trained on {len(chars)}"
    assert message in refusal("sample", run_dir)


def test_a_model_config_edited_after_training_is_refused_naming_the_key(run_dir):
    config = run_dir / "config.toml"
    config.write_text(config.read_text().replace("n_head = 2", "n_head = 4"))
    assert "model.n_head is 4 here but 2 in the checkpoint" in refusal("sample", run_dir)
