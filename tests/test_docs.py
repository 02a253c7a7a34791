"""The user documentation's own rules: a README read in minutes, and README.md and docs/ written for
readers of the project alone (no words about how or when it was made, no development machine's
paths), every page linked from the README."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").rglob("*.md"))]
HISTORY = re.compile(r"\b(this|the|next|previous|earlier|a) sessions?\b|\b(this|previous|last) round\b|\bissues? #?\d+|"
                     r"(?<![\w/])#\d+\b|\.\./shared|\bthe issue\b|\bagreed\b|/work/|/tmp/pytest", re.IGNORECASE)
# Words that tell the project's history in its prose (code and quoted output aside): what "now" does, what
# it "used to" or "no longer" does, what is not done "yet", figures "before the speed-ups", and "this
# machine" (the reader's machine is not the one a figure was measured on: name it). CHANGELOG.md is the
# one page for history.
HISTORY_WORDS = re.compile(r"\bnow\b|\bno longer\b|\bused to\b|\b(not|never|nothing|none)\b(\W+\w+){0,6}\W+yet\b|"
                           r"\bas before\b|\bthan before\b|\banymore\b|\bhas never\b|\boriginally\b|"
                           r"\b(before|after) (the|this) (speed-?ups?|fix(es)?|changes?|rewrite|refactor)|"
                           r"\bthis (machine|CPU|computer)\b", re.IGNORECASE)


def test_the_readme_is_short_and_links_every_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 220
    for page in PAGES[1:]:
        assert f"({page.relative_to(ROOT)})" in readme, f"README.md does not link {page.relative_to(ROOT)}"
    for name in ("LICENSE", "CITATION.cff"):
        assert (ROOT / name).is_file() and name in readme


def test_no_page_speaks_of_how_the_project_was_made():
    found = [f"{page.relative_to(ROOT)}:{number}: {line.strip()[:100]}" for page in PAGES
             for number, line in enumerate(page.read_text().splitlines(), 1) if HISTORY.search(line)]
    assert not found, "\n".join(found)


def prose(text: str) -> str:
    """A page without its code blocks and code spans (commands, quoted output, file names)."""
    return re.sub(r"`[^`]*`", "", re.sub(r"```.*?```", "", text, flags=re.DOTALL))


def test_no_page_tells_history_outside_the_changelog():
    found = [f"{page.relative_to(ROOT)}:{number}: {HISTORY_WORDS.search(line).group(0)!r} in {line.strip()[:100]}"
             for page in PAGES if page.name != "CHANGELOG.md"
             for number, line in enumerate(prose(page.read_text()).splitlines(), 1) if HISTORY_WORDS.search(line)]
    assert not found, "\n".join(found)


def test_the_history_words_are_caught_in_prose_and_spared_in_code():
    caught = ["It now tells its clients.", "Ray used to wait forever.", "NOT VALIDATED yet.",
              "measured before the speed-ups", "on this machine (idle)", "it no longer retries"]
    spared = ["`estimate: ... measured now in 12.6 s`", "```\nnow\n```", "before launch, after the last epoch",
              "nodes that no node has yet", "on your machine"]
    assert all(HISTORY_WORDS.search(prose(text)) for text in caught)
    assert not any(HISTORY_WORDS.search(prose(text)) for text in spared)


def test_generated_study_files_hold_no_absolute_path_of_the_machine_that_made_them():
    for path in (ROOT / "docs").rglob("*"):
        if path.suffix in (".yaml", ".json", ".csv", ".html", ".md"):
            text = path.read_text(errors="replace")
            assert not re.search(r"(?<![\w.])/(tmp|work|home|root|Users)/", text), path.relative_to(ROOT)


def test_the_docs_verdicts_are_recomputed_from_their_trials_and_quoted_as_written(tmp_path):
    """docs/<study>/verdicts.json is what ``vaesweep report --trials`` gives for the trials.csv beside it,
    and docs/results.md carries each study's verdicts table as generated from it."""
    import json
    import subprocess
    import sys

    from analysis.verdict_record import verdicts_markdown

    results = (ROOT / "docs/results.md").read_text()
    studies = [path.parent for path in sorted((ROOT / "docs").glob("*/verdicts.json"))]
    assert ROOT / "docs/digits" in studies
    for study in studies:
        out = tmp_path / study.name
        done = subprocess.run([sys.executable, "-m", "sweeps.cli", "report", "--trials", str(study / "trials.csv"),
                               "--out", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert done.returncode == 0, done.stderr
        assert (out / "verdicts.json").read_text() == (study / "verdicts.json").read_text(), study.name
        assert verdicts_markdown(json.loads((study / "verdicts.json").read_text())) in results, study.name


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#+\s+(.*)$", page.read_text(), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-") for heading in headings}


def test_a_heading_anchor_is_spelled_as_github_spells_it():
    assert anchors(ROOT / "docs" / "cli.md") >= {"vaesweep-run", "vaesweep-data-fetch", "exit-codes"}


def test_every_relative_link_and_anchor_in_the_docs_resolves():
    broken, checked = [], 0
    for page in PAGES:
        for target in LINK.findall(page.read_text()):
            if re.match(r"[a-z]+:", target):  # http(s), mailto: outside the repository
                continue
            checked += 1
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert checked >= 20 and not broken, "\n".join(broken)
