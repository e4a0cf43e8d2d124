"""bench/generated_sessions.py: the generated clickstream -> the session protocol bench/models.py reads."""

import pytest
from bench_scripts import load_bench_script


def test_a_generated_world_becomes_train_sessions_and_test_prefixes_with_revisits(tmp_path, capsys):
    output = tmp_path / "generated"
    script = load_bench_script("generated_sessions")
    assert script.main(["--output", str(output), "--scale", "tiny", "--days", "4", "--min-support", "1"]) == 0
    lines = (output / "train_sessions.txt").read_text().splitlines()
    assert lines[0].startswith("# generated tiny, 4 days, seed 42:")
    train = [list(map(int, line.split())) for line in lines[1:]]
    assert train and all(len(session) >= 2 for session in train)
    known = {item for session in train for item in session}
    assert known == set(range(1, len(known) + 1))  # renumbered 1..n in order of appearance
    rows = (output / "test_examples.tsv").read_text().splitlines()
    assert rows[0] == "prefix\tlabel" and len(rows) > 1
    examples = [(list(map(int, prefix.split())), int(label)) for prefix, label in (row.split("\t") for row in rows[1:])]
    assert all(label in known and set(prefix) <= known for prefix, label in examples)
    # Sessions come back to items they viewed: a fair share of the targets are in their prefix.
    repeats = sum(label in prefix for prefix, label in examples) / len(examples)
    assert 0.1 < repeats < 0.6
    assert "of the targets already in their prefix" in capsys.readouterr().out


def test_one_date_is_refused_with_a_reason(tmp_path, capsys):
    script = load_bench_script("generated_sessions")
    with pytest.raises(SystemExit) as stop:
        script.main(["--output", str(tmp_path / "x"), "--days", "1"])
    assert stop.value.code == 2
    assert "--days must be at least 2" in capsys.readouterr().err
