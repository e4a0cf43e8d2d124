"""The one place a SparkSession is built, from the resolved config.

local[*] by default; a cluster by setting config["spark"]["master"] (FUSIONREC_SPARK_MASTER)
and executor settings in config["spark"]["conf"] -- no code change. On a cluster the
executors' Python workers must import the jobs package too (any Python function a stage
hands to Spark is pickled by reference to its module): a driver started here ships it with
SparkContext.addPyFile, and one started by spark-submit (spark.deploy "spark_submit",
jobs/common/spark_submit.py) has it from --py-files.
"""

from __future__ import annotations

import logging
import os


def get_spark(config: dict):
    """Return the active SparkSession, creating it from config if needed."""
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYSPARK_PYTHON", os.environ.get("PYSPARK_PYTHON") or _current_python())
    logging.getLogger("py4j").setLevel(logging.WARNING)
    from pyspark.sql import SparkSession

    spark_config = config["spark"]
    builder = SparkSession.builder.master(spark_config["master"]).appName(spark_config["app_name"])
    for key, value in spark_config["conf"].items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    # getOrCreate may return a session started elsewhere: make the settings we rely on hold.
    for key in ("spark.sql.session.timeZone", "spark.sql.sources.partitionOverwriteMode"):
        if key in spark_config["conf"]:
            spark.conf.set(key, spark_config["conf"][key])
    ship_jobs_package(spark.sparkContext, config)
    return spark


def is_local_master(master: str) -> bool:
    """local, local[4], local[*, 2]: executors are threads of this process and share its imports.

    (local-cluster[...] starts separate executor processes, so it needs shipping like a cluster.)
    """
    return master == "local" or master.startswith("local[")


def ship_jobs_package(spark_context, config: dict) -> str | None:
    """Make the jobs package importable on a non-local master's executors; returns the zip.

    Skipped when the executors already get it: spark-submit --py-files put a jobs zip in
    spark.submit.pyFiles, or an earlier call on this context added it.
    """
    if is_local_master(spark_context.master):
        return None
    from jobs.common.spark_submit import ZIP_PREFIX, package_jobs, py_files_dir

    shipped = [entry for entry in spark_context.getConf().get("spark.submit.pyFiles", "").split(",") if entry]
    if any(os.path.basename(entry).startswith(ZIP_PREFIX) for entry in shipped):
        return None
    package = package_jobs(py_files_dir(config))
    if package not in _SHIPPED.setdefault(spark_context.applicationId, set()):
        spark_context.addPyFile(package)
        _SHIPPED[spark_context.applicationId].add(package)
    return package


_SHIPPED: dict[str, set[str]] = {}  # application id -> zips added with addPyFile


def _current_python() -> str:
    import sys

    return sys.executable
