"""scratchbert.synthetic: the generated corpus and SQuAD-style QA set."""

from __future__ import annotations

import json
import re

from scratchbert import synthetic
from scratchbert.corpus import load_documents, split_sentences


def test_corpus_is_deterministic_and_seeded():
    a, b, c = synthetic.make_corpus(50, seed=1), synthetic.make_corpus(50, seed=1), synthetic.make_corpus(50, seed=2)
    assert a == b and a != c
    assert len(a) == 50 and len(set(a)) == 50
    assert synthetic.make_corpus(10, seed=1) == a[:10]  # a longer corpus extends a shorter one


def test_documents_are_single_paragraphs_of_several_sentences_about_one_subject():
    for doc in synthetic.make_corpus(60, seed=0):
        assert "\n" not in doc and doc.endswith(".")
        sentences = split_sentences(doc)
        assert 6 <= len(sentences) <= 8
        assert all(s[0].isupper() or s[0].isdigit() for s in sentences)
        # a name from the first sentence comes back later: NSP and MLM have something to learn
        names = {w.strip(".,") for w in sentences[0].split()[:3] if w[0].isupper()}
        assert any(" ".join(sentences[1:]).count(n) >= 1 for n in names), doc


def test_write_corpus_round_trips_through_load_documents(tmp_path):
    path = synthetic.write_corpus(tmp_path / "sub" / "corpus.txt", 30, seed=4)
    assert load_documents(str(path)) == synthetic.make_corpus(30, seed=4)


def test_squad_set_is_valid_squad_v1_with_answers_in_their_contexts(tmp_path):
    squad = synthetic.make_squad(n_articles=40, seed=3)
    assert squad["version"] == "1.1" and len(squad["data"]) == 40
    ids = []
    for article in squad["data"]:
        assert article["title"] and len(article["paragraphs"]) == 1
        para = article["paragraphs"][0]
        assert len(para["qas"]) == 3
        for qa in para["qas"]:
            ids.append(qa["id"])
            assert qa["question"].endswith("?")
            (answer,) = qa["answers"]
            start = answer["answer_start"]
            assert para["context"][start:start + len(answer["text"])] == answer["text"]
            assert answer["text"] and not re.search(re.escape(answer["text"]), qa["question"])
    assert len(ids) == len(set(ids)) == 120
    assert synthetic.make_squad(40, seed=3) == squad and synthetic.make_squad(40, seed=4) != squad
    path = synthetic.write_squad(tmp_path / "squad.json", n_articles=5, seed=3)
    assert json.loads(path.read_text()) == synthetic.make_squad(5, seed=3)
