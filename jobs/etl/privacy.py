"""Pseudonymization: keyed hashes for user ids and masked search text.

Nothing that identifies a person leaves the clean stage in clear text:

- user_id becomes HMAC-SHA256(key, utf-8 of the id) as 64 lowercase hex characters. A keyed
  hash, not a plain one: anyone can hash a list of guessed e-mail addresses or customer
  numbers, but without the key the hashes cannot be reversed or matched. The same key gives
  the same hash every night, so histories still join across days; keyed_hash (Spark, for
  the lake) and hash_user_id (plain Python, for serving-side lookups in the recommendations
  table) give identical results.
- query (free search text) is tokenized with e-mail addresses and long numbers masked, or
  dropped (config privacy.query_text).

The key is secret text; its UTF-8 bytes (surrounding whitespace stripped) are the HMAC key,
wherever it comes from (see resolve_user_id_key). It is read at run time and never stored
in the config dict, which every job logs. One caveat: keyed_hash puts the padded key blocks
into the Spark plan as literals, so Spark event logs or printed plans of the clean job must
be treated as secret (the embedded config turns the Spark UI off and writes no event log).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import tempfile
from pathlib import Path

from pyspark.sql import Column
from pyspark.sql import functions as F

from jobs.common.connections import airflow_connection

# --- The key ---------------------------------------------------------------------------

KEY_FILE_RANDOM_BYTES = 32  # written as 64 hex characters


def resolve_user_id_key(config: dict) -> bytes:
    """The user-id hashing key from the first place that has one, in this order:

    1. the environment variable config["privacy"]["key_env"];
    2. the password of the Airflow connection config["privacy"]["key_connection_id"]
       (Airflow not importable, or no way to reach its connections, counts as not found);
    3. the file config["privacy"]["key_file"]; if it does not exist and
       config["privacy"]["create_key_file"] is true, it is created once with 32 random bytes
       as hex, readable by its owner only (0600), and every later run reuses it.

    No key anywhere is a ValueError that names all three places.
    """
    settings = config["privacy"]
    env_name, connection_id, key_file = settings["key_env"], settings["key_connection_id"], settings["key_file"]
    from_env = os.environ.get(env_name, "").strip()
    if from_env:
        return from_env.encode("utf-8")
    from_connection, connection_problem = _key_from_airflow_connection(connection_id)
    if from_connection:
        return from_connection.encode("utf-8")
    from_file = _key_from_file(Path(key_file), create=_flag("privacy.create_key_file", settings["create_key_file"]))
    if from_file:
        return from_file.encode("utf-8")
    raise ValueError(
        f"no key for hashing user ids: set the environment variable {env_name}, or the password of "
        f"the Airflow connection {connection_id!r} ({connection_problem}), or write the key into "
        f"{key_file} (or set privacy.create_key_file true to have a random one created there)")


def _key_from_airflow_connection(connection_id: str) -> tuple[str | None, str]:
    """(the connection's password or None, why there was none: for the error message).

    Airflow registers the password with its log masker when it hands the connection out."""
    connection, problem = airflow_connection(connection_id)
    if connection is None:
        return None, problem
    password = (connection.password or "").strip()
    return (password or None), "defined but its password is empty"


def _flag(name: str, value) -> bool:
    """A boolean setting; the text forms too, so an environment variable can carry it
    (bool("false") would be True and silently create a key on a cluster)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise ValueError(f"config {name} must be true or false, got {value!r}")


def _key_from_file(key_file: Path, *, create: bool) -> str | None:
    if key_file.exists():
        text = key_file.read_text(encoding="utf-8").strip()
        if not text:
            raise ValueError(f"the user-id key file {key_file} is empty: delete it to have a new key "
                             f"created, or write the key into it")
        return text
    if not create:
        return None
    key_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Write a private temporary file, then link it into place: os.link fails if the key
    # file appeared meanwhile (two tasks starting at once), and then that key is used, so
    # every process ends up with the same key and no reader ever sees a half-written file.
    handle, temporary = tempfile.mkstemp(dir=key_file.parent, prefix=".user_id_key.")  # mode 0600
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(secrets.token_hex(KEY_FILE_RANDOM_BYTES) + "\n")
        try:
            os.link(temporary, key_file)
        except FileExistsError:
            pass
    finally:
        os.unlink(temporary)
    return key_file.read_text(encoding="utf-8").strip()


# --- Keyed hashes ------------------------------------------------------------------------

SHA256_BLOCK_BYTES = 64
_INNER_PAD_BYTE, _OUTER_PAD_BYTE = 0x36, 0x5C


def hash_user_id(raw_user_id: str, key: bytes) -> str:
    """HMAC-SHA256(key, utf-8 of the id) as 64 lowercase hex characters (what keyed_hash gives)."""
    _check_key(key)
    return hmac.new(key, raw_user_id.encode("utf-8"), hashlib.sha256).hexdigest()


def keyed_hash(column: Column | str, key: bytes) -> Column:
    """HMAC-SHA256(key, utf-8 of the value) as 64 lowercase hex characters; null stays null.

    Pure Spark SQL (no Python UDF, so no rows travel to Python workers), following RFC 2104:
    HMAC = H((K xor opad) || H((K xor ipad) || m)) with K the key zero-padded to the 64-byte
    SHA-256 block (a longer key is hashed first). The two padded blocks are computed here.
    """
    inner_pad, outer_pad = _hmac_pad_blocks(key)
    message = F.encode(column, "UTF-8")
    # concat of a null is null, so a null id stays null all the way through.
    inner_digest = F.unhex(F.sha2(F.concat(F.lit(inner_pad), message), 256))
    return F.sha2(F.concat(F.lit(outer_pad), inner_digest), 256)


def _hmac_pad_blocks(key: bytes) -> tuple[bytes, bytes]:
    _check_key(key)
    if len(key) > SHA256_BLOCK_BYTES:
        key = hashlib.sha256(key).digest()
    block = key.ljust(SHA256_BLOCK_BYTES, b"\0")
    return (bytes(byte ^ _INNER_PAD_BYTE for byte in block),
            bytes(byte ^ _OUTER_PAD_BYTE for byte in block))


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes) or not key:
        raise ValueError("the user-id hashing key must be non-empty bytes")


# --- Search text ---------------------------------------------------------------------------

QUERY_TOKENIZE, QUERY_DROP = "tokenize", "drop"
QUERY_TEXT_MODES = (QUERY_TOKENIZE, QUERY_DROP)
EMAIL_TOKEN, NUMBER_TOKEN = "<email>", "<number>"
MIN_NUMBER_DIGITS = 5  # phone, card, order and customer numbers; "iphone 15", "size 42" stay

# Java regular expressions (Spark evaluates them), applied to the lowercased text.
_EMAIL = r"[\p{L}\p{N}._%+-]+@[\p{L}\p{N}-]+(?:\.[\p{L}\p{N}-]+)+"
# Digits that spaces, dashes, dots, slashes or brackets join into one number, standing
# alone: "+1 (555) 123-4567" or "4111 1111 1111 1111" would otherwise split into tokens
# that are each too short to be masked.
_SEPARATED_NUMBER = (r"(?<![\p{L}\p{N}])\p{Nd}(?:[\s\-./()]{0,2}\p{Nd}){%d,}(?![\p{L}\p{N}])"
                     % (MIN_NUMBER_DIGITS - 1))
_TOKEN = rf"{EMAIL_TOKEN}|{NUMBER_TOKEN}|[\p{{L}}\p{{N}}]+"


def check_query_mode(mode: str) -> str:
    if mode not in QUERY_TEXT_MODES:
        raise ValueError(f"config privacy.query_text: unknown mode {mode!r}; known: {', '.join(QUERY_TEXT_MODES)}")
    return mode


def masked_query(column: Column | str, mode: str) -> Column:
    """Search text with personal data removed.

    "tokenize": lowercase word tokens (runs of letters and digits) joined by single spaces;
    an e-mail address becomes <email>, and a token with 5 or more digits - or digits joined
    by separators into one number - becomes <number>:
        "Mail JANE.DOE@example.com re order 12345678!"  -> "mail <email> re order <number>"
        "call +1 (555) 123-4567"                          -> "call <number>"
        "T-Shirt XL, iPhone 15"                           -> "t shirt xl iphone 15"
    Text without any token (and null) gives null.
    "drop": always null.
    """
    if check_query_mode(mode) == QUERY_DROP:
        return F.lit(None).cast("string")
    text = F.lower(column if isinstance(column, Column) else F.col(column))
    text = F.regexp_replace(text, _EMAIL, f" {EMAIL_TOKEN} ")
    text = F.regexp_replace(text, _SEPARATED_NUMBER, f" {NUMBER_TOKEN} ")
    tokens = F.regexp_extract_all(text, F.lit(_TOKEN), 0)

    def mask_long_number(token: Column) -> Column:
        digits = F.length(F.regexp_replace(token, r"[^\p{Nd}]", ""))
        return F.when(digits >= MIN_NUMBER_DIGITS, F.lit(NUMBER_TOKEN)).otherwise(token)

    masked = F.transform(tokens, mask_long_number)
    return F.when(F.size(tokens) > 0, F.array_join(masked, " "))
