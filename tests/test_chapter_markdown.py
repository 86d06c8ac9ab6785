"""The chapters' text renders as written: one title per chapter, real paragraphs, lists and quotes.

nbval compares code outputs only; this parses every markdown cell the way JupyterLab and GitHub
do (CommonMark) and fails when a chapter would render as a wall of top-level headings.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

CHAPTERS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def rendered_tokens(chapter: Path):
    parser = MarkdownIt("commonmark")
    cells = json.loads(chapter.read_text())["cells"]
    return [
        token for cell in cells if cell["cell_type"] == "markdown" for token in parser.parse("".join(cell["source"]))
    ]


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda path: path.stem)
def test_one_title_and_real_prose(chapter):
    tokens = rendered_tokens(chapter)
    titles = [
        tokens[i + 1].content for i, token in enumerate(tokens) if token.type == "heading_open" and token.tag == "h1"
    ]
    assert len(titles) == 1, (
        f"{chapter.name}: {len(titles)} top-level headings (only the title may be one): {titles[:5]}"
    )
    assert titles[0].startswith("Chapter") or chapter.stem.startswith("00"), titles
    kinds = {token.type for token in tokens}
    assert "paragraph_open" in kinds and kinds & {"bullet_list_open", "ordered_list_open"}, kinds


def test_every_chapter_is_checked():
    assert len(CHAPTERS) == 6


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda path: path.stem)
def test_saved_widgets_are_pictures(chapter):
    """A saved chapter shows each widget as its PNG snapshot and keeps no widget state (specs, data, model ids)."""
    notebook = json.loads(chapter.read_text())
    assert "widgets" not in notebook["metadata"], f"{chapter.name}: saved widget state (run notebooks/run_chapters.py)"
    for cell in notebook["cells"]:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if "application/vnd.jupyter.widget-view+json" in data:
                assert "image/png" in data, f"{chapter.name}: a widget output without its PNG snapshot"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda path: path.stem)
def test_run_all_goes_through_and_no_solution_is_saved(chapter):
    """No cell is expected to raise (an exercise left blank says so and later cells use the reference),
    every exercise is used by a later cell, and no saved output shows a reference solution's body."""
    import inspect
    import re

    from flowkit.course import solutions

    cells = json.loads(chapter.read_text())["cells"]
    code = ["".join(cell["source"]) for cell in cells if cell["cell_type"] == "code"]
    assert not any("raises-exception" in cell.get("metadata", {}).get("tags", []) for cell in cells), chapter.name
    assert not any(re.search(r"^\s*show_solution\(", source, re.M) for source in code), (
        f"{chapter.name}: a solution is printed by a cell (a markdown hint says how to show it)"
    )
    exercises = re.findall(r'^exercise\("(\w+)"', "\n".join(code), re.M)
    assert exercises, chapter.name
    for name in exercises:
        position = next(i for i, source in enumerate(code) if f'exercise("{name}"' in source)
        assert any(f'use("{name}")' in source for source in code[position + 1 :]), (
            f"{chapter.name}: no later cell uses the student's {name}"
        )
        body = inspect.getsource(getattr(solutions, name)).split('"""')[-1].strip().splitlines()[0].strip()
        for cell in cells:
            for output in cell.get("outputs", []):
                text = "".join(output.get("text", "")) + "".join(output.get("data", {}).get("text/plain", ""))
                assert body not in text, f"{chapter.name}: a saved output shows the solution of {name}"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda path: path.stem)
def test_the_stated_time_is_the_chapters_reading_time(chapter):
    """Each chapter states the time :func:`flowkit.course.chapters.reading_minutes` gives (prose at 150 words
    a minute, 8 minutes an exercise, 2 a prediction): a chapter that grows says so."""
    import re

    from flowkit.course.chapters import reading_minutes

    intro = "".join(json.loads(chapter.read_text())["cells"][0]["source"])
    stated = re.search(r"\*\*Time:\*\* about (\d+) minutes to read and do", intro)
    assert stated, f"{chapter.name}: no '**Time:** about N minutes to read and do' line in the introduction"
    assert abs(int(stated.group(1)) - reading_minutes(chapter)) <= 5, (chapter.name, reading_minutes(chapter))
