"""The serving stores a web shop reads: versioned lists behind an atomically switched pointer.

A night's lists are published as one version, named v<yyyymmdd>_<n> (n counts the
publications of that night, so a re-run never overwrites what is live):

- table stores (PostgreSQL, or SQLite as the laptop default): tables
  recommendations_<version> (user_id, rank, item_id, score, model_version),
  similar_items_<version> (item_id, rank, similar_item_id, score, source) and
  search_results_<version> (query_key, rank, item_id, score, model_version; query_key is
  jobs.serving.search_lists.query_key(segment, query)), written in one transaction; the one-row table serving_live names the live version and serving_versions
  keeps every version's night and when it went live. The SQL is shared; a dialect says
  only how to connect and how parameters are written.
- Redis: one key per user, <prefix>:<version>:user:<hashed user id>, one per item,
  <prefix>:<version>:item:<item id>, and one per segment and head query,
  <prefix>:<version>:query:<query_key>, each holding the JSON list of item ids best first and
  expiring after serving_store.redis_ttl_s; the pointer <prefix>:live, set after all keys
  are written; the hash <prefix>:versions keeps every version's night and switch time.

`ServingStoreReader` reads the live version as a shop would: Redis first when configured,
else the table store. jobs.etl.privacy.hash_user_id turns a shop's raw user id into the key.
"""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
import time
from pathlib import Path
from urllib.parse import urlsplit

import pandas as pd

from jobs.common import schema
from jobs.common.connections import connection_uri

# The kinds of list: recommendations per user, similar items per item, search results per
# segment and head query.
USER, ITEM, QUERY = "user", "item", "query"
# Per kind: the table's name stem, its key column and its listed-item column (the Parquet columns).
LIST_COLUMNS = {USER: (schema.RECOMMENDATIONS, schema.USER_ID, schema.ITEM_ID),
                ITEM: (schema.SIMILAR_ITEMS, schema.ITEM_ID, "similar_item_id"),
                QUERY: (schema.SEARCH_RESULTS, "query_key", schema.ITEM_ID)}
VERSION_PATTERN = re.compile(r"^v(\d{8})_(\d+)$")  # also what makes a version safe inside a table name
WRITE_CHUNK = 1000  # rows per executemany / keys per Redis pipeline


class ServingStoreError(RuntimeError):
    """A serving store could not be reached or failed; the message names the store and address."""


def version_name(ds: str, publication: int) -> str:
    return f"v{ds.replace('-', '')}_{publication}"


def version_publication(version: str) -> tuple[str, int]:
    """(yyyymmdd, n) of v<yyyymmdd>_<n>; ValueError for anything else."""
    match = VERSION_PATTERN.match(version or "")
    if not match:
        raise ValueError(f"not a serving version name: {version!r}")
    return match.group(1), int(match.group(2))


def lists_of(frame: pd.DataFrame, kind: str) -> dict[str, list[str]]:
    """{key: [listed ids by rank]} of a recommendations or similar_items table."""
    _, key_column, listed_column = LIST_COLUMNS[kind]
    ordered = frame.sort_values([key_column, "rank"])
    return {str(key): [str(value) for value in group[listed_column]]
            for key, group in ordered.groupby(key_column, sort=False)}


def address_of(uri: str) -> str:
    """host:port/database of a URI, without user or password (for messages)."""
    parts = urlsplit(uri)
    return f"{parts.hostname}:{parts.port or ''}{parts.path}"


class StoreBase:
    """What every store shares: a name for messages, and library errors turned into ours."""

    description = "serving store"
    library_errors: tuple = ()

    @contextlib.contextmanager
    def failing_as_store_error(self, action: str):
        try:
            yield
        except self.library_errors as error:
            raise ServingStoreError(f"serving store {self.description} failed while {action}: "
                                    f"{type(error).__name__}: {str(error).strip()}") from error

    def close(self) -> None:
        pass


# --- Table stores: one SQL, two dialects -------------------------------------------------

class SqliteDialect:
    name = "sqlite"
    parameter = "?"
    errors = (sqlite3.Error,)

    def __init__(self, path: str):
        self.path = path
        self.description = f"sqlite at {path}"

    def connect(self):
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        # isolation_level None: no implicit transactions; TableStore says BEGIN / COMMIT itself.
        return sqlite3.connect(self.path, isolation_level=None, timeout=30)


class PostgresDialect:
    name = "postgres"
    parameter = "%s"

    def __init__(self, uri: str, connection_id: str):
        import psycopg

        self.uri = uri
        self.errors = (psycopg.Error,)
        self.description = f"postgres at {address_of(uri)} (connection {connection_id})"

    def connect(self):
        import psycopg

        # autocommit: as for SQLite, transactions are exactly the BEGIN / COMMIT TableStore sends.
        return psycopg.connect(self.uri, autocommit=True, connect_timeout=10)


META_TABLES = (
    "CREATE TABLE IF NOT EXISTS serving_versions (version TEXT PRIMARY KEY, ds TEXT NOT NULL, "
    "created_at DOUBLE PRECISION NOT NULL, switched_at DOUBLE PRECISION)",
    "CREATE TABLE IF NOT EXISTS serving_live (id INTEGER PRIMARY KEY CHECK (id = 1), version TEXT NOT NULL, "
    "switched_at DOUBLE PRECISION NOT NULL)",
)
LIST_TABLE_COLUMNS = {
    USER: "user_id TEXT NOT NULL, rank INTEGER NOT NULL, item_id TEXT NOT NULL, score DOUBLE PRECISION NOT NULL, "
          "model_version TEXT NOT NULL, PRIMARY KEY (user_id, rank)",
    ITEM: "item_id TEXT NOT NULL, rank INTEGER NOT NULL, similar_item_id TEXT NOT NULL, "
          "score DOUBLE PRECISION NOT NULL, source TEXT NOT NULL, PRIMARY KEY (item_id, rank)",
    QUERY: "query_key TEXT NOT NULL, rank INTEGER NOT NULL, item_id TEXT NOT NULL, score DOUBLE PRECISION NOT NULL, "
           "model_version TEXT NOT NULL, PRIMARY KEY (query_key, rank)",
}
ROW_TYPES = {USER: (str, int, str, float, str), ITEM: (str, int, str, float, str), QUERY: (str, int, str, float, str)}
FRAME_COLUMNS = {USER: (schema.USER_ID, "rank", schema.ITEM_ID, "score", "model_version"),
                 ITEM: (schema.ITEM_ID, "rank", "similar_item_id", "score", "source"),
                 QUERY: ("query_key", "rank", schema.ITEM_ID, "score", "model_version")}


def table_name(kind: str, version: str) -> str:
    version_publication(version)  # only a checked version name ever enters SQL text
    return f"{LIST_COLUMNS[kind][0]}_{version}"


class TableStore(StoreBase):
    """Versioned tables and the serving_live pointer, in SQLite or PostgreSQL."""

    def __init__(self, dialect):
        self.dialect = dialect
        self.description = dialect.description
        self.library_errors = dialect.errors
        with self.failing_as_store_error("connecting"):
            self.connection = dialect.connect()
            for statement in META_TABLES:
                self._execute(statement)

    def _execute(self, sql: str, parameters=()):
        return self.connection.execute(sql.replace("?", self.dialect.parameter), parameters)

    @contextlib.contextmanager
    def _transaction(self):
        self._execute("BEGIN")
        try:
            yield
        except BaseException:
            self._execute("ROLLBACK")
            raise
        self._execute("COMMIT")

    def versions(self) -> list[dict]:
        with self.failing_as_store_error("listing versions"):
            rows = self._execute("SELECT version, ds, switched_at FROM serving_versions ORDER BY created_at").fetchall()
        return [{"version": version, "ds": ds, "switched_at": switched_at} for version, ds, switched_at in rows]

    def live_version(self) -> str | None:
        with self.failing_as_store_error("reading the live version"):
            row = self._execute("SELECT version FROM serving_live WHERE id = 1").fetchone()
        return row[0] if row else None

    def write_version(self, version: str, ds: str, frames: dict[str, pd.DataFrame]) -> None:
        """Every kind's table (empty for a kind frames lacks) and the version's registry row, in
        one transaction: all or nothing."""
        with self.failing_as_store_error(f"writing version {version}"), self._transaction():
            self._execute("INSERT INTO serving_versions (version, ds, created_at) VALUES (?, ?, ?)",
                          (version, ds, time.time()))
            for kind in LIST_COLUMNS:
                self._create_and_fill(kind, version, frames.get(kind, pd.DataFrame(columns=FRAME_COLUMNS[kind])))

    def _create_and_fill(self, kind: str, version: str, frame: pd.DataFrame) -> None:
        table = table_name(kind, version)
        self._execute(f"CREATE TABLE {table} ({LIST_TABLE_COLUMNS[kind]})")
        insert = f"INSERT INTO {table} VALUES ({', '.join('?' * len(FRAME_COLUMNS[kind]))})"
        insert = insert.replace("?", self.dialect.parameter)
        rows = [tuple(cast(value) for cast, value in zip(ROW_TYPES[kind], row))
                for row in frame.loc[:, list(FRAME_COLUMNS[kind])].itertuples(index=False)]
        cursor = self.connection.cursor()
        for start in range(0, len(rows), WRITE_CHUNK):
            cursor.executemany(insert, rows[start:start + WRITE_CHUNK])

    def list_counts(self, version: str) -> dict[str, int]:
        """{kind: lists stored} of a version."""
        counts = {}
        with self.failing_as_store_error(f"counting version {version}"):
            for kind, (_, key_column, _) in LIST_COLUMNS.items():
                sql = f"SELECT COUNT(DISTINCT {key_column}) FROM {table_name(kind, version)}"
                counts[kind] = int(self._execute(sql).fetchone()[0])
        return counts

    def read_all(self, version: str, kind: str) -> dict[str, list[str]]:
        _, key_column, listed_column = LIST_COLUMNS[kind]
        with self.failing_as_store_error(f"reading version {version}"):
            rows = self._execute(f"SELECT {key_column}, rank, {listed_column} "
                                 f"FROM {table_name(kind, version)}").fetchall()
        return lists_of(pd.DataFrame(rows, columns=[key_column, "rank", listed_column]), kind)

    def read_list(self, version: str, kind: str, key: str) -> list[str]:
        _, key_column, listed_column = LIST_COLUMNS[kind]
        with self.failing_as_store_error(f"reading version {version}"):
            rows = self._execute(f"SELECT {listed_column} FROM {table_name(kind, version)} "
                                 f"WHERE {key_column} = ? ORDER BY rank", (key,)).fetchall()
        return [row[0] for row in rows]

    def switch(self, version: str) -> None:
        """Point serving_live at version; readers see yesterday's or tonight's, never a mix."""
        now = time.time()
        with self.failing_as_store_error(f"switching to version {version}"), self._transaction():
            self._execute("INSERT INTO serving_live (id, version, switched_at) VALUES (1, ?, ?) "
                          "ON CONFLICT (id) DO UPDATE SET version = excluded.version, "
                          "switched_at = excluded.switched_at", (version, now))
            self._execute("UPDATE serving_versions SET switched_at = ? WHERE version = ?", (now, version))

    def drop(self, version: str) -> None:
        with self.failing_as_store_error(f"dropping version {version}"), self._transaction():
            for kind in LIST_COLUMNS:
                self._execute(f"DROP TABLE IF EXISTS {table_name(kind, version)}")
            self._execute("DELETE FROM serving_versions WHERE version = ?", (version,))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.connection.close()


# --- Redis ---------------------------------------------------------------------------------

class RedisStore(StoreBase):
    """One JSON list per key under <prefix>:<version>:, the pointer <prefix>:live."""

    def __init__(self, uri: str, connection_id: str, key_prefix: str, ttl_s: int):
        import redis

        self.library_errors = (redis.RedisError,)
        self.description = f"redis at {address_of(uri)} (connection {connection_id})"
        self.client = redis.Redis.from_url(uri, socket_connect_timeout=5, socket_timeout=60, decode_responses=True)
        self.prefix, self.ttl_s = key_prefix, ttl_s
        self.live_key, self.registry_key = f"{key_prefix}:live", f"{key_prefix}:versions"

    def key(self, version: str, kind: str, key: str) -> str:
        return f"{self.prefix}:{version}:{kind}:{key}"

    def versions(self) -> list[dict]:
        with self.failing_as_store_error("listing versions"):
            registry = self.client.hgetall(self.registry_key)
        records = [{"version": version, **json.loads(record)} for version, record in registry.items()]
        return sorted(records, key=lambda record: record["created_at"])

    def live_version(self) -> str | None:
        with self.failing_as_store_error("reading the live version"):
            return self.client.get(self.live_key)

    def write_version(self, version: str, ds: str, frames: dict[str, pd.DataFrame]) -> None:
        """Registered first, so that a crash half-way leaves a version the next pruning finds."""
        with self.failing_as_store_error(f"writing version {version}"):
            self._register(version, {"ds": ds, "created_at": time.time(), "switched_at": None})
            for kind, frame in frames.items():
                entries = list(lists_of(frame, kind).items())
                for start in range(0, len(entries), WRITE_CHUNK):
                    pipeline = self.client.pipeline(transaction=False)
                    for key, listed in entries[start:start + WRITE_CHUNK]:
                        pipeline.set(self.key(version, kind, key), json.dumps(listed), ex=self.ttl_s)
                    pipeline.execute()

    def _register(self, version: str, record: dict, client=None) -> None:
        (client or self.client).hset(self.registry_key, version, json.dumps(record))

    def _version_keys(self, version: str, kind: str = "*"):
        # Keys are of our own making (prefix, checked version): no glob characters before the kind.
        return self.client.scan_iter(match=f"{self.prefix}:{version}:{kind}:*", count=WRITE_CHUNK)

    def list_counts(self, version: str) -> dict[str, int]:
        with self.failing_as_store_error(f"counting version {version}"):
            return {kind: sum(1 for _ in self._version_keys(version, kind)) for kind in LIST_COLUMNS}

    def read_all(self, version: str, kind: str) -> dict[str, list[str]]:
        start = len(self.key(version, kind, ""))
        with self.failing_as_store_error(f"reading version {version}"):
            keys = list(self._version_keys(version, kind))
            values = [value for begin in range(0, len(keys), WRITE_CHUNK)
                      for value in self.client.mget(keys[begin:begin + WRITE_CHUNK])]
        return {key[start:]: json.loads(value) for key, value in zip(keys, values) if value is not None}

    def read_list(self, version: str, kind: str, key: str) -> list[str]:
        with self.failing_as_store_error(f"reading version {version}"):
            value = self.client.get(self.key(version, kind, key))
        return json.loads(value) if value else []

    def switch(self, version: str) -> None:
        with self.failing_as_store_error(f"switching to version {version}"):
            record = json.loads(self.client.hget(self.registry_key, version))
            pipeline = self.client.pipeline(transaction=True)  # MULTI: pointer and record together
            pipeline.set(self.live_key, version)
            self._register(version, {**record, "switched_at": time.time()}, client=pipeline)
            pipeline.execute()

    def drop(self, version: str) -> None:
        version_publication(version)
        with self.failing_as_store_error(f"dropping version {version}"):
            batch = []
            for key in self._version_keys(version):
                batch.append(key)
                if len(batch) >= WRITE_CHUNK:
                    self.client.unlink(*batch)
                    batch = []
            if batch:
                self.client.unlink(*batch)
            self.client.hdel(self.registry_key, version)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()


# --- Opening the configured stores -------------------------------------------------------

def open_store(config: dict, target: str):
    settings = config["serving_store"]
    if target == "sqlite":
        return TableStore(SqliteDialect(settings["sqlite_path"]))
    if target == "postgres":
        connection_id = settings["postgres_connection_id"]
        return TableStore(PostgresDialect(connection_uri(connection_id), connection_id))
    if target == "redis":
        connection_id = settings["redis_connection_id"]
        return RedisStore(connection_uri(connection_id), connection_id, settings["redis_key_prefix"],
                          settings["redis_ttl_s"])
    raise ValueError(f"unknown serving store target {target!r}")


def open_stores(config: dict, targets=None) -> list:
    """The configured stores, opened in config order (closed again if one fails to open)."""
    stores = []
    try:
        for target in targets or config["serving_store"]["targets"]:
            stores.append(open_store(config, target))
    except BaseException:
        close_all(stores)
        raise
    return stores


def close_all(stores) -> None:
    for store in stores:
        store.close()


# Where a shop looks first: Redis (fast key lookups), then the tables.
READ_ORDER = ("redis", "postgres", "sqlite")


class ServingStoreReader:
    """Reads the live version as a web shop would: the first configured store in READ_ORDER
    that answers, the next one when it is unreachable."""

    def __init__(self, stores: list):
        if not stores:
            raise ValueError("ServingStoreReader needs at least one store")
        self.stores = stores

    @classmethod
    def from_config(cls, config: dict) -> "ServingStoreReader":
        targets = config["serving_store"]["targets"]
        return cls(open_stores(config, [target for target in READ_ORDER if target in targets]))

    def recommendations(self, hashed_user_id: str) -> list[str]:
        """Item ids for a user (key: jobs.etl.privacy.hash_user_id of the shop's id), best first."""
        return self._live_list(USER, hashed_user_id)

    def similar_items(self, item_id: str) -> list[str]:
        """Similar catalog item ids for an item, best first."""
        return self._live_list(ITEM, str(item_id))

    def search_results(self, query: str, segment: str | None = None) -> list[str]:
        """Tonight's ready-made results of a head query for a user segment (jobs/serving/search_lists.py:
        a category name, or new visitors by default), best first; [] for any other query (ask the
        search model)."""
        from jobs.serving.search_lists import NEW_VISITORS, query_key

        return self._live_list(QUERY, query_key(segment or NEW_VISITORS, query))

    def _live_list(self, kind: str, key: str) -> list[str]:
        problems = []
        for store in self.stores:
            try:
                version = store.live_version()
                return store.read_list(version, kind, key) if version else []
            except ServingStoreError as error:
                problems.append(str(error))
        raise ServingStoreError("; ".join(problems))

    def close(self) -> None:
        close_all(self.stores)
