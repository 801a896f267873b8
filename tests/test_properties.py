"""Properties over generated inputs: the tokenizer round-trips, the config loader never crashes."""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
from pathlib import Path

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gptiny_cli.config import SECTIONS, RunConfig, load_config
from gptiny_cli.data import Vocab, load_corpus
from gptiny_cli.errors import GptinyError
from gptiny_cli.prepare.corpus import prepare_corpus

# Every example writes into the test's own temporary directory (the autouse fixture chdirs there),
# overwriting the previous example's files, so sharing it between examples is harmless.
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# Tokenizer


@SETTINGS
@given(corpus=st.text(min_size=1), data=st.data())
def test_any_text_made_of_the_vocabulary_round_trips(corpus, data):
    vocab = Vocab.from_text(corpus)
    text = data.draw(st.text(alphabet=st.sampled_from(vocab.chars)))
    ids = vocab.encode(text)
    assert all(0 <= i < vocab.size for i in ids)
    assert vocab.decode(ids) == text


@SETTINGS
@given(corpus=st.text(min_size=1))
def test_a_vocabulary_survives_its_json_file(corpus):
    vocab = Vocab.from_text(corpus)
    Path("vocab.json").write_text(json.dumps(vocab.to_json(), ensure_ascii=False), encoding="utf-8")
    assert Vocab.load(Path("vocab.json")) == vocab


@settings(SETTINGS, max_examples=50)
@given(text=st.text(min_size=4))
def test_prepared_token_files_decode_back_to_the_corpus(text):
    Path("corpus.txt").write_bytes(text.encode("utf-8"))
    prepare_corpus(Path("corpus.txt"), Path("data"), val_fraction=0.5)
    corpus = load_corpus(Path("data"))
    tokens = torch.cat([corpus.train, corpus.val]).tolist()
    assert corpus.vocab.decode(tokens) == text


# Config loader: any TOML document gives a valid config or a GptinyError, never another exception.


def toml_string(text: str) -> str:
    # JSON's escapes are TOML's, except that TOML also wants DEL escaped.
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


class Raw(str):
    """A TOML literal written as is: integers too long for Python's int-to-str conversion, say."""


def toml_value(value: object) -> str:
    if isinstance(value, Raw):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else "inf" if value == math.inf else "-inf" if value == -math.inf \
            else repr(value)
    if isinstance(value, (int, datetime.date, datetime.time)):
        return str(value) if isinstance(value, int) else value.isoformat()
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{toml_string(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def toml_document(doc: dict) -> str:
    """Plain keys first, then one [table] per dict value, as TOML requires."""
    lines = [f"{toml_string(k)} = {toml_value(v)}" for k, v in doc.items() if not isinstance(v, dict)]
    for name, table in doc.items():
        if isinstance(table, dict):
            lines.append(f"[{toml_string(name)}]")
            lines.extend(f"{toml_string(k)} = {toml_value(v)}" for k, v in table.items())
    return "\n".join(lines) + "\n"


FIELDS = {cls.SECTION: {f.name: f.default for f in dataclasses.fields(cls)} for cls in SECTIONS}
SCALARS = st.one_of(
    st.integers(), st.integers(-3, 600), st.floats(), st.floats(-1, 2), st.booleans(), st.text(max_size=12),
    st.sampled_from(["auto", "cosine", "constant", "adamw", "muon", "gpt", "bigram", "rope", "learned",
                     "float32", "bfloat16"]),
    st.dates(), st.datetimes(), st.times(),
)
# Beyond 64 bits, beyond float range, beyond the 4300 digits Python converts to and from text by default.
HUGE = st.builds(lambda sign, digits: Raw(sign + "1" + "0" * digits), st.sampled_from(["", "-"]),
                 st.sampled_from([20, 400, 5000]))
EXTREMES = st.one_of(HUGE, st.sampled_from([0, -1, 2**63 - 1, -(2**63), 1e308, -0.0, 5e-324, math.nan, math.inf,
                                            -math.inf, "", " ", "\x00", "auto"]))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                        st.dictionaries(st.text(max_size=5), inner, max_size=2)),
                      max_leaves=5)


def plausible(default: object) -> st.SearchStrategy:
    """Mostly values of the key's own type, near the range it accepts, so that many documents are valid."""
    if isinstance(default, bool):
        return st.one_of(st.booleans(), VALUES)
    if isinstance(default, int):
        return st.one_of(st.integers(-2, 600), st.integers(1, 64), VALUES)
    if isinstance(default, float):
        return st.one_of(st.floats(-0.5, 1.5), st.floats(1e-5, 1e-1), VALUES)
    return VALUES


def section(name: str) -> st.SearchStrategy:
    known = st.fixed_dictionaries({}, optional={k: plausible(v) for k, v in FIELDS[name].items()})
    unknown = st.dictionaries(st.text(max_size=8), VALUES, max_size=1)
    return st.one_of(known, known, known, st.builds(lambda a, b: {**a, **b}, known, unknown), VALUES)


DOCUMENTS = st.builds(
    lambda known, extra: {**extra, **known},
    st.fixed_dictionaries({}, optional={name: section(name) for name in FIELDS}),
    st.dictionaries(st.text(max_size=8), VALUES, max_size=1) | st.just({}),
)


def answer(path: Path, overrides: list[str] = ()) -> RunConfig | GptinyError:
    try:
        return load_config(path, overrides)
    except GptinyError as err:
        assert str(err)
        return err


@SETTINGS
@given(document=DOCUMENTS)
def test_any_toml_document_gives_a_config_or_a_config_error(document):
    path = Path("doc.toml")
    path.write_text(toml_document(document), encoding="utf-8")
    result = answer(path)
    assert isinstance(result, (RunConfig, GptinyError))


def test_the_generated_documents_are_often_valid_configs():
    """A guard on the strategy above: it must reach the valid side of the loader, not only its errors."""
    valid = []

    @settings(SETTINGS, max_examples=200)
    @given(document=DOCUMENTS)
    def count(document):
        path = Path("doc.toml")
        path.write_text(toml_document(document), encoding="utf-8")
        valid.append(isinstance(answer(path), RunConfig))

    count()
    assert sum(valid) >= 10


KEYS = [(section, key) for section, fields in FIELDS.items() for key in fields]


@SETTINGS
@given(where=st.sampled_from(KEYS), value=EXTREMES | VALUES)
def test_any_value_for_any_key_gives_a_config_or_a_config_error(where, value):
    section, key = where
    path = Path("doc.toml")
    path.write_text(toml_document({section: {key: value}}), encoding="utf-8")
    assert isinstance(answer(path), (RunConfig, GptinyError))


@SETTINGS
@given(text=st.text())
def test_any_text_gives_a_config_or_a_config_error(text):
    path = Path("doc.toml")
    path.write_text(text, encoding="utf-8")
    assert isinstance(answer(path), (RunConfig, GptinyError))


@SETTINGS
@given(data=st.binary())
def test_any_bytes_give_a_config_or_a_config_error(data):
    path = Path("doc.toml")
    path.write_bytes(data)
    assert isinstance(answer(path), (RunConfig, GptinyError))


@SETTINGS
@given(overrides=st.lists(st.text(max_size=30) | st.builds(
    lambda section, key, value: f"{section}.{key}={value}",
    st.sampled_from([*FIELDS, "x"]), st.sampled_from([k for f in FIELDS.values() for k in f] + ["y"]),
    st.text(max_size=12) | (VALUES | EXTREMES).map(toml_value)), max_size=3))
def test_any_set_override_gives_a_config_or_a_config_error(overrides):
    path = Path("doc.toml")
    path.write_text('[model]\nn_embd = 16\nn_head = 2\n', encoding="utf-8")
    assert isinstance(answer(path, overrides), (RunConfig, GptinyError))
