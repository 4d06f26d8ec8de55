"""The translation metrics must be the numbers sacrebleu's own command line prints for the same files,
for each tokenizer the family uses (13a, zh, char), so a reported BLEU can be checked by anyone."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from smctune.errors import UserError
from smctune.trainables.translation.metrics import (DirectionScore, check_bleu_tokenizer, score_direction,
                                                    signatures, summarize)

ENGLISH = (
    ["The cat sat on the mat.", "It is raining in Paris today.", "", "We will meet at the station tomorrow."],
    ["The cat was sitting on the mat.", "Today it rains in Paris.", "Thank you very much.",
     "Tomorrow we meet at the station."],
)
CHINESE = (
    ["猫坐在垫子上。", "今天巴黎在下雨，很冷。", "我们明天在车站见面。"],
    ["那只猫坐在垫子上。", "巴黎今天下雨了，天气很冷。", "我们明天在火车站见。"],
)
JAPANESE = (
    ["猫がマットの上に座った。", "今日はパリで雨が降っています。", "明日、駅で会いましょう。"],
    ["猫はマットの上に座っていた。", "パリは今日雨です。", "明日は駅で会いましょう。"],
)
CASES = {"en-13a": ("13a", ENGLISH), "zh-zh": ("zh", CHINESE), "ja-char": ("char", JAPANESE)}


def cli_scores(tmp_path, tokenizer, hypotheses, references) -> dict:
    """sacrebleu's command line on the same lines: metric name -> (score, signature)."""
    hyp, ref = tmp_path / "hyp.txt", tmp_path / "ref.txt"
    hyp.write_text("".join(f"{line}\n" for line in hypotheses), encoding="utf-8")
    ref.write_text("".join(f"{line}\n" for line in references), encoding="utf-8")
    env = {key: value for key, value in os.environ.items() if key != "SACREBLEU_FORMAT"}
    done = subprocess.run([sys.executable, "-m", "sacrebleu", str(ref), "-i", str(hyp), "-tok", tokenizer,
                           "-m", "bleu", "chrf", "-w", "10", "--format", "json"],
                          capture_output=True, text=True, env=env, check=True)
    return {entry["name"]: (entry["score"], entry["signature"]) for entry in json.loads(done.stdout)}


@pytest.mark.parametrize("case", sorted(CASES))
def test_scores_match_the_sacrebleu_command_line(tmp_path, case):
    tokenizer, (hypotheses, references) = CASES[case]
    score = score_direction(hypotheses, references, tokenizer)
    expected = cli_scores(tmp_path, tokenizer, hypotheses, references)
    assert score.bleu == pytest.approx(expected["BLEU"][0], abs=1e-6)
    assert score.chrf == pytest.approx(expected["chrF2"][0], abs=1e-6)
    assert score.bleu_signature == expected["BLEU"][1]
    assert score.chrf_signature == expected["chrF2"][1]
    assert f"tok:{tokenizer}" in score.bleu_signature
    assert score.sentences == len(hypotheses)
    assert 0 < score.bleu < 100 and 0 < score.chrf < 100


def test_the_tokenizer_changes_the_score():
    """Scoring Chinese with 13a sees each clause as one word: why the tokenizer is per language."""
    hypotheses, references = CHINESE
    assert score_direction(hypotheses, references, "zh").bleu > score_direction(hypotheses, references, "13a").bleu


def test_identical_text_scores_100():
    score = score_direction(CHINESE[1], CHINESE[1], "zh")
    assert score.bleu == pytest.approx(100.0) and score.chrf == pytest.approx(100.0)


def test_empty_hypotheses_score_zero():
    references = ENGLISH[1]
    score = score_direction([""] * len(references), references, "13a")
    assert (score.bleu, score.chrf, score.sentences) == (0.0, 0.0, len(references))


def test_an_empty_direction_scores_zero_with_its_signatures():
    score = score_direction([], [], "char")
    assert (score.bleu, score.chrf, score.sentences) == (0.0, 0.0, 0)
    assert "tok:char" in score.bleu_signature and "nc:6" in score.chrf_signature


def test_summary_is_the_unweighted_mean_over_directions():
    scores = {"en-fr": DirectionScore(30.0, 50.0, 10, "b", "c"),
              "fr-en": DirectionScore(20.0, 40.0, 1000, "b", "c"),
              "en-zh": DirectionScore(10.0, 30.0, 5, "b", "c")}
    summary = summarize(scores)
    assert summary["bleu"] == pytest.approx(0.20)          # the core's fraction
    assert summary["bleu_points"] == pytest.approx(20.0)
    assert summary["chrf"] == pytest.approx(40.0)
    assert summary["bleu/fr-en"] == 20.0 and summary["chrf/en-zh"] == 30.0
    assert set(summary) == {"bleu", "bleu_points", "chrf", *(f"{metric}/{direction}" for metric in
                                                             ("bleu", "chrf") for direction in scores)}
    assert all(isinstance(value, float) for value in summary.values())


def test_summary_of_real_scores():
    scores = {f"en-{tokenizer}": score_direction(*pair, tokenizer) for tokenizer, pair in CASES.values()}
    summary = summarize(scores)
    mean = sum(score.bleu for score in scores.values()) / len(scores)
    assert summary["bleu_points"] == pytest.approx(mean)
    assert summary["bleu"] == pytest.approx(mean / 100)
    assert 0.0 <= summary["bleu"] <= 1.0
    assert signatures(scores)["bleu/en-zh"] == scores["en-zh"].bleu_signature


def test_signatures_are_keyed_like_the_summary():
    scores = {"en-ja": score_direction(*JAPANESE, "char")}
    assert set(signatures(scores)) == {"bleu/en-ja", "chrf/en-ja"}
    assert "tok:char" in signatures(scores)["bleu/en-ja"]


def test_unknown_tokenizer_is_a_one_line_error():
    with pytest.raises(UserError, match="unknown BLEU tokenizer 'moses'.*13a.*zh") as err:
        score_direction(["a"], ["a"], "moses")
    assert "\n" not in str(err.value)
    with pytest.raises(UserError):
        check_bleu_tokenizer("Zh")
    check_bleu_tokenizer("char")


@pytest.mark.skipif(importlib.util.find_spec("MeCab") is not None, reason="MeCab is installed here")
def test_a_tokenizer_missing_its_extra_is_a_one_line_error():
    with pytest.raises(UserError, match="'ja-mecab' is unavailable") as err:
        score_direction(["a"], ["a"], "ja-mecab")
    assert "\n" not in str(err.value)


def test_mismatched_lengths_and_no_directions_are_errors():
    with pytest.raises(UserError, match="2 hypotheses for 1 references"):
        score_direction(["a", "b"], ["a"], "13a")
    with pytest.raises(UserError, match="no translation directions"):
        summarize({})


def test_recipe_names_each_targets_tokenizer_by_its_signature():
    """``plan`` and ``sweep`` print how BLEU is computed: sacrebleu's signatures, one per tokenizer."""
    from smctune.trainables.translation.metrics import recipe

    line = recipe({"fr": "13a", "de": "13a", "zh": "zh", "ja": "char"})
    assert "tok:13a|" in line and "for fr, de" in line and "tok:zh|" in line and "tok:char|" in line
    assert "chrF: nrefs:1|" in line and "\n" not in line
