"""The README and docs/ show what the project's commands print and point at files that exist."""

import re
from pathlib import Path

import pytest

from training.experiments import evidence, results

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


table_lines = results.table_lines


def test_the_pages_hold_exactly_what_the_results_command_prints():
    """Each marked block of docs/results.md and README.md holds the tables its command prints:
    docs/results.md the tables of the current build's records, and every table of the second and the
    first builds' (results/benchmark-v2, results/benchmark-v1); README.md where EM-KTD stands and the
    the bundled pair (the current build's records), and where EM-KTD stands and the compute spent (of
    the second build's records)."""
    found = {}
    for page in results.PAGES:
        for match in results.PAGE_BLOCK.finditer(page.read_text()):
            found.setdefault(page.name, []).append(match["name"])
            assert table_lines(match["body"]) == table_lines(results.block_report(match, REPO)), (
                f"{page.name}: the block {match['name']} differs from the records; "
                "run python -m training.experiments.results page")
    assert found == {"results.md": ["results", "results-v2", "results-v1"],
                     "README.md": ["results-pair", "results-standing", "results-compute"]}


def test_the_page_command_rewrites_the_tables_and_keeps_the_prose(tmp_path):
    for name, row, blocks in (("docs/results.md", "| bench-student | emktd+kd", 3), ("README.md", "| AMD EPYC", 3)):
        page = tmp_path / Path(name).name
        original = (REPO / name).read_text()
        stale = original.replace(row, "| stale", 1)
        assert stale != original
        page.write_text(stale)
        assert results.update_page(page) == blocks and page.read_text() == original


def test_a_block_names_only_its_tables():
    """``--only`` picks tables by name, in the order of the full report, and refuses a name it lacks."""
    v2 = results.RESULTS / "benchmark-v2"
    assert results.report(v2, only=["compute", "standing"]) == (results.standing_table(v2) + "\n\n"
                                                                + results.compute_summary(v2))
    assert results.report(v2).startswith(results.table(v2) + "\n\n")
    with pytest.raises(ValueError, match="no table named standings"):
        results.report(v2, only=["standings"])


def test_the_readme_headline_is_the_bundled_pair_block():
    """The bundled pair's section shows the pair's block (checked against the records above): the
    comparison of teacher and both protocols' students, top-1 by mode and the targets."""
    section = (REPO / "README.md").read_text().split("## The student against the teacher")[1].split("\n## ")[0]
    blocks = [m["name"] for m in results.PAGE_BLOCK.finditer(section)]
    assert blocks == ["results-pair"]
    rows = table_lines(section)
    assert any(row.startswith("| teacher (bench-teacher-in)") for row in rows)
    assert sum(row.startswith("| bench-student") for row in rows) >= 2  # both protocols


def test_relative_links_and_named_files_exist():
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.name}: {target}"
        for named in re.findall(r"`((?:training|emktd|tests)/[\w/]+\.py)", page.read_text()):
            assert (REPO / named).is_file(), f"{page.name}: {named}"


def test_the_readme_grids_are_what_the_evidence_command_prints():
    block = evidence.GRIDS_BLOCK.search((REPO / "README.md").read_text())
    assert block is not None, "README.md has no grids block"
    assert block["body"].strip() == evidence.grid_table(evidence.grids_folder(block, results.RESULTS)).strip(), (
        "README.md's grids differ from the records; run python -m training.experiments.evidence --grids README.md")


def test_the_readme_recipe_choice_is_what_the_recipe_command_prints():
    from training.experiments import teacher_recipe

    assert teacher_recipe.choice_table() in (REPO / "README.md").read_text(), (
        "README.md's recipe choice differs from the records; python -m training.experiments.teacher_recipe --choose")
