"""The README's Python example runs as written (docs that cannot rot)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


def test_readme_has_a_python_example() -> None:
    assert python_blocks(ROOT / "README.md")


@pytest.mark.parametrize("block", python_blocks(ROOT / "README.md"))
def test_readme_python_block_runs(block: str, monkeypatch) -> None:
    if not (ROOT / "models" / "default" / "model.json").exists():
        pytest.skip("no bundled default model")
    monkeypatch.chdir(ROOT)
    exec(compile(block, "README.md", "exec"), {})
