"""jobs/etl/privacy.py: HMAC in Spark SQL equals Python's hmac, where the key comes from, masked search text."""

import copy
import hashlib
import hmac
import os
import stat
import sys

import pytest
from pyspark.testing import assertDataFrameEqual

from jobs.etl import privacy

# RFC 4231, test case 2: a published vector, independent of both implementations under test.
RFC_KEY, RFC_DATA = b"Jefe", "what do ya want for nothing?"
RFC_HMAC = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"

VALUES = ["u1", "", "Zoë 用户 🙂", "x" * 100, RFC_DATA, None]  # 100 bytes: longer than one block
KEYS = [RFC_KEY, b"k" * 64, bytes(range(256)) * 2]  # short, exactly one block, longer (hashed first)

CONNECTION_ID = "fusionrec_test_user_id_key"
CONNECTION_ENV = "AIRFLOW_CONN_FUSIONREC_TEST_USER_ID_KEY"  # Airflow's environment secrets backend
KEY_ENV = "FUSIONREC_TEST_USER_ID_KEY"


def python_hmac(value, key):
    return None if value is None else hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()


@pytest.mark.parametrize("key", KEYS, ids=["4-byte", "64-byte", "512-byte"])
def test_keyed_hash_in_spark_equals_python_hmac(spark, key):
    frame = spark.createDataFrame([(value,) for value in VALUES], "value string")

    hashed = frame.select("value", privacy.keyed_hash("value", key).alias("hashed"))

    assertDataFrameEqual(hashed, spark.createDataFrame(
        [(value, python_hmac(value, key)) for value in VALUES], "value string, hashed string"))


def test_both_implementations_give_the_published_rfc_4231_value(spark):
    frame = spark.createDataFrame([(RFC_DATA,)], "value string")
    assert frame.select(privacy.keyed_hash("value", RFC_KEY)).first()[0] == RFC_HMAC
    assert privacy.hash_user_id(RFC_DATA, RFC_KEY) == RFC_HMAC


def test_an_empty_key_is_refused():
    with pytest.raises(ValueError, match="non-empty bytes"):
        privacy.hash_user_id("u1", b"")
    with pytest.raises(ValueError, match="non-empty bytes"):
        privacy.keyed_hash("value", "text, not bytes")


# --- Where the key comes from ------------------------------------------------------------

@pytest.fixture()
def key_config(tmp_path, monkeypatch):
    """Privacy settings pointing at a test env var, connection and a key file under tmp_path."""
    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.delenv(CONNECTION_ENV, raising=False)
    return {"privacy": {"key_env": KEY_ENV, "key_connection_id": CONNECTION_ID,
                        "key_file": str(tmp_path / "secrets" / "user_id.key"), "create_key_file": True,
                        "query_text": "tokenize"}}


def define_connection(monkeypatch, password):
    monkeypatch.setenv(CONNECTION_ENV, f'{{"conn_type": "generic", "password": "{password}"}}')


def test_key_order_is_environment_then_connection_then_file(key_config, monkeypatch):
    key_file = key_config["privacy"]["key_file"]
    os.makedirs(os.path.dirname(key_file))
    with open(key_file, "w") as handle:
        handle.write("from-the-file\n")
    monkeypatch.setenv(KEY_ENV, " from-the-environment ")
    define_connection(monkeypatch, "from-the-connection")
    before = copy.deepcopy(key_config)

    assert privacy.resolve_user_id_key(key_config) == b"from-the-environment"  # whitespace stripped
    monkeypatch.delenv(KEY_ENV)
    assert privacy.resolve_user_id_key(key_config) == b"from-the-connection"
    monkeypatch.delenv(CONNECTION_ENV)
    assert privacy.resolve_user_id_key(key_config) == b"from-the-file"
    assert key_config == before  # the key never enters the config


def test_a_connection_without_password_or_unreachable_airflow_falls_through_to_the_file(key_config, monkeypatch):
    define_connection(monkeypatch, "")
    key = privacy.resolve_user_id_key(key_config)
    assert len(key) == 64

    monkeypatch.setitem(sys.modules, "airflow.sdk", None)  # import airflow.sdk -> ImportError
    assert privacy.resolve_user_id_key(key_config) == key


def test_a_failing_connection_lookup_counts_as_not_found(key_config, monkeypatch):
    from airflow.sdk import Connection

    def no_metadata_db(conn_id):
        raise RuntimeError("no such table: connection")

    monkeypatch.setattr(Connection, "get", no_metadata_db)
    key_config["privacy"]["create_key_file"] = False
    with pytest.raises(ValueError, match=f"{CONNECTION_ID}' \\(lookup failed: RuntimeError\\)"):
        privacy.resolve_user_id_key(key_config)


def test_key_file_is_created_once_private_and_reused(key_config):
    key_file = key_config["privacy"]["key_file"]

    first = privacy.resolve_user_id_key(key_config)

    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert len(first) == 64 and int(first, 16) >= 0  # 32 random bytes as hex
    assert privacy.resolve_user_id_key(key_config) == first
    assert os.listdir(os.path.dirname(key_file)) == ["user_id.key"]  # no temporary file left


@pytest.mark.parametrize("create_key_file", [False, "false"])  # text, as an environment variable gives it
def test_no_key_anywhere_names_all_three_places(key_config, create_key_file):
    key_config["privacy"]["create_key_file"] = create_key_file
    key_file = key_config["privacy"]["key_file"]

    with pytest.raises(ValueError) as error:
        privacy.resolve_user_id_key(key_config)

    message = str(error.value)
    assert KEY_ENV in message and f"'{CONNECTION_ID}' (not defined)" in message and key_file in message
    assert not os.path.exists(key_file)


def test_a_create_key_file_setting_that_is_not_a_boolean_is_refused(key_config):
    key_config["privacy"]["create_key_file"] = "sometimes"
    with pytest.raises(ValueError, match="privacy.create_key_file must be true or false, got 'sometimes'"):
        privacy.resolve_user_id_key(key_config)


def test_an_empty_key_file_is_an_error_not_an_empty_key(key_config):
    key_file = key_config["privacy"]["key_file"]
    os.makedirs(os.path.dirname(key_file))
    open(key_file, "w").close()
    with pytest.raises(ValueError, match="key file .* is empty"):
        privacy.resolve_user_id_key(key_config)


# --- Search text ----------------------------------------------------------------------------

QUERIES = [
    ("Red Shoes", "red shoes"),
    ("  Mail JANE.Doe+shop@Example.co.uk re order #12345678!  ", "mail <email> re order <number>"),
    ("call +1 (555) 123-4567 today", "call <number> today"),  # no group alone has 5 digits
    ("card 4111 1111 1111 1111", "card <number>"),
    ("iPhone 15, size 42 T-Shirt", "iphone 15 size 42 t shirt"),  # short numbers stay
    ("1234 cables", "1234 cables"),  # 4 digits stay
    ("ord98765x", "<number>"),  # a token with 5 digits among letters
    ("Öl für Küche", "öl für küche"),
    ("?!", None),  # no token left
    ("", None),
    (None, None),
]


def test_tokenize_masks_emails_and_long_numbers(spark):
    frame = spark.createDataFrame([(text,) for text, _ in QUERIES], "query string")

    masked = frame.select("query", privacy.masked_query("query", "tokenize").alias("masked"))

    assertDataFrameEqual(masked, spark.createDataFrame(QUERIES, "query string, masked string"))


def test_drop_removes_the_text_and_unknown_modes_are_refused(spark):
    frame = spark.createDataFrame([("red shoes",), (None,)], "query string")
    assert [row[0] for row in frame.select(privacy.masked_query("query", "drop")).collect()] == [None, None]
    with pytest.raises(ValueError, match="privacy.query_text: unknown mode 'hash'; known: tokenize, drop"):
        privacy.masked_query("query", "hash")
