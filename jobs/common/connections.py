"""Airflow connections, read the same way inside and outside an Airflow task.

Inside a task, `airflow.sdk.Connection.get` reaches the task's execution API, the
AIRFLOW_CONN_* variables and any configured secrets backend. Where Airflow is not
importable or cannot be asked (a plain shell, a Spark executor, no metadata DB), a
connection still comes from its environment variable AIRFLOW_CONN_<ID> holding a URI,
so a laptop or a test sets the same variable a deployment would.
"""

from __future__ import annotations

import os


def airflow_connection(connection_id: str):
    """(the Airflow Connection or None, why there was none: for error messages)."""
    try:  # lazily: the jobs also run where Airflow is not installed
        from airflow.sdk import Connection
        from airflow.sdk.exceptions import AirflowNotFoundException
    except ImportError:
        return None, "Airflow is not importable here"
    try:
        return Connection.get(connection_id), "found"
    except AirflowNotFoundException:
        return None, "not defined"
    except Exception as error:  # noqa: BLE001 - no metadata DB / API server: the caller falls back
        # Only the exception type: its message could quote connection details.
        return None, f"lookup failed: {type(error).__name__}"


def connection_env_var(connection_id: str) -> str:
    return f"AIRFLOW_CONN_{connection_id.upper()}"


def connection_uri(connection_id: str) -> str:
    """The connection's URI: from Airflow when it has the connection, else the environment
    variable AIRFLOW_CONN_<ID>; neither is a ValueError naming both places."""
    connection, problem = airflow_connection(connection_id)
    if connection is not None:
        return connection.get_uri()
    env_name = connection_env_var(connection_id)
    from_env = os.environ.get(env_name, "").strip()
    if from_env:
        return from_env
    raise ValueError(f"no Airflow connection {connection_id!r} ({problem}) and no environment variable "
                     f"{env_name}: define the connection, e.g. {env_name}=<uri>")
