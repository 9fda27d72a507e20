"""Skill libraries and their routing (docs/algorithm.md, "Skills and routing").

Skills are Markdown files shipped in this package under ``skills/<env>/``: ``general.md`` plus one
file per routing key (``heat.md``, ``apparel.md``, ``two_hop.md``, ...). An environment tells which
keys a task routes to (``TaskInfo.skill_keys``); this module turns them into the text the teacher
sees. Routing is checked, never silently wrong: a key without a file raises, and every lookup
reports which files it used so the trainer can log them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

from sdar.envs.base import TaskInfo

SKILLS_ROOT = Path(__file__).resolve().parent
GENERAL = "general"


class SkillRoutingError(LookupError):
    """A task routed to a skill file that does not exist."""


@dataclass(frozen=True)
class SkillSelection:
    """The skills chosen for one task: the files used (general first) and their joined text."""

    files: tuple[str, ...]
    text: str


class SkillLibrary:
    """The skill files of one environment.

    Args:
        env_name: environment registry name; files are read from ``<root>/<env_name>/``.
        root: folder holding one sub-folder per environment (default: the files shipped with sdar).
            Point it at your own folder to use your own skills; the same names are expected.
    """

    def __init__(self, env_name: str, root: str | Path | None = None):
        self.env_name = env_name
        self.folder = Path(root or SKILLS_ROOT) / env_name
        if not (self.folder / f"{GENERAL}.md").is_file():
            raise FileNotFoundError(
                f"no skill library for environment {env_name!r}: expected {self.folder / (GENERAL + '.md')}"
            )

    def keys(self) -> list[str]:
        """All routing keys that have a file (the general file excluded)."""
        return sorted(p.stem for p in self.folder.glob("*.md") if p.stem != GENERAL)

    def select(self, task: TaskInfo) -> SkillSelection:
        """The general skills plus one file per routing key of ``task``, in key order."""
        return self.select_keys(task.skill_keys)

    def select_keys(self, keys: tuple[str, ...] | list[str], repeats: bool = False) -> SkillSelection:
        """The general skills plus one file per key, in key order; a repeated key is read once,
        or once per occurrence with ``repeats`` (the released code's keyword routing does so)."""
        names = [GENERAL] + [k for k in (keys if repeats else dict.fromkeys(keys)) if k != GENERAL]
        missing = [k for k in names if not (self.folder / f"{k}.md").is_file()]
        if missing:
            raise SkillRoutingError(
                f"{self.env_name}: no skill file for routing key(s) {missing} in {self.folder}; "
                f"known keys: {self.keys()}"
            )
        texts = [_read(self.folder / f"{k}.md") for k in names]
        return SkillSelection(files=tuple(f"{self.env_name}/{k}.md" for k in names), text="\n\n".join(texts))


@cache
def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8").strip()


__all__ = ["SKILLS_ROOT", "SkillLibrary", "SkillRoutingError", "SkillSelection"]
