"""The README's Python example runs as written (doctest), on a model file with params.yaml's classes."""

import doctest
import re
import shutil

from tests.helpers import ROOT, untrained_model


def readme_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S)
    examples = [b for b in blocks if ">>> from pipeline import load" in b]
    assert len(examples) == 1, "the README should hold one Python example of `from pipeline import load`"
    return examples[0]


def test_the_readmes_python_example(tmp_path, monkeypatch, sample_clips):
    (tmp_path / "models").mkdir()
    untrained_model(tmp_path / "models" / "model.pt", "lstm")
    shutil.copy(sample_clips[0], tmp_path / "clip.mp3")
    monkeypatch.chdir(tmp_path)
    test = doctest.DocTestParser().get_doctest(readme_example(), {}, "README.md", "README.md", 0)
    assert len(test.examples) >= 6
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test)
    assert runner.summarize(verbose=False).failed == 0
