"""The documentation stays true to the code: a short README, a complete reference, live links.

- README.md stays readable in five minutes: at most 16 KiB.
- docs/reference.md names every argument of every public class (``inspect.signature``) in that
  class's section, and every flag of every console script (built from the code's own argparse
  parsers) in that script's section. A new argument or flag fails here until it has its row.
- Every relative link in README.md and docs/*.md points to a file that exists, and a link to a
  heading of a Markdown page (``page.md#heading``) to a heading that exists.
"""

from __future__ import annotations

import argparse
import inspect
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

import safe_rotating
from safe_rotating.server.cli import parser as server_parser
from safe_rotating.spools import _parser as spools_parser
from safe_rotating.stress.cli import build_parser as stress_parser
from safe_rotating.stress.django.cli import build_parser as django_stress_parser

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
REFERENCE = DOCS / "reference.md"
README_LIMIT = 16 * 1024


def public_classes() -> list[type]:
    classes = []
    for name in safe_rotating.__all__:
        obj = getattr(safe_rotating, name)
        if inspect.isclass(obj):
            classes.append(obj)
    return classes


def init_arguments(cls: type) -> list[str]:
    """The named arguments of ``cls(...)``; ``*args``/``**kwargs`` name nothing to document."""
    try:
        params = inspect.signature(cls).parameters.values()
    except ValueError:  # an exception class that keeps the builtin's (*args)
        return []
    skip = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return [p.name for p in params if p.kind not in skip]


def section(text: str, title: str) -> str:
    """The text under the heading ``title`` (any level) up to the next heading of that level or
    above; empty if there is no such heading."""
    match = re.search(rf"^(#+) {re.escape(title)}[ \t]*$", text, re.MULTILINE)
    if match is None:
        return ""
    level = len(match.group(1))
    end = re.compile(rf"^#{{1,{level}}} ", re.MULTILINE).search(text, match.end())
    return text[match.end() : end.start() if end else len(text)]


def class_text(reference: str, cls: type) -> str:
    """Where ``cls`` is documented: its own section, else its row in a table."""
    own = section(reference, f"`{cls.__name__}`")
    if own:
        return own
    rows = [line for line in reference.splitlines() if line.startswith(f"| `{cls.__name__}` |")]
    return "\n".join(rows)


def test_readme_is_at_most_16_kib() -> None:
    size = len(README.read_bytes())
    assert size <= README_LIMIT, (
        f"README.md is {size} bytes, over {README_LIMIT}: move detail to a page under docs/ "
        "and link it from the README"
    )


@pytest.mark.parametrize("cls", public_classes(), ids=lambda cls: cls.__name__)
def test_every_argument_of_every_public_class_is_in_the_reference(cls: type) -> None:
    reference = REFERENCE.read_text(encoding="utf-8")
    text = class_text(reference, cls)
    assert text, f"docs/reference.md has no section or table row for `{cls.__name__}`"
    missing = [name for name in init_arguments(cls) if not re.search(rf"\b{name}\b", text)]
    assert not missing, f"docs/reference.md does not document {cls.__name__}'s {missing}"


def parser_options(parser: argparse.ArgumentParser) -> Iterator[str]:
    """Every option string of ``parser`` and of its subcommands, except ``-h``/``--help``."""
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from parser_options(sub)
            continue
        yield from action.option_strings


CONSOLE_SCRIPTS = {
    "safe-rotating-server": server_parser,
    "safe-rotating-stress": stress_parser,
    "safe-rotating-stress --django": django_stress_parser,
    "safe-rotating-spools": spools_parser,
}


@pytest.mark.parametrize("script", sorted(CONSOLE_SCRIPTS))
def test_every_flag_of_every_console_script_is_in_the_reference(script: str) -> None:
    text = section(REFERENCE.read_text(encoding="utf-8"), f"`{script}`")
    assert text, f"docs/reference.md has no section `{script}`"
    options = sorted(set(parser_options(CONSOLE_SCRIPTS[script]())))
    assert options, f"no options found in the parser of {script}"
    # A flag is documented as the start of a code span: `--flag`, `--flag VALUE`, `-p`.
    missing = [o for o in options if not re.search(rf"`{re.escape(o)}[ `]", text)]
    assert not missing, f"docs/reference.md does not document {script} {missing}"


def markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


_FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def links(text: str) -> list[str]:
    """The targets of the inline links in ``text``, outside code."""
    prose = _CODE_SPAN.sub("", _FENCE.sub("", text))
    return _LINK.findall(prose)


def anchors(text: str) -> set[str]:
    """The anchors GitHub gives the headings of ``text``."""
    found: set[str] = set()
    for heading in re.findall(r"^#+ (.+?)[ \t]*$", _FENCE.sub("", text), re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        candidate, n = slug, 0
        while candidate in found:
            n += 1
            candidate = f"{slug}-{n}"
        found.add(candidate)
    return found


def page_anchors(page: Path) -> set[str]:
    return anchors(page.read_text(encoding="utf-8"))


def broken_links(page: Path) -> list[str]:
    text = page.read_text(encoding="utf-8")
    broken = []
    for target in links(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):
            continue  # https:, mailto: ... : not a file of this repository
        path_part, _, fragment = target.partition("#")
        dest = (page.parent / path_part).resolve() if path_part else page
        if not dest.exists():
            broken.append(f"{target} (no such file)")
        elif fragment and dest.suffix == ".md" and fragment not in page_anchors(dest):
            broken.append(f"{target} (no such heading in {dest.name})")
    return broken


@pytest.mark.parametrize("page", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_to_an_existing_file(page: Path) -> None:
    assert not broken_links(page), f"{page.relative_to(ROOT)}: broken links {broken_links(page)}"


def test_the_docs_index_lists_every_page() -> None:
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    listed = {Path(target.partition("#")[0]).name for target in links(index)}
    pages = {p.name for p in DOCS.glob("*.md")} - {"index.md"}
    assert not pages - listed, f"docs/index.md does not link {sorted(pages - listed)}"
