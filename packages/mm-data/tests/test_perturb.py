"""Tests for mm_data.alignment.perturb: the rewriters and the rewritten-captions reader."""

from __future__ import annotations

import json
import re

import pytest

from mm_data.alignment import (
    CharRewriter,
    RuleRewriter,
    load_rewriter,
    read_rewritten,
    word_similarity,
)
from mm_data.alignment.perturb import STOPWORDS

CAPTIONS = [
    "a red cube on the left of a blue sphere",
    "two green triangles near a yellow star",
    "the large purple circle is above the small orange square",
]


def content(text):
    return [w for w in re.findall(r"[A-Za-z]+", text) if w.lower() not in STOPWORDS]


@pytest.mark.parametrize("level", [0.0, 0.3, 0.5, 1.0])
def test_rule_rewriter_changes_the_asked_share_of_content_words(level):
    rewriter = RuleRewriter(CAPTIONS, seed=0)
    out = rewriter(CAPTIONS, level)
    for before, after in zip(CAPTIONS, out):
        a, b = content(before), content(after)
        assert len(a) == len(b)  # one word for one word; stop words untouched
        changed = sum(x.lower() != y for x, y in zip(a, b))
        assert changed == round(level * len(a))
        assert [w for w in before.split() if w in STOPWORDS] == [
            w for w in after.split() if w in STOPWORDS
        ]
    assert rewriter(CAPTIONS, level) == out  # seeded
    with pytest.raises(ValueError, match=r"level must be in \[0, 1\]"):
        rewriter(CAPTIONS, 10)


def test_more_perturbation_means_less_word_similarity():
    rewriter = RuleRewriter(CAPTIONS * 3, seed=1)
    sims = [word_similarity(CAPTIONS, rewriter(CAPTIONS, u)) for u in (0.0, 0.4, 1.0)]
    assert sims[0] == 1.0 and sims[0] > sims[1] > sims[2]


@pytest.mark.parametrize("op", CharRewriter.OPS)
def test_char_rewriter_ops(op):
    out = CharRewriter(op, seed=0)(CAPTIONS, 0.2)
    for before, after in zip(CAPTIONS, out):
        if op == "delete":
            assert len(after) == len(before) - round(0.2 * len(before))
        elif op == "permute":
            assert sorted(after) == sorted(before) and after != before
        else:
            assert len(after) == len(before)
            assert sum(x != y for x, y in zip(before, after)) <= round(0.2 * len(before))


def test_rewritten_captions_in_every_json_form(tmp_path):
    by_level = {"10": ["a", "b"], "20": ["c", "d"]}
    records = [{"original": "x", "10": "a", "20": "c"}, {"original": "y", "10": "b", "20": "d"}]
    lists = [["a", "c"], ["b", "d"]]
    for k, form in enumerate((by_level, records, lists)):
        path = tmp_path / f"{k}.json"
        path.write_text(json.dumps(form))
        assert read_rewritten(path) == {10: ["a", "b"], 20: ["c", "d"]}
        rewriter = load_rewriter(str(path), [])
        assert rewriter(["x", "y"], 0.2) == ["c", "d"]
        with pytest.raises(ValueError, match="no level 50"):
            rewriter(["x", "y"], 0.5)
    (tmp_path / "bad.json").write_text(json.dumps({"10": ["a"], "20": ["b", "c"]}))
    with pytest.raises(ValueError, match="unequal length"):
        read_rewritten(tmp_path / "bad.json")


def test_load_rewriter_by_name_and_import_path():
    assert isinstance(load_rewriter("rule", CAPTIONS), RuleRewriter)
    assert load_rewriter("char:delete", CAPTIONS).op == "delete"
    fn = load_rewriter("mm_data.alignment.perturb:word_similarity", CAPTIONS)
    assert fn is word_similarity
    with pytest.raises(ValueError, match="rewriter 'nonsense'"):
        load_rewriter("nonsense", CAPTIONS)
    with pytest.raises(ValueError, match="op must be one of"):
        load_rewriter("char:swap", CAPTIONS)
