"""Helpers the tests share (imported as ``tests.helpers``, never from ``conftest``)."""

from __future__ import annotations

import textwrap
import types
from typing import Any

import searchsvc.trainer as trainer_module

_EXAMPLE_HEADER = "Writing your own trainer"


def docstring_example() -> str:
    """The code of the docstring's literal block that follows "Writing your own trainer"."""
    lines = (trainer_module.__doc__ or "").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(_EXAMPLE_HEADER))
    assert lines[start].endswith("::"), "the example must be a literal block"
    block: list[str] = []
    for line in lines[start + 1 :]:
        if line.strip() and not line.startswith("    "):
            break  # the first unindented line ends the literal block
        block.append(line)
    return textwrap.dedent("\n".join(block)).strip() + "\n"


def load_example() -> Any:
    """Execute the example as the module ``mypkg.trainers`` would be; its ``my_trainer``."""
    module = types.ModuleType("mypkg_trainers")
    exec(compile(docstring_example(), "<searchsvc.trainer example>", "exec"), module.__dict__)
    return module.my_trainer
