"""The README: its Python example runs as written (doctest), it fits on a screen, and every link, make
target and command it names exists."""

import doctest
import re
import shutil
import tomllib
from pathlib import Path

import pytest

from tests.helpers import ROOT, untrained_model

README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))


def readme_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    examples = [b for b in blocks if ">>> import acento" in b]
    assert len(examples) == 1, "the README should hold one Python example of `import acento`"
    return examples[0]


def test_the_readmes_python_example(tmp_path, monkeypatch, sample_clips):
    (tmp_path / "models").mkdir()
    untrained_model(tmp_path / "models" / "model.pt", "lstm")
    clip = re.search(r'clip = "([^"]+)"', readme_example()).group(1)
    (tmp_path / clip).parent.mkdir(parents=True)
    shutil.copy(sample_clips[0], tmp_path / clip)
    monkeypatch.chdir(tmp_path)
    test = doctest.DocTestParser().get_doctest(readme_example(), {}, "README.md", "README.md", 0)
    assert len(test.examples) >= 7
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test)
    assert runner.summarize(verbose=False).failed == 0


def test_the_readme_fits_on_a_screen():
    assert len(README.read_text(encoding="utf-8").splitlines()) <= 200


def relative_links(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)  # not inside code
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    return [link for link in links if not re.match(r"[a-z]+://|#|mailto:", link)]


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda p: p.name)
def test_every_relative_link_resolves(page):
    missing = [link for link in relative_links(page) if not (page.parent / link.split("#")[0]).exists()]
    assert not missing, f"{page.name}: links to nothing: {missing}"


def test_every_make_target_the_readme_names_exists():
    targets = set(re.findall(r"^([a-z][a-z-]*):", (ROOT / "Makefile").read_text(encoding="utf-8"), re.M))
    named = set(re.findall(r"`make ([a-z][a-z-]*)`", README.read_text(encoding="utf-8")))
    named |= set(re.findall(r"^make ([a-z][a-z-]*)", README.read_text(encoding="utf-8"), re.M))
    assert named and not named - targets, f"no such make target: {sorted(named - targets)}"


def test_every_command_the_readme_names_exists():
    text = README.read_text(encoding="utf-8")
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    commands = set(re.findall(r"(?<![\w/-])(acento-[a-z]+)(?![\w-])", text))
    assert commands and not commands - set(scripts), f"not a console script: {sorted(commands - set(scripts))}"
    modules = set(re.findall(r"python -m ([a-z_.]+)", text))
    assert all((ROOT / (m.replace(".", "/") + ".py")).is_file() for m in modules), modules
    for script in re.findall(r"python (scripts/[a-z_]+\.py)", text):
        assert (ROOT / script).is_file(), script
