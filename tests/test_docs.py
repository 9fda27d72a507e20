"""Every reference to a section of a Markdown page resolves to a heading that exists.

Code, configs and docs cite the docs by heading, in one of these forms:

* ``docs/algorithm.md, "Teacher prompt"`` (or ``"Rollout" and "Teacher prompt"``): headings by
  name; a heading's leading number, backticks and bold marks are ignored, and the name may stop
  before a parenthesis or comma (``"PPO surrogate"`` names ``2.1 PPO surrogate (`ppo_clip_loss`)``);
* ``section "Advantages"``: a heading of the same Markdown page, or, in a source file that says
  ``Headings cited are those of ``docs/algorithm.md````, a heading of that page;
* ``[text](algorithm.md#8-teacher-prompt)``: a GitHub anchor.

References by number (``docs/algorithm.md section 8``) are refused even where the number exists:
numbers shift when a section is added, which is how 38 references once came to point at sections
the page did not have. A section number with no page at all (``(section 8)``) is refused too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCANNED = [
    *sorted((ROOT / "src").rglob("*.py")),
    *sorted((ROOT / "configs").rglob("*.yaml")),
    *sorted((ROOT / "docs").rglob("*.md")),
    ROOT / "README.md",
    *sorted((ROOT / "benchmarks").glob("*.py")),
    *sorted((ROOT / "benchmarks").rglob("*.md")),
]

PAGE = r"(?P<page>[\w./-]*\w\.md)"
NUMBERED = re.compile(
    PAGE + r"`?,?\s+sections?\s+(?P<nums>\d+(?:\.\d+)*(?:\s*(?:-|,|and)\s*\d+(?:\.\d+)*)*)"
)
QUOTED = r"[\"“](?P<name>[^\"”\n]{2,80})[\"”]"
NAMED = re.compile(
    PAGE + r"`?,\s+(?:section\s+)?(?P<names>" + QUOTED.replace("?P<name>", "")
    + r"(?:\s*(?:,|;|and)\s*" + QUOTED.replace("?P<name>", "") + r")*)"
)
SAME_PAGE = re.compile(r"(?<![\w.])section\s+" + QUOTED)
DECLARED = re.compile(r"[Hh]eadings\s+cited\s+are\s+those\s+of\s+``?(?P<page>[\w./-]+\.md)")
LINK = re.compile(r"\]\((?P<target>[^)#\s]+)(?:#[^)\s]*)?\)")
ANCHOR = re.compile(r"\]\((?P<page>[^)#\s]*)#(?P<anchor>[^)\s]+)\)")
BARE_NUMBER = re.compile(r"\b[Ss]ections?\s+\d")
FENCE = re.compile(r"^\s*(```|~~~)")


@dataclass(frozen=True)
class Heading:
    text: str
    number: str | None
    name: str
    slug: str


def headings(page: Path | str) -> list[Heading]:
    """The Markdown headings of ``page`` (a path, or the text itself; fenced code skipped), with
    GitHub's anchor slugs."""
    text = page.read_text(encoding="utf-8") if isinstance(page, Path) else page
    found, seen, fenced = [], {}, False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        match = None if fenced else re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        text = match.group(1)
        plain = re.sub(r"[`*]", "", text).strip()
        numbered = re.match(r"^(\d+(?:\.\d+)*)\.?\s+(.*)$", plain)
        number, name = (numbered.group(1), numbered.group(2)) if numbered else (None, plain)
        slug = re.sub(r"[^\w\- ]", "", plain.lower()).replace(" ", "-")
        if slug in seen:  # GitHub numbers repeated anchors: x, x-1, x-2, ...
            seen[slug] += 1
            slug = f"{slug}-{seen[slug]}"
        else:
            seen[slug] = 0
        found.append(Heading(text, number, name, slug))
    return found


def resolve_page(page: str, source: Path) -> Path | None:
    """The page a reference in ``source`` names: relative to the source's folder, the repository
    root, or ``docs/``."""
    for base in (source.parent, ROOT, ROOT / "docs"):
        candidate = (base / page).resolve()
        if candidate.is_file():
            return candidate
    return None


def names_heading(name: str, heading: Heading) -> bool:
    wanted, have = name.strip().lower(), heading.name.lower()
    return have == wanted or have.startswith((wanted + " ", wanted + ","))


def expand(nums: str) -> list[str]:
    """``"7-9"`` -> 7, 8, 9; ``"5, 9"`` / ``"5 and 9"`` -> 5, 9; ``"2.3"`` -> 2.3."""
    out = []
    for part in re.split(r"\s*(?:,|and)\s*", nums):
        if "-" in part:
            low, high = (int(x) for x in part.split("-"))
            out += [str(n) for n in range(low, high + 1)]
        else:
            out.append(part.strip())
    return out


def problems_in(source: Path, text: str | None = None) -> list[str]:
    """Every reference in ``source`` that does not resolve, as ``path:line: what``."""
    text = source.read_text(encoding="utf-8") if text is None else text
    where = source.relative_to(ROOT) if source.is_relative_to(ROOT) else source
    out, numbered_spans = [], []

    def report(pos: int, what: str) -> None:
        out.append(f"{where}:{text.count(chr(10), 0, pos) + 1}: {what}")

    for m in NUMBERED.finditer(text):
        numbered_spans.append(m.span())
        page = resolve_page(m["page"], source)
        titles = {h.number: h.name for h in headings(page)} if page else {}
        named = ", ".join(f'"{titles[n]}"' if n in titles else f"(no section {n})"
                          for n in expand(m["nums"]))
        report(m.start(), f"{m['page']} section {m['nums']}: cite by heading name: "
                          f"{m['page']}, {named}")
    for m in NAMED.finditer(text):
        page = resolve_page(m["page"], source)
        if page is None:
            report(m.start(), f"{m['page']} does not exist")
            continue
        for name in re.findall(QUOTED, m["names"]):
            if not any(names_heading(name, h) for h in headings(page)):
                report(m.start(), f"{m['page']} has no heading {name!r}")
    declared = DECLARED.search(text)
    default = text if source.suffix == ".md" else (
        resolve_page(declared["page"], source) if declared else None)
    for m in SAME_PAGE.finditer(text):
        if default is None:
            report(m.start(), f"section {m['name']!r} without its page; say 'Headings cited are "
                              "those of ``docs/<page>.md``' once in the file, or name the page")
        elif not any(names_heading(m["name"], h) for h in headings(default)):
            page = "this page" if default is text else declared["page"]
            report(m.start(), f"{page} has no heading {m['name']!r}")
    if source.suffix == ".md":
        for m in LINK.finditer(text):  # relative links (the README's code map) must exist
            target = m["target"]
            if not re.match(r"^[a-z]+:", target) and not (source.parent / target).exists():
                report(m.start(), f"link target {target} does not exist")
        for m in ANCHOR.finditer(text):
            if m["page"] and not m["page"].endswith(".md"):
                continue  # anchors into non-Markdown files are not headings
            page = resolve_page(m["page"], source) if m["page"] else text
            if page is None:
                report(m.start(), f"{m['page']} does not exist")
            elif m["anchor"] not in {h.slug for h in headings(page)}:
                report(m.start(), f"{m['page'] or 'this page'} has no anchor #{m['anchor']}")
    for m in BARE_NUMBER.finditer(text):
        if not any(start <= m.start() < end for start, end in numbered_spans):
            report(m.start(), "a section number without the page it belongs to; "
                              "write 'docs/<page>.md, \"Heading\"'")
    return out


def test_every_section_reference_resolves():
    problems = [p for source in SCANNED for p in problems_in(source)]
    assert not problems, "unresolved doc references:\n" + "\n".join(problems)


def test_the_scan_finds_references_in_code_configs_and_docs():
    """The check above is only as good as its patterns: they must see the references in use."""
    counts = {"src": 0, "configs": 0, "docs": 0}
    for source in SCANNED:
        text = source.read_text(encoding="utf-8")
        hits = len(NAMED.findall(text)) + len(SAME_PAGE.findall(text))
        top = source.relative_to(ROOT).parts[0]
        if top in counts:
            counts[top] += hits
    assert counts["src"] >= 30 and counts["configs"] >= 3 and counts["docs"] >= 3, counts


@pytest.mark.parametrize(
    ("snippet", "problem"),
    [
        ('"""Teacher (docs/algorithm.md, "Teacher prompt")."""', None),
        ('"""PPO (docs/algorithm.md, "PPO surrogate")."""', None),
        ('"""Both (docs/algorithm.md, "Rollout" and "Teacher prompt")."""', None),
        ('"""Teacher (docs/algorithm.md, "Teacher prompts")."""', "has no heading 'Teacher prompts'"),
        ('"""Both (docs/algorithm.md, "Rollout" and "Teachers")."""', "has no heading 'Teachers'"),
        ('"""Rollout (docs/algorithm.md section 7)."""', 'cite by heading name: docs/algorithm.md, "Rollout"'),
        ('"""Rollout (docs/algorithm.md sections 11-12)."""', '"Published results", (no section 12)'),
        ('"""Clip (section 4)."""', "without the page"),
        ('"""See docs/nothing.md, "Intro"."""', "docs/nothing.md does not exist"),
        ('"""Clip (section "PPO surrogate")."""', "without its page"),
        ('"""Headings cited are those of ``docs/algorithm.md``.\n\nClip (section "PPO surrogate")."""',
         None),
        ('"""Headings cited are those of ``docs/algorithm.md``.\n\nClip (section\n    "PPO clip")."""',
         "docs/algorithm.md has no heading 'PPO clip'"),
    ],
)
def test_resolver_accepts_good_and_names_bad_references(snippet, problem):
    found = problems_in(ROOT / "src" / "sdar" / "example.py", snippet)
    if problem is None:
        assert found == []
    else:
        assert len(found) == 1 and problem in found[0], found


def test_markdown_anchors_and_same_page_names_are_checked():
    page = ROOT / "docs" / "example.md"
    good = ('# Notation\nSee [the teacher](algorithm.md#8-teacher-prompt), [above](#notation) '
            'and section "Notation".\n')
    assert problems_in(page, good) == []
    bad = 'See [the teacher](algorithm.md#8-the-teacher), [up](#nowhere), section "Notes", [x](no.md).'
    assert problems_in(page, bad) == [
        "docs/example.md:1: this page has no heading 'Notes'",
        "docs/example.md:1: link target no.md does not exist",
        "docs/example.md:1: algorithm.md has no anchor #8-the-teacher",
        "docs/example.md:1: this page has no anchor #nowhere",
    ]


def test_github_slugs_of_numbered_headings(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("# Title\n## 2.3 The SDAR term (`sdar_loss`), sampled **(code)**\n```\n# not\n```\n## Title\n")
    assert [h.slug for h in headings(page)] == [
        "title", "23-the-sdar-term-sdar_loss-sampled-code", "title-1",
    ]
    assert headings(page)[1].number == "2.3" and names_heading("The SDAR term", headings(page)[1])
