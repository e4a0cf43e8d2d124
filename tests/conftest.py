"""Test-wide setup: every test's state lives in a temporary FUSIONREC_HOME / AIRFLOW_HOME.

AIRFLOW_HOME must be set before Airflow is first imported, hence at conftest import time.
"""

import atexit
import logging
import os
import shutil
import tempfile

_SESSION_HOME = tempfile.mkdtemp(prefix="fusionrec-test-")
if not os.environ.get("FUSIONREC_KEEP_TEST_STATE"):  # set it to inspect a failed run's lake
    atexit.register(shutil.rmtree, _SESSION_HOME, ignore_errors=True)
os.environ["FUSIONREC_HOME"] = _SESSION_HOME
os.environ["AIRFLOW_HOME"] = os.path.join(_SESSION_HOME, "airflow")
os.environ.setdefault("KERAS_HOME", os.path.join(_SESSION_HOME, "keras"))
os.environ.setdefault("MPLCONFIGDIR", os.path.join(_SESSION_HOME, "matplotlib"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = os.path.join(os.path.dirname(os.path.dirname(__file__)), "dags")
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
logging.getLogger("py4j").setLevel(logging.WARNING)

import pytest  # noqa: E402

# `make test` runs two pytest-xdist workers, each taking one test file at a time (--dist
# loadfile: a module-scoped fixture such as the end-to-end night runs once). Files are handed
# out in collection order, so the two longest start first, one on each worker, and the short
# ones fill in around them; otherwise the stack's ten minutes would start last and run alone.
LONGEST_FIRST = ("tests/stack/test_production_stack.py", "tests/dags/test_recsys_nightly_e2e.py")


def pytest_collection_modifyitems(config, items):
    def rank(item):
        return next((number for number, path in enumerate(LONGEST_FIRST) if item.nodeid.startswith(path)),
                    len(LONGEST_FIRST))

    items.sort(key=rank)  # stable: the order within a file and among the other files is kept


@pytest.fixture(scope="session")
def spark():
    """One local[2] SparkSession for the whole test session (start-up costs ~7 s)."""
    from jobs.common.config import resolve_config
    from jobs.common.spark_session import get_spark

    config = resolve_config({"spark": {"master": "local[2]", "conf": {"spark.sql.shuffle.partitions": "2"}}})
    session = get_spark(config)
    yield session
    session.stop()


@pytest.fixture()
def tmp_config(tmp_path):
    """A resolved config whose lake and MLflow store live in a fresh temporary folder."""
    from jobs.common.config import resolve_config

    return resolve_config({"home": str(tmp_path), "scale": "tiny",
                           "spark": {"master": "local[2]", "conf": {"spark.sql.shuffle.partitions": "2"}}})
