"""Node path parameters: inputs may come from the package, outputs land where the user runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from smrl_ros.paths import input_path, output_path
from smrl_train.config import package_root


@pytest.fixture
def elsewhere(tmp_path: Path):
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        yield tmp_path
    finally:
        os.chdir(cwd)


def test_a_relative_output_is_under_the_working_directory_never_the_package(elsewhere: Path) -> None:
    # It was resolved like an input: store:=rec/rel landed in install/.../share/smrl_ros/rec/rel.
    for given in ("rec/rel", "runs/ros", "config"):  # "config" exists in the package, not here
        got = output_path(given)
        assert got == elsewhere / given and package_root() not in got.parents


def test_a_relative_input_falls_back_to_the_package(elsewhere: Path) -> None:
    assert input_path("config/reach.yaml") == package_root() / "config" / "reach.yaml"
    (elsewhere / "config").mkdir()
    (elsewhere / "config" / "reach.yaml").write_text("mine")
    assert input_path("config/reach.yaml").resolve() == elsewhere / "config" / "reach.yaml"
