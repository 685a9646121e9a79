"""Functions short enough to read at once: none in the package or the scripts reaches 60 lines.

Counted from the `def` line to the function's last line (signature and docstring included), as the
code-health issue counts them. A typer command gets there with module-level option aliases (one
line per option) and helpers for its body.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 60


def _long_functions(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [
        f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)"
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        if (lines := node.end_lineno - node.lineno + 1) >= LIMIT
    ]


def test_no_function_reaches_sixty_lines() -> None:
    sources = [*ROOT.glob("epam_data/**/*.py"), *ROOT.glob("epam_model/**/*.py")]
    sources += ROOT.glob("scripts/*.py")
    assert len(sources) > 50
    long = [where for path in sorted(sources) for where in _long_functions(path)]
    assert long == [], "split these into helpers:\n" + "\n".join(long)
