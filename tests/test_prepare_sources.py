"""Preparing several inputs: files, folders searched recursively in sorted order, standard input, splits."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from gptiny_cli.cli import app
from gptiny_cli.data import load_corpus
from gptiny_cli.errors import GptinyError
from gptiny_cli.prepare.corpus import PrepareOptions, prepare_corpus


def _write(path: str, text: str | bytes) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return target


def _joined(directory: Path) -> str:
    corpus = load_corpus(directory)
    return corpus.vocab.decode(torch.cat([corpus.train, corpus.val]).long().tolist())


def test_files_and_a_nested_folder_are_joined_in_the_order_given_and_sorted_path_order():
    _write("first.txt", "the first file\n")
    _write("books/b.txt", "book b\n")
    _write("books/a/z.txt", "book a/z\n")
    _write("books/a.txt", "book a\n")
    _write("books/notes.md", "not matched by the glob\n")
    summary = prepare_corpus(["first.txt", "books"], Path("data/all"), options=PrepareOptions(val_fraction=0.2))
    # Sorted component by component: the folder books/a comes before books/a.txt.
    assert [s["path"] for s in summary.sources] == ["first.txt", "books/a/z.txt", "books/a.txt", "books/b.txt"]
    assert _joined(Path("data/all")) == "the first file\n\n\nbook a/z\n\n\nbook a\n\n\nbook b\n"


def test_meta_lists_every_source_with_its_size_and_sha256():
    import hashlib

    _write("a.txt", "alpha text\n")
    _write("b.txt", "beta text, longer\n")
    prepare_corpus(["a.txt", "b.txt"], Path("data/ab"), options=PrepareOptions(separator="|"))
    meta = json.loads(Path("data/ab/meta.json").read_text())
    assert [(s["path"], s["bytes"], s["sha256"]) for s in meta["sources"]] == [
        (name, Path(name).stat().st_size, hashlib.sha256(Path(name).read_bytes()).hexdigest())
        for name in ("a.txt", "b.txt")]
    assert _joined(Path("data/ab")) == "alpha text\n|beta text, longer\n"


def test_glob_chooses_which_files_of_a_folder_are_read():
    _write("notes/one.md", "one markdown\n")
    _write("notes/two.txt", "plain text\n")
    summary = prepare_corpus(["notes"], Path("data/md"), options=PrepareOptions(glob="*.md"))
    assert [s["path"] for s in summary.sources] == ["notes/one.md"]


def test_standard_input_is_a_source():
    text = "text that arrives on standard input, long enough to split\n"
    summary = prepare_corpus(["-"], Path("data/stdin"), stdin=io.BytesIO(text.encode()))
    assert summary.sources[0]["path"] == "-" and _joined(Path("data/stdin")) == text
    assert not Path("data/stdin/stdin.txt").exists()


def test_the_command_reads_standard_input_into_data_stdin():
    result = CliRunner().invoke(app, ["prepare", "-"], input=b"piped text, long enough to be split in two\n")
    assert result.exit_code == 0, result.output
    assert "piped text" in _joined(Path("data/stdin"))


def test_split_documents_keeps_whole_documents_on_each_side():
    for name in ("a", "b", "c", "d"):
        _write(f"docs/{name}.txt", f"document {name} " * 5)
    summary = prepare_corpus(["docs"], Path("data/docs"),
                             options=PrepareOptions(split="documents", val_fraction=0.25))
    corpus = load_corpus(Path("data/docs"))
    assert corpus.vocab.decode(corpus.val.long().tolist()) == "document d " * 5
    assert corpus.vocab.decode(corpus.train.long().tolist()).endswith("document c ")
    assert [s["split"] for s in summary.sources] == ["train", "train", "train", "val"]


def test_split_tail_says_which_document_the_cut_falls_in():
    for name in ("a", "b"):
        _write(f"docs/{name}.txt", f"document {name} " * 5)
    summary = prepare_corpus(["docs"], Path("data/docs"), options=PrepareOptions(val_fraction=0.3))
    assert [s["split"] for s in summary.sources] == ["train", "train+val"]


def test_split_documents_needs_several_documents():
    _write("one.txt", "only one document here\n")
    with pytest.raises(GptinyError, match="needs at least 2 documents"):
        prepare_corpus(["one.txt"], Path("data/one"), options=PrepareOptions(split="documents"))


def test_a_file_that_is_not_utf8_in_a_folder_is_named_with_its_byte_offset():
    _write("mixed/good.txt", "good text here\n")
    _write("mixed/latin1.txt", b"caf\xe9 au lait\n")
    with pytest.raises(GptinyError, match=r"mixed/latin1.txt is not UTF-8: invalid byte 0xe9 at byte offset 3"):
        prepare_corpus(["mixed"], Path("data/mixed"))
    assert not Path("data/mixed").exists()


def test_skip_bad_leaves_out_and_lists_the_files_that_are_not_utf8():
    _write("mixed/good.txt", "good text here, enough of it\n")
    _write("mixed/latin1.txt", b"caf\xe9 au lait\n")
    summary = prepare_corpus(["mixed"], Path("data/mixed"), options=PrepareOptions(skip_bad=True))
    assert [s["path"] for s in summary.sources] == ["mixed/good.txt"]
    assert [s["path"] for s in summary.skipped] == ["mixed/latin1.txt"]
    assert json.loads(Path("data/mixed/meta.json").read_text())["skipped"] == summary.skipped


def test_an_empty_folder_is_an_error_that_says_so():
    Path("empty").mkdir()
    with pytest.raises(GptinyError, match="no files matching '\\*.txt' under empty"):
        prepare_corpus(["empty"], Path("data/empty"))


def test_an_absolute_glob_is_refused_in_one_line():
    _write("shelf/a.txt", "a small shelf of text\n")
    with pytest.raises(GptinyError, match="--glob '/etc/\\*' is invalid"):
        prepare_corpus(["shelf"], Path("data/shelf"), options=PrepareOptions(glob="/etc/*"))


def test_an_output_below_a_file_is_refused_in_one_line(corpus_file):
    _write("notes", "a file, not a folder\n")
    with pytest.raises(GptinyError, match="--out notes/data: notes is a file, not a directory"):
        prepare_corpus([str(corpus_file)], Path("notes/data"))
    assert Path("notes").read_text() == "a file, not a folder\n"


def test_the_default_output_is_named_after_the_first_input(corpus_file):
    _write("shelf/a.txt", "a small shelf of text\n")
    result = CliRunner().invoke(app, ["prepare", "shelf", str(corpus_file)])
    assert result.exit_code == 0, result.output
    assert Path("data/shelf/meta.json").is_file()


@pytest.mark.parametrize(("options", "message"), [
    ({"split": "sideways"}, "--split 'sideways' is invalid"),
    ({"val_fraction": 1.5}, "--val-fraction 1.5 is invalid"),
    ({"min_count": 0}, "--min-count 0 is invalid"),
    ({"extend": True}, "give --vocab FILE|RUN too"),
])
def test_bad_options_are_refused_before_any_input_is_read(options, message):
    with pytest.raises(GptinyError, match=message):
        prepare_corpus(["not-read-at-all.txt"], Path("data/x"), options=PrepareOptions(**options))


def test_a_glob_that_climbs_out_of_the_folder_is_refused_in_one_line():
    _write("secret.txt", "outside the folder\n")
    _write("shelf/sub/a.txt", "inside\n")
    with pytest.raises(GptinyError, match="--glob '../\\*.txt' leaves the folder"):
        prepare_corpus(["shelf/sub"], Path("data/shelf"), options=PrepareOptions(glob="../*.txt"))


def test_links_out_of_the_folder_are_not_followed_and_a_file_linked_twice_is_read_once():
    _write("secret.txt", "outside the folder\n")
    _write("shelf/a.txt", "inside the folder, long enough to split\n")
    Path("shelf/out.txt").symlink_to(Path("secret.txt").resolve())
    Path("shelf/again.txt").symlink_to(Path("shelf/a.txt").resolve())
    summary = prepare_corpus(["shelf"], Path("data/shelf"))
    assert [s["path"] for s in summary.sources] == ["shelf/a.txt"]
    assert _joined(Path("data/shelf")) == "inside the folder, long enough to split\n"


def test_the_command_names_five_documents_per_split_and_counts_the_rest():
    for i in range(8):
        _write(f"shelf/{i}.txt", f"document number {i}, with some text in it\n")
    result = CliRunner().invoke(app, ["prepare", "shelf", "--split", "documents", "--val-fraction", "0.2"])
    assert result.exit_code == 0, result.output
    names = ", ".join(f"shelf/{i}.txt" for i in range(5))
    assert f"train: {names}, and 1 more" in result.stdout
    assert "val: shelf/6.txt, shelf/7.txt\n" in result.stdout
