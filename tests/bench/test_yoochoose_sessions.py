"""bench/yoochoose_sessions.py: RecSys Challenge clicks -> the session protocol, on hand-made files."""

from pathlib import Path

import pytest
from bench_scripts import load_bench_script



def load_script():
    return load_bench_script("yoochoose_sessions")


def write_clicks(path: Path, rows: list[tuple]) -> None:
    path.write_text("SessionId\tItemId\tTime\n" + "".join("\t".join(map(str, row)) + "\n" for row in rows))


def test_sessions_keep_supported_items_in_time_order_and_every_test_prefix_becomes_an_example(tmp_path):
    source = tmp_path / "yoochoose"
    source.mkdir()
    # Train clicks per item: 10 x2, 11 x3, 12, 13, 99 once. With --min-support 2 only 10 and 11
    # stay: session 1 -> [10, 11], 2 -> [11, 11] (12 dropped), 3 -> [] and 4 -> [10]: dropped
    # (< 2 events). Ids by first appearance: 10 -> 1, 11 -> 2.
    write_clicks(source / "clicks_train_full.txt", [(1, 10, 1), (1, 11, 2), (2, 11, 1), (2, 12, 2), (2, 11, 3),
                                                    (3, 13, 5), (4, 99, 1), (4, 10, 2)])
    # Test: session 5 -> [11, 10, 11] = [2, 1, 2]; 6 -> [10] (12 unknown): dropped; 7 in time
    # order (the file lists 20 before 19) -> [10, 10] = [1, 1].
    write_clicks(source / "clicks_test.txt", [(5, 11, 10), (5, 10, 11), (5, 11, 12), (6, 12, 10), (6, 10, 11),
                                              (7, 10, 20), (7, 10, 19)])
    output = tmp_path / "sessions"
    assert load_script().main(["--input", str(source), "--output", str(output), "--min-support", "2"]) == 0
    train = (output / "train_sessions.txt").read_text().splitlines()
    assert train[0].startswith("# yoochoose: 2 sessions") and train[1:] == ["1 2", "2 2"]
    # Prefixes -> next item: [2] -> 1 (new), [2 1] -> 2 (repeat), [1] -> 1 (repeat).
    assert (output / "test_examples.tsv").read_text().splitlines() == ["prefix\tlabel", "2\t1", "2 1\t2", "1\t1"]


def test_a_bad_row_is_named_by_file_and_line(tmp_path, capsys):
    source = tmp_path / "broken"
    source.mkdir()
    write_clicks(source / "x_train_full.txt", [(1, 10, 1), (1, "eleven", 2)])
    write_clicks(source / "x_test.txt", [(2, 10, 1)])
    assert load_script().main(["--input", str(source), "--output", str(tmp_path / "out")]) == 1
    assert capsys.readouterr().err.strip() == (
        f"yoochoose_sessions: {source / 'x_train_full.txt'}:3: session id, item id and time must be numbers, "
        "got '1<TAB>eleven<TAB>2'")  # tabs spelled out: visible in one line
    assert not (tmp_path / "out").exists()


def test_a_folder_without_the_split_files_says_what_it_expected(tmp_path, capsys):
    assert load_script().main(["--input", str(tmp_path), "--output", str(tmp_path / "out")]) == 1
    assert "expected one *_train_full.txt file, found none" in capsys.readouterr().err


@pytest.mark.parametrize("header", ["SessionId\tItemId\n", "Session\tItem\tTime\n"])
def test_a_file_with_another_header_is_refused(tmp_path, header):
    path = tmp_path / "clicks.txt"
    path.write_text(header + "1\t2\t3\n")
    with pytest.raises(ValueError, match="the header must be SessionId<TAB>ItemId<TAB>Time"):
        load_script().read_clicks(path)
