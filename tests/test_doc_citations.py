"""Every citation of the documentation points at a heading that exists, and nothing cites a file
outside the repository.

The citation forms are defined at the top of docs/architecture.md (heading "Citations"). A
citation that points nowhere is worse than none: a maintainer follows it and finds nothing, or
finds a section renumbered into something else. The scan covers every Python, Markdown, TOML,
shell and Makefile source of the repository, so a citation added anywhere is checked.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
PROTOCOL = DOCS / "protocol.md"

#: Suffixes and names of the files whose text is scanned.
SCANNED_SUFFIXES = frozenset({".py", ".md", ".toml", ".cfg", ".ini", ".sh", ".yml", ".yaml"})
SCANNED_NAMES = frozenset({"Makefile", "run"})
#: Directories never scanned: tooling, caches and generated output, not sources.
SKIPPED_DIRS = frozenset({"build", "dist", "node_modules", "__pycache__", "venv"})
#: This file: its citations are test data for the scanner, broken on purpose.
SELF = Path(__file__).resolve()

_NUMBER = r"\d+[a-z]?(?![.\d])"
#: ``section 8``, ``protocol section 8a``, ``sections 1-8``, ``sections 4 and 5``; not ``section 5.5``.
SECTION = re.compile(
    rf"(?<![-\w])(?P<protocol>protocol\s+)?sections?\s+(?P<first>{_NUMBER})"
    rf"(?P<more>(?:\s*(?:-|–|to|,|and|&)\s*{_NUMBER})*)",
    re.IGNORECASE,
)
_MORE = re.compile(rf"(?P<sep>-|–|to|,|and|&)\s*(?P<number>{_NUMBER})", re.IGNORECASE)
#: A section number that belongs to another document named just before it (``RFC 6455 section 7``).
OTHER_DOCUMENT = re.compile(r"\bRFC\s*\d+\W*$", re.IGNORECASE)
#: ``docs/operations.md``, ``docs/operations.md#anchor``, ``docs/operations.md "Heading"``.
DOCS_REF = re.compile(
    r"\bdocs/(?P<page>[A-Za-z0-9_.-]+?\.md)(?:#(?P<anchor>[\w-]+)|\s+[\"“](?P<heading>[^\"”\n]+)[\"”])?"
)
#: A relative Markdown link to a page: ``[text](operations.md#anchor)``.
MD_LINK = re.compile(r"\]\((?P<target>[^)\s#:]+\.md)(?:#(?P<anchor>[^)\s]+))?\)")
#: References to documents that live beside the repository, never inside it. The names are split
#: so that this file does not cite them itself.
OUTSIDE = re.compile(
    "|".join(["GATEWAY_" + "PROTOCOL", r"\b" + "PIT" + r"FALLS\b", r"\.\./shared\b", r"/work/shared\b"])
)


@dataclass(frozen=True)
class Finding:
    """One citation or reference: where it is and what it says."""

    where: str
    text: str
    problem: str = ""

    def __str__(self) -> str:
        return f"{self.where}: {self.text!r}" + (f" ({self.problem})" if self.problem else "")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def headings(markdown: str) -> list[str]:
    """The heading texts of a Markdown page, outside fenced code blocks."""
    found, fenced = [], False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and (match := re.match(r"^#{1,6}\s+(.+?)\s*#*\s*$", line)):
            found.append(match.group(1))
    return found


def anchors(markdown: str) -> set[str]:
    """Every anchor a page defines, with GitHub's ``-1``, ``-2`` suffixes for repeated headings."""
    seen: dict[str, int] = {}
    result = set()
    for heading in headings(markdown):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


def protocol_sections(markdown: str) -> list[str]:
    """Section numbers of the protocol page, in order (``## 8. Limits`` gives ``8``)."""
    return [m.group(1) for h in headings(markdown) if (m := re.match(r"^(\d+[a-z]?)\.\s", h))]


def section_numbers(match: re.Match[str]) -> list[str]:
    """The numbers one section citation names; a dash range names every number in it."""
    numbers = [match.group("first")]
    for part in _MORE.finditer(match.group("more")):
        previous, number = numbers[-1], part.group("number")
        if part.group("sep") in ("-", "–", "to") and previous.isdigit() and number.isdigit():
            numbers.extend(str(n) for n in range(int(previous) + 1, int(number) + 1))
        else:
            numbers.append(number)
    return numbers


def scanned_files(root: Path = REPO) -> Iterator[Path]:
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = sorted(
            d
            for d in subdirs
            if d not in SKIPPED_DIRS and not d.endswith(".egg-info") and (not d.startswith(".") or d == ".ci")
        )
        for name in sorted(files):
            path = Path(directory) / name
            if (path.suffix in SCANNED_SUFFIXES or name in SCANNED_NAMES) and path.resolve() != SELF:
                yield path


def numbered_lines(root: Path = REPO) -> Iterator[tuple[Path, int, str]]:
    for path in scanned_files(root):
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        for number, line in enumerate(text.splitlines(), start=1):
            yield path, number, line


class Pages:
    """The docs pages of one checkout, read once."""

    def __init__(self, docs: Path) -> None:
        self.docs = docs
        self._text = {p.name: p.read_text(encoding="utf-8") for p in sorted(docs.glob("*.md"))}

    def exists(self, page: str) -> bool:
        return page in self._text

    def has_anchor(self, page: str, anchor: str) -> bool:
        return anchor in anchors(self._text[page])

    def has_heading(self, page: str, heading: str) -> bool:
        return heading.strip() in (h.strip() for h in headings(self._text[page]))

    @functools.cached_property
    def sections(self) -> set[str]:
        """The protocol page's section numbers, parsed once (every scanned line asks)."""
        return set(protocol_sections(self._text.get("protocol.md", "")))


def check_line(pages: Pages, root: Path, path: Path, line: str, where: str) -> tuple[list[Finding], list[Finding]]:
    """(every citation found on the line, the broken ones among them)."""
    found: list[Finding] = []
    broken: list[Finding] = []

    def note(text: str, problem: str | None) -> None:
        finding = Finding(where, text, problem or "")
        found.append(finding)
        if problem:
            broken.append(finding)

    sections = pages.sections
    for match in SECTION.finditer(line):
        if not match.group("protocol") and OTHER_DOCUMENT.search(line[: match.start()]):
            continue
        missing = [n for n in section_numbers(match) if n.lower() not in sections]
        note(match.group(0), f"docs/protocol.md has no section {', '.join(missing)}" if missing else None)
    for match in DOCS_REF.finditer(line):
        page, anchor, heading = match.group("page", "anchor", "heading")
        if not pages.exists(page):
            note(match.group(0), f"no page docs/{page}")
        elif anchor is not None:
            note(match.group(0), None if pages.has_anchor(page, anchor) else f"no heading with anchor #{anchor}")
        elif heading is not None:
            note(match.group(0), None if pages.has_heading(page, heading) else f"no heading {heading!r}")
        else:
            note(match.group(0), None)
    if path.suffix == ".md":
        for match in MD_LINK.finditer(line):
            target = (path.parent / match.group("target")).resolve()
            if not target.is_relative_to(root.resolve()):
                continue  # reported by the outside-reference check
            if not target.is_file():
                note(match.group(0), f"no file {target.relative_to(root.resolve())}")
            elif target.parent == pages.docs.resolve() and match.group("anchor"):
                ok = pages.has_anchor(target.name, match.group("anchor"))
                note(match.group(0), None if ok else f"no heading with anchor #{match.group('anchor')}")
    return found, broken


def scan(root: Path = REPO, docs: Path = DOCS) -> tuple[list[Finding], list[Finding], list[Finding]]:
    """(citations, broken citations, references outside the repository) of a checkout."""
    pages = Pages(docs)
    citations: list[Finding] = []
    broken: list[Finding] = []
    outside: list[Finding] = []
    for path, number, line in numbered_lines(root):
        where = f"{path.relative_to(root)}:{number}"
        found, bad = check_line(pages, root, path, line, where)
        citations += found
        broken += bad
        outside += [Finding(where, line.strip()[:160], m.group(0)) for m in OUTSIDE.finditer(line)]
        if path.suffix == ".md":
            for match in MD_LINK.finditer(line):
                target = (path.parent / match.group("target")).resolve()
                if not target.is_relative_to(root.resolve()):
                    outside.append(Finding(where, match.group(0), "link leaves the repository"))
    return citations, broken, outside


@pytest.fixture(scope="module")
def repository_scan() -> tuple[list[Finding], list[Finding], list[Finding]]:
    return scan()


def test_protocol_page_keeps_the_section_numbers_code_cites() -> None:
    assert protocol_sections(PROTOCOL.read_text(encoding="utf-8")) == [
        "1",
        "2",
        "3",
        "4",
        "5",
        "6",
        "7",
        "8",
        "8a",
        "9",
    ]


def test_every_citation_points_at_an_existing_heading(repository_scan) -> None:
    citations, broken, _ = repository_scan
    # The code cites the protocol about thirty times; finding almost none means the scan broke.
    assert len([c for c in citations if "section" in c.text.lower()]) >= 20, citations
    assert not broken, "citations pointing nowhere:\n" + "\n".join(map(str, broken))


def test_every_docs_page_has_unique_anchors() -> None:
    """A repeated heading gets a ``-1`` anchor nobody would guess; keep headings unique per page."""
    for page in sorted(DOCS.glob("*.md")):
        slugs = [slug(h) for h in headings(page.read_text(encoding="utf-8"))]
        repeated = sorted({s for s in slugs if slugs.count(s) > 1})
        assert not repeated, f"{page.name} repeats headings: {repeated}"


def test_nothing_cites_a_document_outside_the_repository(repository_scan) -> None:
    _, _, outside = repository_scan
    assert not outside, "references outside the repository:\n" + "\n".join(map(str, outside))


# --- the scanner itself: each rule must catch what it is meant to catch -----------------------


@pytest.fixture()
def fake_checkout(tmp_path: Path) -> Path:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "protocol.md").write_text(
        "# P\n\n## 1. Hosts\n\n## 8. Limits\n\n## 8a. Results\n\n```\n## 9. Fenced\n```\n"
    )
    (docs / "operations.md").write_text(
        "# O\n\n## SSE comment blocks arrive as empty events\n\n## `get_x` must not X\n"
    )
    return tmp_path


@pytest.mark.parametrize(
    ("line", "verdict"),
    [
        ("# limits (protocol section 8)", "ok"),
        ("# see protocol section 8a", "ok"),
        ("# section 9: fenced headings do not count", "broken"),
        ("# protocol section 99", "broken"),
        ("# sections 1-8", "broken"),  # 2 to 7 are missing in the fake page
        ("# Sections 1 and 8", "ok"),
        ("# protocol section 1, step 5", "ok"),
        ("# RFC 6455 section 7 is another document", "none"),
        ("# RFC 6455 section 5.5 has dotted numbers", "none"),
        ("# docs/operations.md#sse-comment-blocks-arrive-as-empty-events", "ok"),
        ("# docs/operations.md#get_x-must-not-x", "ok"),
        ("# docs/operations.md#sse-comment-blocks", "broken"),
        ('# docs/operations.md "SSE comment blocks arrive as empty events"', "ok"),
        ('# docs/operations.md "SSE comments"', "broken"),
        ("# docs/missing.md", "broken"),
        ("# docs/protocol.md", "ok"),
    ],
)
def test_scanner_judges_each_citation_form(fake_checkout: Path, line: str, verdict: str) -> None:
    (fake_checkout / "module.py").write_text(line + "\n")
    citations, bad, _ = scan(fake_checkout, fake_checkout / "docs")
    assert ("none" if not citations else "broken" if bad else "ok") == verdict, (citations, bad)


def test_scanner_ignores_text_that_is_no_citation(fake_checkout: Path) -> None:
    (fake_checkout / "module.py").write_text("intersection 4\nRFC 6455 section 7\ncross-section 12 ok\n")
    citations, _, _ = scan(fake_checkout, fake_checkout / "docs")
    assert [c.text for c in citations] == []


def test_scanner_follows_markdown_links_between_pages(fake_checkout: Path) -> None:
    page = fake_checkout / "docs" / "architecture.md"
    page.write_text("[ok](operations.md#sse-comment-blocks-arrive-as-empty-events) [bad](operations.md#nope)\n")
    _, bad, _ = scan(fake_checkout, fake_checkout / "docs")
    assert [b.text for b in bad] == ["](operations.md#nope)"]


@pytest.mark.parametrize(
    "line",
    [
        "follows `GATEWAY_" + "PROTOCOL.md`",
        "(PIT" + "FALLS: a circular import)",
        "see ../shared/notes",
        "cat /work/shared/x",
    ],
)
def test_scanner_reports_references_outside_the_repository(fake_checkout: Path, line: str) -> None:
    (fake_checkout / "module.py").write_text(line + "\n")
    _, _, outside = scan(fake_checkout, fake_checkout / "docs")
    assert len(outside) == 1, outside


def test_scanner_reports_markdown_links_leaving_the_repository(fake_checkout: Path) -> None:
    (fake_checkout / "docs" / "x.md").write_text("[notes](../../elsewhere/notes.md)\n")
    _, _, outside = scan(fake_checkout, fake_checkout / "docs")
    assert [o.problem for o in outside] == ["link leaves the repository"]


def test_scanner_skips_tool_directories(fake_checkout: Path) -> None:
    for hidden in (".venv", "build", "pkg.egg-info"):
        (fake_checkout / hidden).mkdir()
        (fake_checkout / hidden / "m.py").write_text("# protocol section 99\n")
    (fake_checkout / ".ci").mkdir()
    (fake_checkout / ".ci" / "run").write_text("# protocol section 99\n")
    _, bad, _ = scan(fake_checkout, fake_checkout / "docs")
    assert [b.where for b in bad] == [".ci/run:1"]
