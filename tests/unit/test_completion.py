"""Shell completion of the STUDY argument: study files only, as the shell receives them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from searchsvc.completion import study_files


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder with study files beside other files, hidden ones and a deeper one."""
    for name in ("top.yaml", "studies/a.yaml", "studies/b.yml", "studies/notes.txt",
                 ".hidden.yaml", ".git/x.yaml", "deep/er/c.yaml", "stale.yaml.bak"):  # fmt: skip
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("name: x\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_nothing_typed_offers_the_folders_and_the_next_folders_study_files(project) -> None:
    assert study_files("") == ["studies/a.yaml", "studies/b.yml", "top.yaml"]


def test_a_prefix_keeps_the_paths_it_starts(project) -> None:
    assert study_files("st") == ["studies/a.yaml", "studies/b.yml"]
    assert study_files("studies/") == ["studies/a.yaml", "studies/b.yml"]
    assert study_files("studies/b") == ["studies/b.yml"]


def test_hidden_files_only_once_a_dot_is_typed(project) -> None:
    assert study_files(".") == [".git/x.yaml", ".hidden.yaml"]


def test_an_absolute_path_stays_absolute(project) -> None:
    assert study_files(f"{project}/deep/er/") == [f"{project}/deep/er/c.yaml"]


def test_a_folder_that_does_not_exist_offers_nothing(project) -> None:
    assert study_files("nowhere/") == []


@pytest.mark.parametrize("command", ["run", "trials", "dashboard", "predict"])
def test_bash_completion_of_study_offers_the_study_files(project, command) -> None:
    script = Path(sys.executable).parent / "searchsvc"
    env = {**os.environ, "_SEARCHSVC_COMPLETE": "complete_bash",
           "COMP_WORDS": f"searchsvc {command} st", "COMP_CWORD": "2"}  # fmt: skip

    done = subprocess.run([str(script)], env=env, capture_output=True, text=True, timeout=60)

    assert (done.returncode, done.stdout) == (0, "studies/a.yaml\nstudies/b.yml\n")
