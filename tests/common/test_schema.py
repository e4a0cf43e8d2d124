"""Invariants of the feature contract: event types, reason codes, feature tables."""

from jobs.common import schema


def test_event_type_ids_are_dense_and_reserve_zero_for_padding():
    assert sorted(schema.EVENT_TYPE_INDEX.values()) == list(range(1, len(schema.EVENT_TYPES) + 1))
    assert schema.N_EVENT_TYPES == len(schema.EVENT_TYPES) + 1
    assert set(schema.ITEM_EVENT_TYPES) == set(schema.EVENT_TYPES) - {schema.SEARCH}


def test_reason_codes_are_unique():
    codes = [value for name, value in vars(schema).items() if name.startswith("REASON_")]
    assert len(codes) == len(set(codes)) >= 12


def test_feature_tables_share_their_keys():
    assert schema.ITEM_IDX in schema.ITEM_FEATURE_COLUMNS and schema.ITEM_IDX in schema.SEQUENCE_COLUMNS
    assert len(set(schema.ITEM_FEATURE_COLUMNS)) == len(schema.ITEM_FEATURE_COLUMNS)
    assert sorted(schema.SPLIT_NAMES) == [schema.SPLIT_TRAIN, schema.SPLIT_VALID, schema.SPLIT_TEST]
