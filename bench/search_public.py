"""Product search on the public relevance sets WANDS and Amazon ESCI: BM25 against the learned ranker.

    python bench/search_public.py --wands /path/to/WANDS/dataset \
        --esci /path/to/esci-data/shopping_queries_dataset \
        --output bench/results/search_public.json

Either data set may be left out (at least one is needed). Their files are not on these
machines and are never committed: download them and pass their folders.

- WANDS, the Wayfair ANnotation DataSet (github.com/wayfair/WANDS, folder dataset/):
  product.csv, query.csv, label.csv, TAB-separated with a header row. Each (query, product)
  pair is judged Exact (grade 2), Partial (1) or Irrelevant (0).
- Amazon Shopping Queries, ESCI (github.com/amazon-science/esci-data, folder
  shopping_queries_dataset/): shopping_queries_dataset_examples.parquet and
  shopping_queries_dataset_products.parquet. Judgments Exact (grade 3), Substitute (2),
  Complement (1), Irrelevant (0); a product is (product_id, product_locale). By default the
  "us" locale (--locale) and the published Task 1 rows (small_version == 1, --esci-version).

Protocol, the same for both. Queries are split by a stable hash of their query_id (sha256,
never Python's per-process hash()): 60% train, 20% valid (early stopping), 20% test. A
query's relevance is its judged products of grade >= 1; queries without any are left out.
A retrieved product nobody judged counts as grade 0. ESCI's own train/test column is not
used, so both sets go through the same split. Variants, both over the same candidates:

  bm25    WANDS: full retrieval over the whole catalog (jobs/search/lexical.py), the top
          --candidates in BM25 order. ESCI: the published task re-ranks each query's judged
          products, here by their BM25 score, with one index per --esci-batch-queries
          queries: the word + trigram index takes about 1 KB of memory per indexed word
          (measured on 5,000 documents), too much for all of ESCI's judged products at once.
  hybrid  LightGBM LambdaRank (jobs/search/ranker.py) on the query-item features (bm25,
          bm25_rank, word_match, brand_in_query), fitted on the train queries.

Metrics per test query (jobs/search/quality.py, gains 2^grade - 1, conservative ties), in %:
NDCG@10, MRR@10, Recall@50 with 95% bootstrap intervals over test queries. The personal
variant of bench/search.py has nothing to work with here: neither set has users.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from jobs.evaluation.metrics import bootstrap_intervals  # noqa: E402
from jobs.search.features import (ALL_FEATURES, QUERY_ITEM_FEATURES, CatalogSignals, UserProfiles,  # noqa: E402
                                  candidate_features, features_for)
from jobs.search.lexical import LexicalIndex  # noqa: E402
from jobs.search.quality import METRICS, search_quality  # noqa: E402
from jobs.search.ranker import RankingRows, SearchRanker  # noqa: E402

RESULTS_FILE = REPO / "bench" / "results" / "search_public.json"
RESAMPLES, CONFIDENCE = 1000, 0.95
GAIN = "2^grade - 1"

WANDS_GRADES = {"Exact": 2, "Partial": 1, "Irrelevant": 0}
ESCI_GRADES = {"E": 3, "S": 2, "C": 1, "I": 0}
ESCI_LABEL_NAMES = {"E": "Exact", "S": "Substitute", "C": "Complement", "I": "Irrelevant"}

WANDS_PRODUCT_COLUMNS = ("product_id", "product_name", "product_class", "category hierarchy", "product_description")
WANDS_QUERY_COLUMNS = ("query_id", "query")
WANDS_LABEL_COLUMNS = ("query_id", "product_id", "label")
ESCI_EXAMPLES_FILE = "shopping_queries_dataset_examples.parquet"
ESCI_PRODUCTS_FILE = "shopping_queries_dataset_products.parquet"
ESCI_EXAMPLE_COLUMNS = ("query_id", "query", "product_id", "product_locale", "esci_label",
                        "small_version", "large_version")
ESCI_PRODUCT_COLUMNS = ("product_id", "product_locale", "product_title", "product_brand", "product_color",
                        "product_bullet_point", "product_description")

# Share of queries per split, in hash buckets of 100, in this order.
SPLIT_PERCENT = (("train", 60), ("valid", 20), ("test", 20))
# Neither set has prices or sales, so the item features of features_for(personal=False) are
# constants here; the ranker gets only the columns that can carry signal.
HYBRID_FEATURES = tuple(name for name in features_for(personal=False) if name in QUERY_ITEM_FEATURES)
HYBRID_COLUMNS = [ALL_FEATURES.index(name) for name in HYBRID_FEATURES]
BM25_COLUMN = ALL_FEATURES.index("bm25")
ANONYMOUS_USER = 0  # the only user of an empty history: the non-personal variants see nobody


class DataError(ValueError):
    """A data set's file is missing, lacks a column, holds an unknown label, or leaves a split empty."""


# -- reading the published files ---------------------------------------------------------------

def existing_file(path: Path) -> Path:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    return path


def check_columns(path: Path, present: list[str], needed: tuple[str, ...]) -> None:
    missing = [column for column in needed if column not in present]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(map(repr, missing))}; "
                        f"the file has {', '.join(map(repr, present))}")


def read_tab_file(path: Path, needed: tuple[str, ...]) -> pd.DataFrame:
    """The needed columns of a TAB-separated file, all as text ('' where a cell is empty)."""
    existing_file(path)
    try:
        # As text: ids then match across files exactly, and an empty description stays "".
        frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: not a readable TAB-separated file with a header row ({error})") from error
    check_columns(path, list(frame.columns), needed)
    return frame[list(needed)]


def read_parquet_file(path: Path, needed: tuple[str, ...], locale: str) -> pd.DataFrame:
    """The needed columns of a parquet file's rows of one locale (the filter saves reading the others)."""
    import pyarrow
    import pyarrow.parquet

    existing_file(path)
    try:
        present = pyarrow.parquet.read_schema(path).names
    except (pyarrow.ArrowException, OSError) as error:
        raise DataError(f"{path}: not a readable parquet file ({error})") from error
    check_columns(path, present, needed)
    return pd.read_parquet(path, columns=list(needed), filters=[("product_locale", "==", locale)])


def grades_of(path: Path, column: str, labels: pd.Series, grades: dict[str, int]) -> np.ndarray:
    unknown = sorted(set(labels.unique()) - set(grades))
    if unknown:
        raise DataError(f"{path}: unknown value(s) {', '.join(map(repr, unknown[:5]))} in column {column!r} "
                        f"({int(labels.isin(unknown).sum())} rows); expected one of {', '.join(grades)}")
    return labels.map(grades).to_numpy(dtype=np.int64)


def joined(*fields) -> str:
    """One document from text fields; a missing or empty field adds nothing."""
    return " ".join(str(field) for field in fields if isinstance(field, str) and field)


@dataclasses.dataclass
class PublicSet:
    """A relevance set in the protocol's terms; an item is a row position of catalog."""
    catalog: pd.DataFrame    # document, brand, category: one row per product
    queries: pd.DataFrame    # query_id, query
    judgments: pd.DataFrame  # query_id, item, grade
    notes: dict              # counts worth reporting with the results


def read_wands_labels(path: Path) -> pd.DataFrame:
    """label.csv -> query_id, product_id, grade (Exact 2, Partial 1, Irrelevant 0)."""
    labels = read_tab_file(path, WANDS_LABEL_COLUMNS)
    return pd.DataFrame({"query_id": labels["query_id"], "product_id": labels["product_id"],
                         "grade": grades_of(path, "label", labels["label"], WANDS_GRADES)})


def read_wands(folder: Path) -> PublicSet:
    products = read_tab_file(folder / "product.csv", WANDS_PRODUCT_COLUMNS)
    queries = read_tab_file(folder / "query.csv", WANDS_QUERY_COLUMNS).drop_duplicates("query_id")
    labels = read_wands_labels(folder / "label.csv")
    catalog = pd.DataFrame({
        "document": [joined(*fields) for fields in zip(products["product_name"], products["product_class"],
                                                       products["category hierarchy"],
                                                       products["product_description"])],
        "brand": "",  # WANDS names no brand: brand_in_query is 0 for every product
        "category": products["product_class"].to_numpy(),
    })
    item_of_product = pd.Series(np.arange(len(products)), index=products["product_id"].to_numpy())
    item_of_product = item_of_product[~item_of_product.index.duplicated()]
    # A pair judged twice keeps its higher grade.
    labels = labels.groupby(["query_id", "product_id"], as_index=False, sort=False)["grade"].max()
    # A judged product missing from product.csv gets a number past the catalog: it still
    # counts as relevant, but the index can never retrieve it, so it is a miss.
    unknown = sorted(set(labels["product_id"]) - set(item_of_product.index))
    item_of_product = pd.concat([item_of_product,
                                 pd.Series(len(products) + np.arange(len(unknown)), index=unknown)])
    judgments = pd.DataFrame({"query_id": labels["query_id"],
                              "item": item_of_product[labels["product_id"]].to_numpy(),
                              "grade": labels["grade"]})
    return PublicSet(catalog, queries.reset_index(drop=True), judgments,
                     {"products": len(products), "judged_products_not_in_product_csv": len(unknown)})


def read_esci_examples(path: Path, locale: str, version: str) -> pd.DataFrame:
    """The examples of one locale and version (small: the published Task 1 rows) with their grade (E 3 .. I 0)."""
    examples = read_parquet_file(path, ESCI_EXAMPLE_COLUMNS, locale)
    examples = examples[examples[f"{version}_version"].astype(int) == 1]
    return pd.DataFrame({"query_id": examples["query_id"].to_numpy(), "query": examples["query"].to_numpy(),
                         "product_id": examples["product_id"].to_numpy(),
                         "product_locale": examples["product_locale"].to_numpy(),
                         "grade": grades_of(path, "esci_label", examples["esci_label"], ESCI_GRADES)})


def read_esci(folder: Path, locale: str, version: str) -> PublicSet:
    examples = read_esci_examples(folder / ESCI_EXAMPLES_FILE, locale, version)
    products = read_parquet_file(folder / ESCI_PRODUCTS_FILE, ESCI_PRODUCT_COLUMNS, locale)
    if examples.empty:
        raise DataError(f"{folder / ESCI_EXAMPLES_FILE}: no {version}_version rows of locale {locale!r}")
    key = ["product_id", "product_locale"]
    # The catalog is the judged products: the task re-ranks them, nothing else is ever a candidate.
    judged = examples[key].drop_duplicates().sort_values(key).reset_index(drop=True)
    described = judged.merge(products.drop_duplicates(key), on=key, how="left", indicator=True)
    catalog = pd.DataFrame({
        "document": [joined(*fields) for fields in zip(described["product_title"], described["product_brand"],
                                                       described["product_color"],
                                                       described["product_bullet_point"],
                                                       described["product_description"])],
        "brand": described["product_brand"].where(described["product_brand"].notna(), "").astype(str).to_numpy(),
        "category": "",  # ESCI has no category: category_id is the same for every product
    })
    # A pair judged twice keeps its higher grade.
    pairs = examples.groupby(["query_id", *key], as_index=False, sort=False)["grade"].max()
    judgments = pairs.merge(judged.assign(item=np.arange(len(judged))), on=key)[["query_id", "item", "grade"]]
    queries = examples.drop_duplicates("query_id")[["query_id", "query"]].reset_index(drop=True)
    return PublicSet(catalog, queries, judgments,
                     {"products": len(judged),
                      "judged_products_without_text": int((described["_merge"] == "left_only").sum())})


# -- the protocol -------------------------------------------------------------------------------

def split_of(query_id) -> str:
    """train / valid / test by a hash of the query id that is the same on every machine and run."""
    bucket = int.from_bytes(hashlib.sha256(str(query_id).encode()).digest()[:8], "big") % 100
    for split, percent in SPLIT_PERCENT:
        if bucket < percent:
            return split
        bucket -= percent
    raise AssertionError("SPLIT_PERCENT must add up to 100")


@dataclasses.dataclass
class JudgedQuery:
    query_id: object
    text: str
    split: str
    judged: np.ndarray  # every judged item, in item order
    relevance: dict     # {item: grade >= 1}, never empty


@dataclasses.dataclass
class RankedQuery:
    """A query's candidates (items, retrieval order) and their features [candidates, ALL_FEATURES]."""
    query: JudgedQuery
    candidates: np.ndarray
    features: np.ndarray

    @property
    def grades(self) -> np.ndarray:
        return np.array([self.query.relevance.get(item, 0) for item in self.candidates], dtype=np.int64)


def judged_queries(data: PublicSet) -> tuple[list[JudgedQuery], int]:
    """(the queries with at least one relevant product, how many were left out for having none)."""
    text_of = dict(zip(data.queries["query_id"], data.queries["query"]))
    kept, left_out = [], 0
    for query_id, judged in data.judgments.groupby("query_id", sort=True):
        relevance = {int(item): int(grade) for item, grade in zip(judged["item"], judged["grade"]) if grade >= 1}
        if query_id not in text_of or not relevance:  # no text to search with, or nothing to find
            left_out += 1
            continue
        kept.append(JudgedQuery(query_id, str(text_of[query_id]), split_of(query_id),
                                np.sort(judged["item"].to_numpy(dtype=np.int64)), relevance))
    return kept, left_out


def signals_of(catalog: pd.DataFrame) -> tuple[CatalogSignals, UserProfiles]:
    """The catalog's signals (rows in index order) and the profiles of one user without history.

    Neither set has prices or sales, so price_z is 0 and popularity uniform: the item
    features are constants, and HYBRID_FEATURES leaves them out. The personal features of a
    user without history are empty; the hybrid ranker does not read them either.
    """
    frame = pd.DataFrame({"item": np.arange(len(catalog)),
                          "brand_id": pd.factorize(catalog["brand"].to_numpy())[0],
                          "category_id": pd.factorize(catalog["category"].to_numpy())[0],
                          "brand": catalog["brand"].to_numpy(),
                          "price_z": 0.0, "popularity": 1.0 / len(catalog)})
    signals = CatalogSignals.from_catalog(frame, catalog["document"].tolist())
    no_history = pd.DataFrame({"user": np.zeros(0, dtype=np.int64), "item": np.zeros(0, dtype=np.int64)})
    return signals, UserProfiles.from_history(no_history, signals, n_users=1)


def ranked(query: JudgedQuery, positions: np.ndarray, bm25: np.ndarray, items: np.ndarray,
           signals: CatalogSignals, profiles: UserProfiles) -> RankedQuery:
    """positions: candidates in the index, best BM25 first; items: the same candidates as data set items."""
    if not len(positions):
        return RankedQuery(query, items, np.zeros((0, len(ALL_FEATURES))))
    return RankedQuery(query, items,
                       candidate_features(query.text, ANONYMOUS_USER, positions, bm25, signals, profiles))


def retrieve_from_catalog(data: PublicSet, queries: list[JudgedQuery], n_candidates: int) -> list[RankedQuery]:
    """WANDS: each query's top n_candidates of the whole catalog by BM25."""
    index = LexicalIndex.build(list(range(len(data.catalog))), data.catalog["document"].tolist())
    signals, profiles = signals_of(data.catalog)
    found = []
    for query in queries:
        positions, bm25 = index.search(query.text, n_candidates)
        found.append(ranked(query, positions, bm25, positions, signals, profiles))
    return found


def rerank_judged(data: PublicSet, queries: list[JudgedQuery], batch_queries: int) -> list[RankedQuery]:
    """ESCI: each query's judged products in BM25 order (ties in item order).

    The index holds the judged products of batch_queries queries at a time: the trigram
    index of all of them at once takes more memory than a workstation has. BM25's document
    frequencies and average length then come from a batch, a sample of the whole catalog;
    each query is scored within one batch, so its candidates' order is consistent.
    """
    found = []
    for start in range(0, len(queries), batch_queries):
        batch = queries[start:start + batch_queries]
        items = np.unique(np.concatenate([query.judged for query in batch]))
        catalog = data.catalog.iloc[items].reset_index(drop=True)
        index = LexicalIndex.build(items.tolist(), catalog["document"].tolist())
        signals, profiles = signals_of(catalog)
        for query in batch:
            positions = np.searchsorted(items, query.judged)
            bm25 = index.scores(query.text)[positions]
            order = np.lexsort((positions, -bm25))
            found.append(ranked(query, positions[order], bm25[order], items[positions[order]], signals, profiles))
    return found


def ranking_rows(queries: list[RankedQuery]) -> RankingRows:
    """The learnable rows: queries with a relevant candidate (a group of zeros has no pair to learn from)."""
    learnable = [query for query in queries if len(query.candidates) and query.grades.max() > 0]
    if not learnable:
        return RankingRows(np.zeros((0, len(ALL_FEATURES))), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    return RankingRows(np.vstack([query.features for query in learnable]),
                       np.concatenate([query.grades for query in learnable]),
                       np.array([len(query.candidates) for query in learnable]))


def fit_hybrid(name: str, found: list[RankedQuery]) -> SearchRanker:
    rows = {split: ranking_rows([query for query in found if query.query.split == split])
            for split in ("train", "valid")}
    for split, split_rows in rows.items():
        if not len(split_rows.groups):
            raise DataError(f"{name}: no {split} query has a relevant product among its candidates; "
                            "the hybrid ranker cannot be fitted")
    return SearchRanker.fit(rows["train"], rows["valid"], HYBRID_FEATURES, HYBRID_COLUMNS)


def contributions_on_test(test: list[RankedQuery], ranker: SearchRanker) -> dict[str, dict[str, np.ndarray]]:
    """{variant: {metric: per test query value in %}}; a query with no candidate scores 0 everywhere."""
    per_query = {"bm25": [], "hybrid": []}
    for query in test:
        if not len(query.candidates):
            for variant in per_query:
                per_query[variant].append({name: 0.0 for name in METRICS})
            continue
        scores = {"bm25": query.features[:, BM25_COLUMN], "hybrid": ranker.score(query.features[:, HYBRID_COLUMNS])}
        for variant, variant_scores in scores.items():
            per_query[variant].append(search_quality(query.candidates, variant_scores, query.query.relevance))
    return {variant: {name: 100.0 * np.array([quality[name] for quality in qualities]) for name in METRICS}
            for variant, qualities in per_query.items()}


def summary_row(contributions: dict[str, np.ndarray]) -> dict:
    intervals = bootstrap_intervals(contributions, RESAMPLES, CONFIDENCE, seed=0)
    row = {name: round(float(values.mean()), 2) for name, values in contributions.items()}
    row.update({f"{name}_ci": [round(low, 2), round(high, 2)] for name, (low, high) in intervals.items()})
    row["test_queries"] = len(next(iter(contributions.values())))
    return row


def evaluate(name: str, data: PublicSet, retrieve) -> dict:
    """The bm25 and hybrid rows and the setup of one data set; retrieve(data, queries) -> [RankedQuery]."""
    started = time.monotonic()
    queries, left_out = judged_queries(data)
    found = retrieve(data, queries)
    ranker = fit_hybrid(name, found)
    test = [query for query in found if query.query.split == "test"]
    if not test:
        raise DataError(f"{name}: no test query has a relevant product; nothing to report")
    results = {variant: summary_row(contributions)
               for variant, contributions in contributions_on_test(test, ranker).items()}
    results["setup"] = {
        **data.notes,
        "queries": {split: sum(query.split == split for query in queries) for split, _ in SPLIT_PERCENT},
        "queries_without_relevant_left_out": left_out,
        "split": "sha256(query_id) bucket of 100: < 60 train, < 80 valid, else test",
        "gain": GAIN,
        "hybrid_features": list(HYBRID_FEATURES),
        "trees": ranker.trees,
        "feature_importance_gain_share": ranker.importances(),
        "bootstrap": {"resamples": RESAMPLES, "confidence": CONFIDENCE, "over": "test queries", "seed": 0},
        "seconds": round(time.monotonic() - started, 1),
    }
    return results


def print_table(results: dict) -> None:
    print("| data set | variant | test queries | NDCG@10 | MRR@10 | Recall@50 |\n|---|---|---:|---:|---:|---:|")
    for data_set, rows in results.items():
        for variant in ("bm25", "hybrid"):
            row = rows[variant]
            print(f"| {data_set} | {variant} | {row['test_queries']:,} | "
                  + " | ".join(f"{row[name]:.2f} [{row[name + '_ci'][0]:.2f}, {row[name + '_ci'][1]:.2f}]"
                               for name in METRICS) + " |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wands", type=Path, help="folder with product.csv, query.csv, label.csv")
    parser.add_argument("--esci", type=Path, help=f"folder with {ESCI_EXAMPLES_FILE} and {ESCI_PRODUCTS_FILE}")
    parser.add_argument("--locale", default="us", help="ESCI product_locale (us, es, jp)")
    parser.add_argument("--esci-version", default="small", choices=("small", "large"),
                        help="ESCI rows: small = the published Task 1 set, large = every judged pair")
    parser.add_argument("--candidates", type=int, default=100, help="WANDS: BM25 top-N of the whole catalog")
    parser.add_argument("--esci-batch-queries", type=int, default=500,
                        help="ESCI: queries whose judged products share one index (bounds memory)")
    parser.add_argument("--output", type=Path, default=RESULTS_FILE)
    args = parser.parse_args(argv)
    if args.wands is None and args.esci is None:
        parser.error("give --wands DIR, --esci DIR or both")

    results = {}
    try:
        if args.wands is not None:
            results["wands"] = evaluate("wands", read_wands(args.wands),
                                        lambda data, queries: retrieve_from_catalog(data, queries, args.candidates))
            results["wands"]["setup"].update(
                source="github.com/wayfair/WANDS", gains=WANDS_GRADES, candidates=args.candidates,
                retrieval=f"BM25 top {args.candidates} of the whole catalog")
            print(f"wands done in {results['wands']['setup']['seconds']} s", flush=True)
        if args.esci is not None:
            results["esci"] = evaluate("esci", read_esci(args.esci, args.locale, args.esci_version),
                                       lambda data, queries: rerank_judged(data, queries, args.esci_batch_queries))
            results["esci"]["setup"].update(
                source="github.com/amazon-science/esci-data", gains=ESCI_GRADES, label_names=ESCI_LABEL_NAMES,
                locale=args.locale, version=args.esci_version, batch_queries=args.esci_batch_queries,
                retrieval="each query's judged products, re-ranked")
            print(f"esci done in {results['esci']['setup']['seconds']} s", flush=True)
    except DataError as error:
        print(f"search_public: {error}", file=sys.stderr)
        return 1

    print_table(results)
    os.makedirs(args.output.parent, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
