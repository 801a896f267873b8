"""The docs: the config reference is complete and true, every local link lands, and the pictures
and commands they show match the code and CI."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from gptiny_cli.config import RunConfig, toml_value
from tests.test_architecture import LAYERS

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS, ROOT / "benchmarks" / "README.md"]


def _prose(path: Path) -> str:
    """A Markdown page without its fenced code blocks, where brackets and #s are not links or headings."""
    return re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.MULTILINE | re.DOTALL)


def _anchors(path: Path) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*$", _prose(path), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def _local_links(path: Path) -> list[str]:
    links = re.findall(r"\]\(([^)\s]+)\)", _prose(path))
    return [link for link in links if not re.match(r"[a-z]+:", link)]


def test_config_reference_lists_every_key_with_its_default():
    text = (ROOT / "docs" / "config.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| `(\w+\.\w+)` \| `([^`]*)` \|", text, re.MULTILINE))
    expected = {f"{section}.{key}": toml_value(value)
                for section, values in RunConfig().to_dict().items() for key, value in values.items()}
    assert rows == expected


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_local_link_of_a_page_resolves(page):
    broken = []
    for link in _local_links(page):
        target, _, anchor = link.partition("#")
        file = (page.parent / target).resolve() if target else page
        if not file.exists():
            broken.append(link)
        elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
            broken.append(link)
    assert not broken, f"{page.name} links to what does not exist: {broken}"


def test_the_architecture_page_names_every_part_of_the_package():
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    missing = [part for part in LAYERS if part not in text]
    assert not missing, f"docs/architecture.md does not name {missing}"


def test_the_readme_test_command_runs_what_ci_runs():
    blocks = re.findall(r"^```bash\n(.*?)^```", README.read_text(encoding="utf-8"), re.MULTILINE | re.DOTALL)
    readme = next(block.strip() for block in blocks if "pytest" in block).split(" && ")
    # CI also installs Chromium with apt-get (as root) for the playground's browser test; the README
    # says so beside the command, which installs only what pip does.
    ci = [line for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
          if line and not line.startswith(("#", "set ", "cd ", "export ", "apt-get ")) and "ruff" not in line]
    assert [shlex.split(step) for step in readme] == [
        [word for word in shlex.split(line) if word != "--quiet"] for line in ci]
