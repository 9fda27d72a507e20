"""``bm25s`` is imported without starting JAX (``sdar.envs._bm25``).

JAX cannot open a GPU on the CI machine, so each case runs in a fresh interpreter with a stand-in
``jax`` package on its path whose ``lax.top_k`` writes a marker file: the marker shows whether
``bm25s`` ran JAX at import, which on a GPU machine is what reserves 75% of the card.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest


@pytest.fixture()
def fake_jax(tmp_path: Path) -> dict:
    package = tmp_path / "site" / "jax"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("", encoding="utf-8")
    (package / "lax.py").write_text(
        textwrap.dedent(
            """
            import os
            import pathlib

            def top_k(x, k):
                pathlib.Path(os.environ["JAX_MARKER"]).write_text("top_k", encoding="utf-8")
                return x[:k], list(range(k))
            """
        ),
        encoding="utf-8",
    )
    marker = tmp_path / "jax_ran"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(tmp_path / "site"), *filter(None, [env.get("PYTHONPATH")])]
    )
    env["JAX_MARKER"] = str(marker)
    return {"env": env, "marker": marker}


def run_python(code: str, env: dict) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_plain_bm25s_import_runs_jax(fake_jax):
    """The control: imported directly, bm25s calls JAX's top-k (so the stand-in is reached)."""
    out = run_python("import bm25s; print(bm25s.selection.JAX_IS_AVAILABLE)", fake_jax["env"])
    assert out == "True"
    assert fake_jax["marker"].read_text(encoding="utf-8") == "top_k"


def test_our_import_keeps_jax_out_and_importable(fake_jax):
    out = run_python(
        """
        import sys
        import sdar.envs.webshop.search as search
        print(search.bm25s.selection.JAX_IS_AVAILABLE, "jax" in sys.modules)
        import jax.lax  # still importable afterwards
        print(jax.lax.__name__)
        """,
        fake_jax["env"],
    )
    assert out.splitlines() == ["False False", "jax.lax"]
    assert not fake_jax["marker"].exists()


def test_search_qa_bm25_retriever_ranks_without_jax(fake_jax):
    out = run_python(
        """
        from sdar.envs.search.retrievers import BM25Retriever, Document
        docs = [Document(id="0", contents='"Paris"\\nParis is the capital of France.'),
                Document(id="1", contents='"Rome"\\nRome is the capital of Italy.')]
        hits = BM25Retriever(docs).retrieve(["capital of Italy"], topk=1)
        print(hits[0][0].document.title)
        """,
        fake_jax["env"],
    )
    assert out == "Rome"
    assert not fake_jax["marker"].exists()


def test_a_program_that_imported_jax_keeps_it(fake_jax):
    out = run_python(
        """
        import jax
        from sdar.envs._bm25 import import_bm25s
        print(import_bm25s().selection.JAX_IS_AVAILABLE)
        """,
        fake_jax["env"],
    )
    assert out == "True"
    assert fake_jax["marker"].exists()
