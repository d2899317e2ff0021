"""The README's "Use imwm pieces in your TorchRL pipeline" examples, run as written."""

import re
from pathlib import Path

import pytest

SECTION = "## Use imwm pieces in your TorchRL pipeline"


def _examples() -> list[str]:
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert SECTION in text, f"README.md lost its section {SECTION!r}"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_the_section_has_its_three_examples():
    assert len(_examples()) == 3


@pytest.mark.parametrize("index", range(3))
def test_readme_pipeline_example_runs(index, capsys):
    exec(compile(_examples()[index], f"README.md example {index + 1}", "exec"), {"__name__": "__readme__"})
