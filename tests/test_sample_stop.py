"""Turning token steps into texts: stop strings, several samples, streaming and interruptions."""

from __future__ import annotations

import pytest
import torch

from gptiny_cli.generation.sample import SampleText, follow

CHARS = ("\n", " ", "a", "b", "c")


def steps_of(*rows: str):
    """Token steps (B,) spelling out one string per sample, and a list recording how many were drawn."""
    drawn = []

    def steps():
        for column in zip(*rows, strict=True):
            drawn.append(1)
            yield torch.tensor([CHARS.index(ch) for ch in column])

    return steps(), drawn


def test_without_a_stop_string_the_text_is_everything_generated():
    steps, _ = steps_of("ab c\nab")
    samples = [SampleText()]
    follow(steps, CHARS, samples)
    assert samples[0].text == "ab c\nab" and samples[0].generated == 7 and not samples[0].stopped


def test_a_sample_ends_before_its_stop_string():
    steps, drawn = steps_of("ab\n\nccc")
    samples = [SampleText(("\n\n",))]
    follow(steps, CHARS, samples)
    assert samples[0].text == "ab" and samples[0].stopped
    assert len(drawn) == 4  # nothing drawn after the stop


def test_a_partial_stop_string_belongs_to_the_text():
    steps, _ = steps_of("ab\nc\n")
    samples = [SampleText(("\n\n",))]
    follow(steps, CHARS, samples)
    assert samples[0].text == "ab\nc\n" and not samples[0].stopped


def test_streaming_holds_back_only_what_may_start_the_stop_string():
    streamed: list[str] = []
    steps, _ = steps_of("aab aba")
    samples = [SampleText(("aba",))]
    follow(steps, CHARS, samples, lambda i, text: streamed.append(text))
    assert "".join(streamed) == samples[0].text == "aab " and samples[0].stopped
    # "a", then "a" once "aa" shows the first cannot begin "aba", then "ab " once " " rules "ab" out
    assert streamed == ["a", "ab "]


def test_samples_stop_independently_and_generation_ends_when_all_have():
    steps, drawn = steps_of("a\nbbbbbb", "ccc\nbbbb", "abcabcab")
    samples = [SampleText(("\n",)) for _ in range(3)]
    follow(steps, CHARS, samples)
    assert [s.text for s in samples] == ["a", "ccc", "abcabcab"]
    assert [s.stopped for s in samples] == [True, True, False]
    assert len(drawn) == 8


def test_generation_stops_early_once_every_sample_has_stopped():
    steps, drawn = steps_of("a\nbbbbbb", "ccc\nbbbb")
    follow(steps, CHARS, [SampleText(("\n",)), SampleText(("\n",))])
    assert len(drawn) == 4


def test_an_interruption_keeps_what_was_generated():
    def steps():
        yield torch.tensor([2])
        yield torch.tensor([0])
        raise KeyboardInterrupt

    samples = [SampleText(("\n\n",))]
    with pytest.raises(KeyboardInterrupt):
        follow(steps(), CHARS, samples)
    assert samples[0].text == "a\n" and samples[0].generated == 2


def test_each_sample_records_when_it_ended():
    ticks = iter(range(100))
    steps, _ = steps_of("a\nbb", "abbb")
    samples = [SampleText(("\n",)), SampleText(("\n",))]
    follow(steps, CHARS, samples, clock=lambda: float(next(ticks)))
    assert 0 < samples[0].seconds < samples[1].seconds


def test_of_several_stop_strings_the_first_to_appear_ends_the_sample():
    steps, drawn = steps_of("abcab\nc")
    samples = [SampleText(("\n", "ca", "bb"))]
    follow(steps, CHARS, samples)
    assert samples[0].text == "ab" and samples[0].stopped and len(drawn) == 4


def test_a_character_that_could_start_any_stop_string_is_held_until_it_cannot():
    sample = SampleText(("ab", "cc"))
    assert sample.add("xc") == "x" and sample.pending == "c"
    assert sample.add("a") == "c" and sample.add("a") == "a" and sample.pending == "a"
    assert sample.add("b") == "" and sample.stopped and sample.text == "xca"
