"""The tutorial (docs/lesson.md, docs/lesson.zh-TW.md) against the script that makes its numbers.

* ``examples/lesson.py --fast`` runs end to end and writes every figure and results file;
* the tables in both docs are the tables of the full run saved in docs/figures/results.json,
  number for number (within a tolerance), and every decimal number in their prose is one
  of the run's numbers or a cited reference; so docs generated from a run cannot silently rot.

After a change that moves the numbers: ``python examples/lesson.py`` (about two minutes),
then copy the tables of docs/figures/results.md into both docs.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "examples" / "lesson.py"
FIGURES = REPO / "docs" / "figures"
DOCS = [REPO / "docs" / "lesson.md", REPO / "docs" / "lesson.zh-TW.md"]
EXPECTED_FIGURES = {
    "losses_dot.png",
    "losses_dot_bias.png",
    "losses_dot_bias_wd.png",
    "overfitting.png",
    "parabolas.png",
    "wd_norms.png",
    "one_cycle_vs_torch.png",
    "losses_params.png",
    "losses_collab_learner.png",
    "bias.png",
    "item_pca.png",
    "similar_items.png",
}
NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?")


def load_script():
    spec = importlib.util.spec_from_file_location("lesson_example", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def lesson():
    return load_script()


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name} is not a PNG"
    return struct.unpack(">II", head[16:24])


def parse_table(lines: list[str]) -> list[list[str]]:
    """Rows of cells of a Markdown table, the separator row dropped."""
    rows = []
    for line in lines:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if all(re.fullmatch(r":?-{3,}:?", c) for c in cells):
            continue
        rows.append(cells)
    return rows


def tables_after_markers(text: str) -> dict[str, list[list[str]]]:
    """``<!-- table: NAME -->`` followed by a Markdown table, for every marker in ``text``."""
    found = {}
    lines = text.splitlines()
    for k, line in enumerate(lines):
        m = re.fullmatch(r"\s*<!-- table: (\w+) -->\s*", line)
        if m:
            body = []
            for nxt in lines[k + 1 :]:
                if not nxt.strip().startswith("|"):
                    break
                body.append(nxt)
            found[m.group(1)] = parse_table(body)
    return found


def as_number(cell: str) -> float | None:
    return float(cell) if NUMBER.fullmatch(cell.strip()) else None


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=2e-3, abs_tol=1e-4 if abs(b) >= 1e-3 else 0.0)


# --- the script -------------------------------------------------------------------------------------
def test_fast_run_writes_every_figure_and_result(tmp_path, lesson):
    out = tmp_path / "figures"
    env = {**os.environ, "MPLBACKEND": "Agg"}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--fast", "--out", str(out)],
        check=False,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "lesson run on" in proc.stdout

    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert results["fast"] is True
    assert set(results["figures"]) == EXPECTED_FIGURES
    for name in EXPECTED_FIGURES:
        path = out / name
        assert path.is_file() and path.stat().st_size > 1000, name
        assert png_size(path) == (800, 500), name
    for key in ("dot", "dot_bias", "dot_bias_wd", "params", "collab_learner"):
        assert len(results["models"][key]["epochs"]) == 1
        assert math.isfinite(results["models"][key]["valid_mse"])
    assert math.isfinite(results["models"]["default"]["valid_mse"])
    assert [r["wd"] for r in results["wd_sweep"]] == list(lesson.WD_SWEEP)
    assert len(results["similar"]["rows"]) == 10
    assert set(results["ranking"]["rows"]) == {"popular", "rating", "ease"}
    assert len(results["ranking"]["example"]["ease"]) == 5
    # the run's lr schedule is the fastai-default OneCycleLR the figure draws
    assert results["schedule"]["recorded_vs_fastai_max_rel_diff"] < 1e-6

    markdown = (out / "results.md").read_text(encoding="utf-8")
    assert set(tables_after_markers(markdown)) == set(lesson.tables(results))


def test_without_ml_100k_it_uses_the_bundled_sample(tmp_path, monkeypatch, lesson):
    monkeypatch.delenv("COLLABKIT_DATA_DIR", raising=False)
    name, ratings = lesson.load_ratings(tmp_path, "auto")
    assert name == "ml-latest-small"
    assert {"title", "rating"} <= set(ratings.columns)
    assert lesson.WELL_KNOWN[name] in set(ratings["title"])


# --- the docs against the full run --------------------------------------------------------------------
@pytest.fixture(scope="module")
def full_results():
    path = FIGURES / "results.json"
    assert path.is_file(), "docs/figures/results.json is missing: run `python examples/lesson.py`"
    results = json.loads(path.read_text(encoding="utf-8"))
    assert results["fast"] is False, "docs/figures holds a --fast run; the docs quote the full run"
    return results


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_doc_tables_are_the_full_run(doc, lesson, full_results):
    text = doc.read_text(encoding="utf-8")
    in_doc = tables_after_markers(text)
    expected = {name: parse_table(table.splitlines()) for name, table in lesson.tables(full_results).items()}
    missing = set(expected) - set(in_doc)
    assert not missing, f"{doc.name} lacks the tables {sorted(missing)}"
    english = doc.name == "lesson.md"
    for name, want in expected.items():
        got = in_doc[name]
        assert len(got) == len(want), f"{doc.name}, table {name}: {len(got)} rows, the run has {len(want)}"
        for r, (got_row, want_row) in enumerate(zip(got, want)):
            assert len(got_row) == len(want_row), f"{doc.name}, table {name}, row {r}: wrong number of columns"
            if r == 0 and not english:
                continue  # the header may be translated
            for g, w in zip(got_row, want_row):
                wn = as_number(w)
                if wn is not None:
                    gn = as_number(g)
                    assert gn is not None and close(gn, wn), f"{doc.name}, table {name}, row {r}: {g!r} != {w!r}"
                elif english:
                    assert g == w, f"{doc.name}, table {name}, row {r}: {g!r} != {w!r}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_doc_prose_numbers_come_from_the_run(doc, lesson, full_results):
    """Every number with three or more decimals outside tables and code is one the run (or a cited source) gave."""
    known = [float(n) for t in lesson.tables(full_results).values() for n in NUMBER.findall(t)]
    known += list(lesson.REFERENCE_U1.values())
    prose = []
    in_code = False
    for line in doc.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
            continue
        if not in_code and not line.lstrip().startswith("|"):
            prose.append(re.sub(r"`[^`]*`", "", line))
    stray = []
    for number in re.findall(r"(?<![\w.])\d+\.\d{3,}(?![\w.])", "\n".join(prose)):
        value = float(number)
        if not any(close(value, k) for k in known):
            stray.append(number)
    assert not stray, f"{doc.name} quotes numbers that are not in the run's results: {stray}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_doc_shows_every_figure(doc, full_results):
    text = doc.read_text(encoding="utf-8")
    assert set(full_results["figures"]) == EXPECTED_FIGURES
    for name in full_results["figures"]:
        assert f"(figures/{name})" in text, f"{doc.name} does not show figures/{name}"
        path = FIGURES / name
        assert path.is_file() and png_size(path) == (800, 500), name
    for ref in re.findall(r"\(figures/([^)]+)\)", text):
        assert (FIGURES / ref).is_file(), f"{doc.name} links figures/{ref}, which the run did not write"
