"""YOOCHOOSE clicks (RecSys Challenge 2015 format) -> the session protocol bench/models.py reads.

    python bench/yoochoose_sessions.py --input $RECSYS_SHARED_DATA/yoochoose-100k \
        --output .fusionrec/bench-data/yoochoose-100k
    python bench/models.py --data .fusionrec/bench-data/yoochoose-100k --models pop,spop,item_knn

The input folder holds `*_train_full.txt` and `*_test.txt` (TAB-separated, header
`SessionId ItemId Time`, unix seconds), already split in time: the test file is the last
day. The output is `train_sessions.txt` (one session per line, item ids 1..n in click order)
and `test_examples.tsv` (`prefix<TAB>label`: every prefix of every test session and the item
that followed), as SR-GNN's preprocessing does (Wu et al., AAAI 2019):

- events of a session in time order (ties in file order);
- items clicked fewer than --min-support times in training are dropped everywhere, so test
  targets are items a model could have learned (SR-GNN drops items seen fewer than 5 times);
- sessions left with fewer than 2 events are dropped;
- item ids are renumbered 1..n in order of first appearance in training.

Consecutive repeats are kept: returning to an item is what this data set is known for (about a
third of the next items are already in the session), and the benchmark reports it per row.
The data keeps its owners' research-use terms: write the output outside the repository's
tracked files (the default under .fusionrec/ is git-ignored).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

HEADER = ["SessionId", "ItemId", "Time"]
MIN_SUPPORT = 5


def read_clicks(path: Path) -> pd.DataFrame:
    """A clicks file's rows, checked: the header, integer ids and numeric times."""
    frame = pd.read_csv(path, sep="\t", dtype=str)
    if list(frame.columns) != HEADER:
        raise ValueError(f"{path}: the header must be {'<TAB>'.join(HEADER)}, got {'<TAB>'.join(frame.columns)}")
    converted = pd.DataFrame({"session": pd.to_numeric(frame["SessionId"], errors="coerce"),
                              "item": pd.to_numeric(frame["ItemId"], errors="coerce"),
                              "time": pd.to_numeric(frame["Time"], errors="coerce")})
    bad = converted.isna().any(axis=1)
    if bad.any():
        line = int(bad.to_numpy().argmax()) + 2  # 1-based, after the header
        raise ValueError(f"{path}:{line}: session id, item id and time must be numbers, "
                         f"got {'<TAB>'.join(frame.iloc[line - 2].astype(str))!r}")
    return converted.astype({"session": "int64", "item": "int64"})


def sessions_of(clicks: pd.DataFrame, keep_items: set) -> list[list[int]]:
    """Item sequences per session in time order, without dropped items, of length >= 2."""
    kept = clicks[clicks["item"].isin(keep_items)]
    kept = kept.sort_values(["session", "time"], kind="stable")
    sequences = kept.groupby("session", sort=True)["item"].agg(list)
    return [sequence for sequence in sequences if len(sequence) >= 2]


def convert(train: pd.DataFrame, test: pd.DataFrame, min_support: int = MIN_SUPPORT):
    """(train sessions, test examples [(prefix, label)]) with ids renumbered 1..n."""
    support = train["item"].value_counts()
    keep = set(support[support >= min_support].index)
    train_sessions = sessions_of(train, keep)
    test_sessions = sessions_of(test, keep)
    ids: dict[int, int] = {}
    for session in train_sessions:
        for item in session:
            ids.setdefault(item, len(ids) + 1)
    # An item kept by its support but left only in dropped (length-1) training sessions is
    # unknown to every model: its test events go too, and a test session may get shorter.
    test_sessions = [[ids[item] for item in session if item in ids] for session in test_sessions]
    examples = [(session[:end], session[end]) for session in test_sessions if len(session) >= 2
                for end in range(1, len(session))]
    return [[ids[item] for item in session] for session in train_sessions], examples


def write_protocol(output: Path, train_sessions: list, examples: list, source: str) -> None:
    """train_sessions.txt and test_examples.tsv into output; prints their sizes and the share of repeats."""
    output.mkdir(parents=True, exist_ok=True)
    with open(output / "train_sessions.txt", "w") as handle:
        handle.write(f"# {source}: {len(train_sessions)} sessions\n")
        handle.writelines(" ".join(map(str, session)) + "\n" for session in train_sessions)
    with open(output / "test_examples.tsv", "w") as handle:
        handle.write("prefix\tlabel\n")
        handle.writelines(f"{' '.join(map(str, prefix))}\t{label}\n" for prefix, label in examples)
    repeats = sum(label in prefix for prefix, label in examples) / max(len(examples), 1)
    print(f"{output}: {len(train_sessions)} train sessions, {len(examples)} test examples "
          f"({100 * repeats:.1f}% of the targets already in their prefix)")


def only_file(folder: Path, suffix: str) -> Path:
    found = sorted(folder.glob(f"*{suffix}"))
    if len(found) != 1:
        raise FileNotFoundError(f"{folder}: expected one *{suffix} file, found {[p.name for p in found] or 'none'}")
    return found[0]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", type=Path, required=True, help="folder with *_train_full.txt and *_test.txt")
    parser.add_argument("--output", type=Path, required=True, help="folder for train_sessions.txt, test_examples.tsv")
    parser.add_argument("--min-support", type=int, default=MIN_SUPPORT)
    args = parser.parse_args(argv)
    try:
        train_file, test_file = only_file(args.input, "_train_full.txt"), only_file(args.input, "_test.txt")
        train_sessions, examples = convert(read_clicks(train_file), read_clicks(test_file), args.min_support)
    except (OSError, ValueError) as error:
        print(f"yoochoose_sessions: {error}", file=sys.stderr)
        return 1
    write_protocol(args.output, train_sessions, examples, args.input.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
