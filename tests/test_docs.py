"""Documentation cited by the repository lives in the repository.

A clone has no `../shared` folder, so a comment, docstring, script, config or document that sends
the reader to a research note kept beside the checkout points at nothing. These tests grep the
tracked files (`git ls-files`) and the files under docs/ for such citations, and check that every
`docs/` document cited exists. Reading DATA from `../shared` (media clips, protocol lists) is fine
and not matched: only Markdown documents count.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# The research notes and design documents that were kept outside the repository (they are written
# without their extension here, so that this file does not match itself).
OUTSIDE_DOCS = (
    "paper",
    "anchors",
    "mmlab-install",
    "offline-pose",
    "authors-state-dict",
    "DESIGN",
    "STYLE",
)
OUTSIDE_CITATION = re.compile(
    r"(?<![\w/-])(?:" + "|".join(map(re.escape, OUTSIDE_DOCS)) + r")\.md\b"  # a bare file name
    r"|shared/[\w./-]*\.md\b"  # a document in the shared folder
)
DOCS_CITATION = re.compile(r"\bdocs/([\w.-]+\.md)\b")

# Files allowed to cite documentation outside the repository: none. Add nothing here.
ALLOWED: tuple[str, ...] = ()


def _scanned_files() -> list[Path]:
    """The repository's tracked files plus everything under docs/ (which may not be committed
    yet)."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError) as err:
        pytest.skip(f"not a git checkout, or git is missing ({err}): nothing to list")
    names = {name for name in listed.decode("utf-8").split("\0") if name}
    names |= {path.relative_to(ROOT).as_posix() for path in (ROOT / "docs").rglob("*.md")}
    return [ROOT / name for name in sorted(names) if (ROOT / name).is_file()]


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:  # binary files cite nothing
        return []


def _allowed(relative: str) -> bool:
    return any(
        relative == entry or (entry.endswith("/") and relative.startswith(entry))
        for entry in ALLOWED
    )


def test_no_citations_of_documents_outside_the_repository() -> None:
    hits = []
    for path in _scanned_files():
        relative = path.relative_to(ROOT).as_posix()
        if _allowed(relative):
            continue
        for number, line in enumerate(_lines(path), 1):
            if OUTSIDE_CITATION.search(line):
                hits.append(f"{relative}:{number}: {line.strip()}")
    assert not hits, (
        "documentation outside the repository is cited; cite docs/*.md, the paper's arXiv section "
        "or an upstream URL instead:\n" + "\n".join(hits)
    )


def test_cited_docs_exist() -> None:
    missing = []
    for path in _scanned_files():
        relative = path.relative_to(ROOT).as_posix()
        for number, line in enumerate(_lines(path), 1):
            for name in DOCS_CITATION.findall(line):
                if not (ROOT / "docs" / name).is_file():
                    missing.append(f"{relative}:{number}: docs/{name}")
    assert not missing, "cited documents missing from docs/:\n" + "\n".join(missing)


def test_docs_start_with_a_summary() -> None:
    """Each document opens with a title and one summary paragraph before its first section."""
    documents = sorted((ROOT / "docs").glob("*.md"))
    assert documents, "docs/ holds no documents"
    for path in documents:
        lines = _lines(path)
        assert lines and lines[0].startswith("# "), f"{path.name}: no title on the first line"
        body = [
            line
            for line in lines[
                1 : next((i for i, line in enumerate(lines) if line.startswith("## ")), len(lines))
            ]
            if line.strip()
        ]
        assert body, f"{path.name}: no summary paragraph before the first section"
