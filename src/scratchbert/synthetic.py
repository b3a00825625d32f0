"""A small generated corpus and SQuAD-style QA set, for tests and offline demos.

Everything here is produced by code from a seed; no text is copied from anywhere. The
documents describe invented towns, people and companies with sentences in a fixed order
that share the document's entities, so that:

* next-sentence prediction is learnable (a true next segment continues the same entity and
  the usual order; a random segment comes from another document about something else);
* masked-LM is learnable (templates, consistent names, numbers that agree within a
  document);
* QA is learnable (each question asks for a fact that is stated once in the context).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

_ONSETS = ["b", "br", "c", "d", "dr", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "st", "t", "v", "w", "z"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ea", "ou"]
_CODAS = ["", "", "n", "r", "l", "s", "th", "m", "nd", "rk"]

_REGIONS = ["northern", "southern", "eastern", "western", "central", "coastal", "highland"]
_SIZES = ["small", "large", "quiet", "busy", "historic", "growing"]
_PRODUCTS = ["wool", "cheese", "glass", "timber", "salt", "copper", "wine", "paper", "pottery", "silk"]
_FEATURES = ["old stone bridge", "harbour", "cathedral", "market square", "castle", "botanical garden", "lighthouse"]
_CLIMATES = ["mild", "cold", "dry", "wet", "temperate", "windy"]
_SEASONS = ["warm", "short", "long", "hot", "cool"]
_INDUSTRIES = ["farming", "fishing", "mining", "trade", "tourism", "shipbuilding", "weaving"]
_JOBS = ["painter", "engineer", "poet", "architect", "chemist", "composer", "sailor", "historian"]
_FIELDS = ["bridges", "harbours", "railways", "songs", "maps", "medicines", "clocks", "ships"]
_SECTORS = ["software", "shipping", "textile", "steel", "food", "insurance", "printing"]
_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
           "October", "November", "December"]


def _word(rng: random.Random, syllables: int) -> str:
    return "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(syllables))


def _name(rng: random.Random, syllables: tuple[int, int] = (2, 3)) -> str:
    return _word(rng, rng.randint(*syllables)).capitalize()


@dataclass
class _Fact:
    question: str
    answer: str


def _town(rng: random.Random) -> tuple[list[str], list[_Fact]]:
    name, founder, river, country = _name(rng), f"{_name(rng)} {_name(rng)}", _name(rng), _name(rng)
    year = rng.randint(1100, 1850)
    grown = year + rng.randint(40, 160)
    pop = rng.randint(2, 90) * 1000
    product, feature = rng.choice(_PRODUCTS), rng.choice(_FEATURES)
    industry, climate, season = rng.choice(_INDUSTRIES), rng.choice(_CLIMATES), rng.choice(_SEASONS)
    sents = [
        f"{name} is a {rng.choice(_SIZES)} town in the {rng.choice(_REGIONS)} part of {country}.",
        f"It was founded in {year} by {founder}.",
        f"The town is known for its {product} and for its {feature}.",
        f"By {grown}, the population of {name} had reached {pop:,} people.",
        f"The {river} river runs through the centre of the town.",
        f"Most of the people of {name} work in {industry}.",
        f"{name} has a {climate} climate with {season} summers.",
        f"A festival of {product} is held every {rng.choice(_MONTHS)}.",
    ]
    facts = [
        _Fact(f"When was {name} founded?", str(year)),
        _Fact(f"Who founded {name}?", founder),
        _Fact(f"What is {name} known for?", product),
        _Fact(f"Which river runs through {name}?", river),
        _Fact(f"What do most of the people of {name} work in?", industry),
    ]
    return sents, facts


def _person(rng: random.Random) -> tuple[list[str], list[_Fact]]:
    first, last, town, teacher = _name(rng, (1, 2)), _name(rng), _name(rng), f"{_name(rng)} {_name(rng)}"
    born = rng.randint(1700, 1960)
    job, field = rng.choice(_JOBS), rng.choice(_FIELDS)
    works = rng.randint(3, 60)
    sents = [
        f"{first} {last} was a {job} born in {town} in {born}.",
        f"{last} studied under {teacher} for {rng.randint(2, 9)} years.",
        f"As a young {job}, {last} became famous for work on {field}.",
        f"Over a long career, {last} produced {works} major works.",
        f"In {born + rng.randint(30, 60)}, {last} moved to {_name(rng)} and opened a school.",
        f"{last} died in {born + rng.randint(61, 95)} and was buried in {town}.",
    ]
    facts = [
        _Fact(f"Where was {first} {last} born?", town),
        _Fact(f"When was {first} {last} born?", str(born)),
        _Fact(f"Who did {last} study under?", teacher),
        _Fact(f"What was {last} famous for work on?", field),
        _Fact(f"How many major works did {last} produce?", str(works)),
    ]
    return sents, facts


def _company(rng: random.Random) -> tuple[list[str], list[_Fact]]:
    name, city, ceo = f"{_name(rng)} {rng.choice(['Group', 'Works', 'Limited', 'Company'])}", _name(rng), f"{_name(rng)} {_name(rng)}"
    year = rng.randint(1850, 2015)
    sector = rng.choice(_SECTORS)
    staff = rng.randint(1, 400) * 50
    sents = [
        f"{name} is a {sector} company based in {city}.",
        f"The company was started in {year} with a loan of {rng.randint(2, 90)} thousand crowns.",
        f"Its chief executive is {ceo}, who joined in {year + rng.randint(5, 40)}.",
        f"Today {name} employs {staff:,} people in {rng.randint(2, 30)} countries.",
        f"Its largest office outside {city} is in {_name(rng)}.",
        f"In its last annual report, the company said that demand for {sector} services was rising.",
    ]
    facts = [
        _Fact(f"Where is {name} based?", city),
        _Fact(f"When was {name} started?", str(year)),
        _Fact(f"Who is the chief executive of {name}?", ceo),
        _Fact(f"How many people does {name} employ?", f"{staff:,}"),
    ]
    return sents, facts


_KINDS = (_town, _person, _company)


def _documents(n_documents: int, seed: int) -> list[tuple[list[str], list[_Fact]]]:
    rng = random.Random(seed)
    return [rng.choice(_KINDS)(rng) for _ in range(n_documents)]


def make_corpus(n_documents: int = 400, seed: int = 0) -> list[str]:
    """Return ``n_documents`` documents; each is a few sentences of one paragraph."""
    return [" ".join(sents) for sents, _ in _documents(n_documents, seed)]


def write_corpus(path: str | Path, n_documents: int = 400, seed: int = 0) -> Path:
    """Write the corpus in the classic BERT layout: one document per paragraph, blank lines between."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n\n".join(make_corpus(n_documents, seed)) + "\n", encoding="utf-8")
    return path


def make_squad(n_articles: int = 60, seed: int = 1, questions_per_context: int = 3) -> dict:
    """Return a SQuAD v1.1 dictionary (``{"version", "data": [...]}``) built from generated documents.

    Every ``answer_start`` points at the first occurrence of the answer text in its context,
    which is where the fact is stated.
    """
    rng = random.Random(seed + 7919)
    data = []
    for a, (sents, facts) in enumerate(_documents(n_articles, seed)):
        context = " ".join(sents)
        qas = []
        for q, fact in enumerate(rng.sample(facts, min(questions_per_context, len(facts)))):
            start = context.find(fact.answer)
            assert start >= 0, (fact, context)
            qas.append({
                "id": f"synthetic-{seed}-{a}-{q}",
                "question": fact.question,
                "answers": [{"text": fact.answer, "answer_start": start}],
            })
        data.append({"title": sents[0].split(" ")[0], "paragraphs": [{"context": context, "qas": qas}]})
    return {"version": "1.1", "data": data}


def write_squad(path: str | Path, n_articles: int = 60, seed: int = 1) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(make_squad(n_articles, seed)), encoding="utf-8")
    return path
