"""The README is a front page that still works: at most MAX_LINES lines, every relative link of it and
of docs/ resolves to a file, and every command its code blocks show answers `--help`."""
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
MAX_LINES = 200
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
# the README's commands that are not run here: the test command runs tox, which runs these tests
NOT_RUN = {"tests/run.py"}


def links(page: Path) -> list:
    """The relative link targets of a markdown page (anchors dropped), outside code blocks."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return [t.split("#")[0] for t in re.findall(r"\]\(([^)\s]+)\)", text)
            if not re.match(r"[a-z]+:", t) and not t.startswith("#")]


def commands(page: Path) -> list:
    """The programs the page's bash blocks run: ("script", path), ("module", name) or ("entry", name)."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    found = []
    for block in re.findall(r"```bash\n(.*?)```", page.read_text(), flags=re.S):
        for line in block.splitlines():
            words = line.split("#")[0].split()
            if not words:
                continue
            if words[0] in ("python", "python3") and len(words) > 1:
                found.append(("module", words[2]) if words[1] == "-m" else ("script", words[1]))
            elif words[0] in scripts:
                found.append(("entry", scripts[words[0]]))
    return list(dict.fromkeys(found))


def test_the_readme_is_a_front_page():
    assert len(README.read_text().splitlines()) <= MAX_LINES


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_resolves(page):
    missing = [t for t in links(page) if not (page.parent / t).exists()]
    assert not missing, f"{page.relative_to(ROOT)} links to missing files: {missing}"


@pytest.mark.parametrize("kind, name", commands(README), ids=lambda v: str(v))
def test_every_command_the_readme_shows_answers_help(kind, name):
    if name in NOT_RUN:
        pytest.skip(f"{name}: the test command itself")
    if kind == "entry":
        module, function = name.split(":")
        cmd = [sys.executable, "-c", f"import sys; from {module} import {function}; sys.exit({function}())", "--help"]
    else:
        cmd = [sys.executable, *(["-m"] if kind == "module" else []), name, "--help"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "usage" in proc.stdout.lower(), (cmd, proc.stderr[-2000:])


def test_the_finders_find_links_and_commands(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("[a](docs/x.md#y) [b](https://e.org) [c](#z)\n```bash\npython -m common.data.corpus --n 3  # c\n"
                    "python3 bench/run.py --framework all\ndctts-train --model ssrn\n```\n")
    assert links(page) == ["docs/x.md"]
    assert commands(page) == [("module", "common.data.corpus"), ("script", "bench/run.py"),
                              ("entry", "common.training.cli:train_main")]
