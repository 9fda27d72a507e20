"""Question sets and corpora for Search-QA: Search-R1's files and this project's offline set.

Question files (JSONL, JSON list or parquet) are read row by row into ``QAExample``. Accepted
columns, so that Search-R1's processed parquet files and FlashRAG's raw JSONL both load unchanged:

* ``question``; or, when absent, the last user message of ``prompt`` after its final
  ``"Question:"`` (Search-R1's processed rows carry the question inside the prompt).
* ``golden_answers`` (list or single string); or ``reward_model.ground_truth.target``.
* ``data_source``; else the ``data_source`` argument; else the name of the file's folder
  (FlashRAG lays its sets out as ``nq/test.jsonl``).
* ``id`` (optional), ``supporting_ids`` (optional; our offline set names its supporting passages).

Corpus files are JSONL with one ``{"id", "contents"}`` per line (Search-R1's ``wiki-18.jsonl``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdar.envs.search.retrievers import Document


@dataclass(frozen=True)
class QAExample:
    """One question.

    Attributes:
        id: stable identifier within its file.
        question: the question text shown to the agent.
        golden_answers: every accepted answer (exact match against any of them counts).
        data_source: the set it comes from (``nq``, ``hotpotqa``, ..., or ours: ``wiki_lookup``,
            ``wiki_attribute``, ``wiki_two_hop``, ``wiki_comparison``, ``fanoutqa``).
        supporting_ids: corpus ids of the passages that contain the answer (offline set only).
    """

    id: str
    question: str
    golden_answers: tuple[str, ...]
    data_source: str
    supporting_ids: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "question": self.question,
            "golden_answers": list(self.golden_answers),
            "data_source": self.data_source,
            "supporting_ids": list(self.supporting_ids),
        }


def _read_rows(path: Path) -> Iterator[dict[str, Any]]:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ImportError(
                f"reading {path} needs pyarrow: pip install pyarrow (or convert it to JSONL)"
            ) from None
        yield from pq.read_table(path).to_pylist()
    elif suffix == ".jsonl":
        with path.open(encoding="utf-8") as f:
            for n, line in enumerate(f, start=1):
                if line.strip():
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError as err:
                        raise ValueError(f"{path}:{n}: not a JSON line ({err})") from None
    elif suffix == ".json":
        rows = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(rows, list):
            raise ValueError(f"{path}: expected a JSON list of question objects")
        yield from rows
    else:
        raise ValueError(
            f"{path}: unsupported question file type {suffix!r}; use .jsonl, .json or .parquet"
        )


def _question_from_prompt(prompt: Any) -> str | None:
    if isinstance(prompt, list) and prompt and isinstance(prompt[-1], dict):
        content = str(prompt[-1].get("content", ""))
        if "Question:" in content:
            return content.rsplit("Question:", 1)[1].strip()
    return None


def _golden_from_reward_model(reward_model: Any) -> Any:
    if isinstance(reward_model, dict):
        truth = reward_model.get("ground_truth")
        if isinstance(truth, dict):
            return truth.get("target")
    return None


def load_qa(
    path: str | Path, data_source: str | None = None, limit: int | None = None
) -> list[QAExample]:
    """Read a question file (see the module docstring for the accepted columns).

    Args:
        path: ``.jsonl``, ``.json`` or ``.parquet``.
        data_source: label for rows without a ``data_source`` column (default: the folder name).
        limit: keep only the first ``limit`` rows.
    Raises:
        FileNotFoundError; ValueError naming the file and row when a row lacks a question or
        answers.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"question file {path} does not exist")
    default_source = data_source or path.parent.name or path.stem
    out: list[QAExample] = []
    for n, row in enumerate(_read_rows(path)):
        if limit is not None and n >= limit:
            break
        question = row.get("question") or _question_from_prompt(row.get("prompt"))
        if not question:
            raise ValueError(f"{path} row {n}: no 'question' (nor a prompt with 'Question:')")
        golden = row.get("golden_answers")
        if golden is None:
            golden = _golden_from_reward_model(row.get("reward_model"))
        if isinstance(golden, str):
            golden = [golden]
        golden = [str(g) for g in (golden if golden is not None else [])]
        if not golden:
            raise ValueError(
                f"{path} row {n}: no 'golden_answers' (nor reward_model.ground_truth.target)"
            )
        source = row.get("data_source") or default_source
        supporting = tuple(str(s) for s in (row.get("supporting_ids") or ()))
        out.append(
            QAExample(
                str(row.get("id", n)), str(question).strip(), tuple(golden), str(source), supporting
            )
        )
    if not out:
        raise ValueError(f"{path} holds no questions")
    return out


def write_qa(path: str | Path, examples: list[QAExample]) -> None:
    """Write questions as JSONL in the layout ``load_qa`` reads."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for ex in examples:
            f.write(json.dumps(ex.to_json(), ensure_ascii=False) + "\n")


def load_corpus(path: str | Path, limit: int | None = None) -> list[Document]:
    """Read a Search-R1 corpus JSONL (one ``{"id", "contents"}`` per line).

    ``contents`` must be ``'"Title"\\ntext'``; a row with a ``title`` and ``text`` instead is
    converted to that form.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"corpus file {path} does not exist")
    docs: list[Document] = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if limit is not None and len(docs) >= limit:
                break
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{n}: not a JSON line ({err})") from None
            contents = row.get("contents")
            if contents is None and "text" in row:
                contents = f'"{row.get("title", "")}"\n{row["text"]}'
            if not isinstance(contents, str):
                raise ValueError(
                    f"{path}:{n}: row has no 'contents' string (Search-R1 corpus format)"
                )
            docs.append(Document(str(row.get("id", n - 1)), contents))
    if not docs:
        raise ValueError(f"corpus file {path} holds no passages")
    return docs


def write_corpus(path: str | Path, documents: list[Document]) -> None:
    """Write passages as Search-R1 corpus JSONL."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for doc in documents:
            f.write(json.dumps(doc.to_json(), ensure_ascii=False) + "\n")


__all__ = ["QAExample", "load_corpus", "load_qa", "write_corpus", "write_qa"]
