"""The environment `make venv` builds (Makefile)."""

import importlib.util
import os

import pytest


@pytest.mark.parametrize("package", ["keras", "tensorflow", "mlflow", "pyspark", "airflow", "pandas"])
def test_the_environment_s_packages_carry_bytecode_so_no_process_compiles_them_at_start(package):
    # Where PYTHONDONTWRITEBYTECODE is set (these machines, CI) Python never writes a .pyc, so
    # without the compiled files from `uv pip install --compile-bytecode` every Airflow task,
    # spark-submit driver and test worker compiled these packages from source at each start
    # (16 s of a 42 s register_and_gate). An older .venv: `make venv` brings it up to date.
    source = importlib.util.find_spec(package).origin
    assert os.path.isfile(importlib.util.cache_from_source(source)), (
        f"{package}: no bytecode beside {source}: run `make venv` (uv pip install --compile-bytecode)")
