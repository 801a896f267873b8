"""``gptiny export --format hf``, checked by transformers itself: logits, greedy text, tokenizer, pipeline."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, pipeline

from gptiny_cli.data import Vocab
from gptiny_cli.errors import GptinyError
from gptiny_cli.export.card import data_facts
from gptiny_cli.export.hf import fold_head_bias, per_head
from gptiny_cli.export.hf_dir import verify
from gptiny_cli.prepare.corpus import prepare_corpus
from gptiny_cli.store.runs import load_run
from tests.exporting import EXPORT_TEXT, PROMPT, export, gptiny, greedy_text, train_run

KINDS = [("learned", False), ("learned", True), ("rope", False), ("rope", True)]


@pytest.fixture(scope="module", params=KINDS, ids=lambda kind: f"{kind[0]}-{'tied' if kind[1] else 'untied'}")
def exported(request, tmp_path_factory):
    """(run directory, its hf export) for each position type, head tied or not."""
    position, tie = request.param
    run_dir = train_run(tmp_path_factory.mktemp("hf"), position, tie)
    return run_dir, export(run_dir, "hf")


def test_the_architecture_follows_the_positions(exported):
    run_dir, out = exported
    config = json.loads((out / "config.json").read_text())
    learned = "learned" in run_dir.name
    assert config["model_type"] == ("gpt2" if learned else "gpt_neox")
    assert config["tie_word_embeddings"] == ("-tied-" in run_dir.name)
    assert (config["bos_token_id"], config["eos_token_id"], config["pad_token_id"]) == (None, None, None)


def test_logits_from_pretrained_equal_gptiny_float32_logits(exported):
    run_dir, out = exported
    ours = load_run(run_dir).model
    theirs = AutoModelForCausalLM.from_pretrained(out).eval()
    ids = torch.randint(0, ours.vocab_size, (3, ours.cfg.block_size), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (theirs(ids).logits - ours(ids)).abs().max() < 1e-4


def test_greedy_generate_gives_the_text_of_gptiny_sample(exported):
    run_dir, out = exported
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    text = tokenizer.decode(model.generate(ids, do_sample=False, max_new_tokens=100)[0])
    assert text == greedy_text(run_dir, PROMPT, 100)


def test_the_tokenizer_gives_our_ids_and_decodes_back(exported):
    run_dir, out = exported
    vocab = load_run(run_dir).vocab
    tokenizer = AutoTokenizer.from_pretrained(out)
    text = EXPORT_TEXT[-120:]  # spaces, newlines and characters outside ASCII
    assert any(ord(ch) > 127 for ch in text) and " " in text and "\n" in text
    ids = tokenizer(text).input_ids
    assert ids == vocab.encode(text)
    assert tokenizer.decode(ids) == text


def test_a_text_generation_pipeline_continues_a_prompt(exported):
    run_dir, out = exported
    generate = pipeline("text-generation", model=str(out))
    (result,) = generate(PROMPT, max_new_tokens=20, do_sample=False)
    assert result["generated_text"] == greedy_text(run_dir, PROMPT, 20)


def test_generation_defaults_are_the_runs_with_every_character_a_candidate(exported):
    run_dir, out = exported
    sample = load_run(run_dir).config.sample
    config = GenerationConfig.from_pretrained(out)
    assert config.do_sample and config.temperature == sample.temperature
    assert config.top_k == 0 and config.max_new_tokens == sample.tokens  # transformers' own top_k would be 50


def test_the_model_card_names_the_data_and_warns_of_unknown_characters(exported):
    run_dir, out = exported
    card = (out / "README.md").read_text()
    sha = json.loads((run_dir.parent.parent / "data" / "tiny" / "meta.json").read_text())["sha256"]
    assert sha in card and "dropped silently" in card and "bits per character" in card


def test_the_model_card_lists_each_source_of_a_corpus_of_several_files(tmp_path):
    for name in ("a.txt", "b.txt"):
        (tmp_path / name).write_text(f"the text of {name}, long enough to split\n", encoding="utf-8")
    prepare_corpus([tmp_path / "a.txt", tmp_path / "b.txt"], tmp_path / "data")
    sources, sha = data_facts(tmp_path / "data")
    meta = json.loads((tmp_path / "data" / "meta.json").read_text())
    assert sha == meta["sha256"] and len(sources) == 2
    assert all(s["path"] in line and s["sha256"] in line for s, line in zip(meta["sources"], sources, strict=True))


@pytest.mark.parametrize("position", ["learned", "rope"])
def test_a_gelu_run_exports_as_gelu_new_with_gptinys_logits(tmp_path, position):
    run_dir = train_run(tmp_path, position, activation="gelu")
    out = export(run_dir, "hf")
    config = json.loads((out / "config.json").read_text())
    assert config.get("activation_function", config.get("hidden_act")) == "gelu_new"
    ours, theirs = load_run(run_dir).model, AutoModelForCausalLM.from_pretrained(out).eval()
    ids = torch.randint(0, ours.vocab_size, (2, ours.cfg.block_size), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert (theirs(ids).logits - ours(ids)).abs().max() < 1e-4


def test_verify_refuses_an_export_that_disagrees_with_the_model(exported):
    run_dir, out = exported
    loaded = load_run(run_dir)
    with torch.no_grad():
        loaded.model.ln_f.bias += 0.01
    with pytest.raises(GptinyError, match="differ from gptiny's"):
        verify(loaded.model, loaded.vocab, out, shift=0.0)


def test_the_head_bias_folds_exactly_into_the_layernorm_bias():
    torch.manual_seed(0)
    weight, bias, ln_bias = torch.randn(10, 16), torch.randn(10), torch.randn(16)
    fold = fold_head_bias(weight, bias, ln_bias)
    assert fold.shift == 0 and fold.residual < 1e-6
    assert torch.allclose(weight.double() @ (fold.ln_bias - ln_bias).double(), bias.double(), atol=1e-6)


def test_one_character_more_than_n_embd_folds_with_a_constant_shift():
    torch.manual_seed(0)
    weight, bias, ln_bias = torch.randn(17, 16), torch.randn(17), torch.randn(16)
    fold = fold_head_bias(weight, bias, ln_bias)
    folded = weight.double() @ (fold.ln_bias - ln_bias).double()
    assert fold.shift != 0 and torch.allclose(folded + fold.shift, bias.double(), atol=1e-6)


def test_a_run_with_one_character_more_than_n_embd_exports_the_same_probabilities(tmp_path):
    run_dir = train_run(tmp_path, n_embd=Vocab.from_text(EXPORT_TEXT).size - 1)
    result = gptiny("export", str(run_dir), "--format", "hf")
    assert result.exit_code == 0 and "every logit lowered by" in result.stdout, result.output
    ours = load_run(run_dir).model
    theirs = AutoModelForCausalLM.from_pretrained(run_dir / "export" / "hf").eval()
    ids = torch.randint(0, ours.vocab_size, (2, 64), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        difference = theirs(ids).logits.log_softmax(-1) - ours(ids).log_softmax(-1)
    assert difference.abs().max() < 1e-4


def test_a_vocabulary_two_larger_than_n_embd_is_refused():
    with pytest.raises(GptinyError, match="model.n_embd of at least 17"):
        fold_head_bias(torch.randn(18, 16), torch.randn(18), torch.randn(16))


def test_per_head_groups_the_rows_head_by_head():
    rows = torch.arange(12)  # q: heads 0, 1 (2 rows each); k: the same; v: the same
    assert per_head(rows, 2).tolist() == [0, 1, 4, 5, 8, 9, 2, 3, 6, 7, 10, 11]
