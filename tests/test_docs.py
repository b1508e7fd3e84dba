"""What the code cites is in the project: a docstring pointing at a file a reader cannot open is a dead end."""

from __future__ import annotations

import re

from conftest import ROOT

CITED = re.compile(r"(?<![\w/.-])((?:[\w-]+/)*[\w-]+\.md)\b")


def test_every_markdown_file_the_code_cites_exists():
    cited = {
        (path.relative_to(ROOT), name)
        for path in sorted((ROOT / "src").rglob("*.py"))
        for name in CITED.findall(path.read_text())
    }
    assert cited, "the pattern finds nothing: it would pass whatever the code cites"
    missing = sorted(f"{path}: {name}" for path, name in cited if not (ROOT / name).exists())
    assert missing == [], missing
