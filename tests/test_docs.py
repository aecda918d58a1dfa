"""The README stays a short front page and every relative link in it and in docs/ leads somewhere."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

from conftest import REPO

README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
PAGES = [README, *DOCS]

FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)


def prose(markdown: str) -> str:
    """The text outside fenced code blocks, with inline code spans blanked (links there are code)."""
    text = FENCE.sub("", markdown)
    return CODE_SPAN.sub(lambda match: "`" + re.sub(r"[\[\]()]", " ", match.group(0)[1:-1]) + "`", text)


def relative_links(page: Path) -> list[str]:
    """Targets of the page's Markdown links that are not URLs (http:, mailto:, ...)."""
    targets = LINK.findall(prose(page.read_text(encoding="utf-8")))
    return [target for target in targets if not EXTERNAL.match(target)]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", FENCE.sub("", page.read_text(encoding="utf-8")), re.MULTILINE)
    return {slug(heading) for heading in headings}


def test_readme_is_at_most_250_lines():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; move details to docs/"


def test_readme_opens_with_the_two_commands():
    text = README.read_text(encoding="utf-8")
    first = FENCE.search(text)
    assert first is not None, "README.md has no fenced code block"
    assert "\n## " not in text[: first.start()], "the two commands must come before the first section"
    commands = [line for line in first.group(0).splitlines() if line and not line.startswith(("#", "```"))]
    assert len(commands) == 2, commands
    assert "samrefiner refine" in commands[0] and "pip install -e ." in commands[0]
    assert commands[1] == "bash .ci/run"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(REPO).as_posix())
def test_relative_links_point_at_existing_files(page):
    broken = []
    for target in relative_links(page):
        path_part, _, anchor = target.partition("#")
        destination = (page.parent / unquote(path_part)).resolve() if path_part else page
        if not destination.exists():
            broken.append(f"{target}: no such file")
        elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            broken.append(f"{target}: no heading with that anchor")
    assert not broken, f"{page.name}: broken links: {broken}"


def test_every_docs_page_is_linked_from_the_readme():
    assert DOCS, "docs/ holds no pages"
    linked = {(REPO / target.partition("#")[0]).resolve() for target in relative_links(README)}
    missing = [page.name for page in DOCS if page.resolve() not in linked]
    assert not missing, f"docs pages the README does not link: {missing}"


def test_link_extraction_skips_code_and_urls(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "See [a](a.md), [`b`](../src/b.py) and [web](https://example.org).\n"
        "`result[i](x)` is code.\n```python\nprint('[c](c.md)')\n```\n",
        encoding="utf-8",
    )
    assert relative_links(page) == ["a.md", "../src/b.py"]
