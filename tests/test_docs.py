"""The README and docs/ show what the project's commands print and point at files that exist."""

import re
from pathlib import Path

from training.experiments import evidence, results

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


table_lines = results.table_lines


def test_the_results_page_holds_exactly_what_the_results_command_prints():
    """Each marked block of docs/results.md holds the tables its command prints (the current
    benchmark's records, and the first benchmark's, kept in results/benchmark-v1)."""
    page = (REPO / "docs" / "results.md").read_text()
    blocks = results.PAGE_BLOCK.findall(page)
    assert [name for name, _, _ in blocks] == ["results", "results-v1"]
    for _, folder, block in blocks:
        assert table_lines(block) == table_lines(results.report(REPO / folder if folder else results.RESULTS))


def test_the_page_command_rewrites_the_tables_and_keeps_the_prose(tmp_path):
    page = tmp_path / "results.md"
    original = (REPO / "docs" / "results.md").read_text()
    stale = original.replace("| bench-student | emktd+kd", "| bench-student | stale", 1)
    page.write_text(stale)
    assert results.update_page(page) == 2 and page.read_text() == original


def test_the_readme_headline_rows_are_rows_of_the_results_table():
    printed = set(table_lines(results.table()))
    rows = table_lines((REPO / "README.md").read_text().split("## The student against the teacher")[1]
                       .split("\n## ")[0])
    assert len(rows) == 4 and all(row in printed for row in rows)


def test_relative_links_and_named_files_exist():
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.name}: {target}"
        for named in re.findall(r"`((?:training|emktd|tests)/[\w/]+\.py)", page.read_text()):
            assert (REPO / named).is_file(), f"{page.name}: {named}"


def test_the_readme_grids_are_what_the_evidence_command_prints():
    block = evidence.GRIDS_BLOCK.search((REPO / "README.md").read_text())
    assert block is not None, "README.md has no grids block"
    assert block.group(2).strip() == evidence.grid_table(results.RESULTS).strip(), (
        "README.md's grids differ from the records; run python -m training.experiments.evidence --grids README.md")
