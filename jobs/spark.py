"""The one place a SparkSession is built, from the resolved config.

local[*] by default; a cluster by setting config["spark"]["master"] (FUSIONREC_SPARK_MASTER)
and executor settings in config["spark"]["conf"] -- no code change.
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
    for key, value in spark_config.get("conf", {}).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    # getOrCreate may return a session started elsewhere: make the settings we rely on hold.
    for key in ("spark.sql.session.timeZone", "spark.sql.sources.partitionOverwriteMode"):
        if key in spark_config.get("conf", {}):
            spark.conf.set(key, spark_config["conf"][key])
    return spark


def _current_python() -> str:
    import sys

    return sys.executable
