"""The "recipe on any model" snippet that the README and docs/concepts.md show first runs.

Both pages carry the same snippet (after a ``<!-- recipe -->`` marker). It is executed as
written except for its sizes, which are shrunk so the test takes seconds (the full-size run
is ``examples/05_any_model.py``, whose numbers the docs quote).
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "docs" / "concepts.md"]
SMALLER = {
    "train_toy_model(lang, seed=0)": "train_toy_model(lang, seed=0, steps=60)",
    "lang.sample(1000, 32, seed=1)": "lang.sample(120, 32, seed=1)",
    "lang.sample(300, 32, seed=2)": "lang.sample(60, 32, seed=2)",
    "steps=1500": "steps=150",
    "run.bootstrap(200)": "run.bootstrap(20)",
}


def _snippet(page: Path) -> str:
    text = page.read_text(encoding="utf-8")
    match = re.search(r"<!-- recipe -->\n```python\n(.*?)```", text, re.S)
    assert match, f"{page.name} has no recipe snippet after <!-- recipe -->"
    return match.group(1)


def test_the_recipe_snippet_is_the_same_everywhere_and_runs() -> None:
    snippets = [_snippet(page) for page in PAGES]
    assert snippets[0] == snippets[1], "README.md and docs/concepts.md show different recipes"
    code = snippets[0]
    assert len([line for line in code.splitlines() if line.strip()]) <= 18
    for full, small in SMALLER.items():
        assert full in code, f"the recipe no longer contains {full!r}: update SMALLER"
        code = code.replace(full, small)
    namespace: dict[str, object] = {}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "recipe", "exec"), namespace)
    run, sweep = namespace["run"], namespace["sweep"]
    summary = run.summary()
    assert set(summary["features"]) == {"SAE", "neurons", "random", "probes"}
    assert set(summary["group"]) == {"topic", "kind", "all"}
    table = sweep.summary(at=(-8, 0, 8))
    assert isinstance(table, pd.DataFrame) and {"share@-8", "share@+8"} <= set(table.columns)
    assert "topic=food" in out.getvalue()
