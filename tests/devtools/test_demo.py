"""make demo's input handling: a given landing folder is linked into the lake, never copied."""

import argparse
from pathlib import Path

import pytest

from jobs.common import schema
from devtools.demo import land_input
from jobs.common.lake import dataset_path


def test_a_given_landing_folder_is_linked_into_the_lake(tmp_config, tmp_path):
    source = tmp_path / "export"
    for dataset in (schema.LANDING_EVENTS, schema.LANDING_CATALOG):
        (source / dataset / "dt=2026-01-01").mkdir(parents=True)
    land_input(tmp_config, argparse.Namespace(input=str(source)))
    events = Path(dataset_path(tmp_config, schema.LANDING_EVENTS))
    assert events.is_symlink() and events.resolve() == (source / schema.LANDING_EVENTS).resolve()
    assert (events / "dt=2026-01-01").is_dir()
    land_input(tmp_config, argparse.Namespace(input=str(source)))  # a re-run relinks, no error


def test_a_folder_without_the_landing_layout_is_refused_with_the_reason(tmp_config, tmp_path):
    (tmp_path / "export" / "landing" / "events").mkdir(parents=True)
    with pytest.raises(SystemExit, match="has no landing/catalog/dt=YYYY-MM-DD/ folders"):
        land_input(tmp_config, argparse.Namespace(input=str(tmp_path / "export")))


def test_generated_landing_is_not_silently_replaced_by_an_input(tmp_config, tmp_path):
    Path(dataset_path(tmp_config, schema.LANDING_EVENTS)).mkdir(parents=True)
    source = tmp_path / "export"
    for dataset in (schema.LANDING_EVENTS, schema.LANDING_CATALOG):
        (source / dataset).mkdir(parents=True)
    with pytest.raises(SystemExit, match="make clean-state"):
        land_input(tmp_config, argparse.Namespace(input=str(source)))
