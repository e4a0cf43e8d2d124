"""bench/search_public.py: WANDS and ESCI in their published formats, on small hand-made files."""

import json
from pathlib import Path

import pandas as pd
import pytest
from bench_scripts import load_bench_script


# A dozen products: (name, class, brand, colour). Each query below is built from one product's
# name, so BM25 finds that product (Exact / E) and the others of its noun (Partial / S).
PRODUCTS = [("oak dining table", "Dining Tables", "norda", "brown"),
            ("walnut coffee table", "Coffee Tables", "norda", "brown"),
            ("velvet accent chair", "Accent Chairs", "lumo", "green"),
            ("leather office chair", "Office Chairs", "lumo", "black"),
            ("linen king bed", "Beds", "restwell", "white"),
            ("metal bunk bed", "Beds", "restwell", "grey"),
            ("wool area rug", "Rugs", "weavo", "red"),
            ("outdoor patio rug", "Rugs", "weavo", "blue"),
            ("brass floor lamp", "Lamps", "glowa", "gold"),
            ("ceramic table lamp", "Lamps", "glowa", "white"),
            ("glass wall mirror", "Mirrors", "reflecto", "silver"),
            ("pine bookcase shelf", "Bookcases", "norda", "natural")]


def load_script():
    return load_bench_script("search_public")


def write_tab(path: Path, header: list[str], rows: list[tuple]) -> None:
    path.write_text("\t".join(header) + "\n" + "".join("\t".join(map(str, row)) + "\n" for row in rows))


def queries_and_judgments() -> tuple[list[str], list[tuple[int, int, int]]]:
    """36 queries (3 per product) and their (query, product, grade) judgments: 2 the source, 1 same noun, 0 another."""
    queries, judgments = [], []
    for product, (name, *_) in enumerate(PRODUCTS):
        first, *_, noun = name.split()
        for text in (name, f"{first} {noun}", f"{noun} {PRODUCTS[product][3]}"):
            query = len(queries)
            queries.append(text)
            judgments.append((query, product, 2))
            judgments += [(query, other, 1) for other, (other_name, *_) in enumerate(PRODUCTS)
                          if other != product and other_name.endswith(noun)]
            judgments.append((query, (product + 6) % len(PRODUCTS), 0))
    return queries, judgments


def write_wands(folder: Path) -> None:
    folder.mkdir()
    write_tab(folder / "product.csv",
              ["product_id", "product_name", "product_class", "category hierarchy", "product_description",
               "product_features", "rating_count", "average_rating", "review_count"],
              [(100 + product, name, product_class, f"Furniture / {product_class}", f"a {colour} {name}",
                f"color:{colour}", 3, 4.5, 2) for product, (name, product_class, _, colour) in enumerate(PRODUCTS)])
    queries, judgments = queries_and_judgments()
    write_tab(folder / "query.csv", ["query_id", "query", "query_class"],
              [(query, text, "Furniture") for query, text in enumerate(queries)])
    grade_names = {2: "Exact", 1: "Partial", 0: "Irrelevant"}
    write_tab(folder / "label.csv", ["id", "query_id", "product_id", "label"],
              [(row, query, 100 + product, grade_names[grade])
               for row, (query, product, grade) in enumerate(judgments)])


def write_esci(folder: Path) -> None:
    folder.mkdir()
    queries, judgments = queries_and_judgments()
    grade_labels = {2: "E", 1: "S", 0: "I"}
    examples = pd.DataFrame([
        {"example_id": row, "query": queries[query], "query_id": query, "product_id": f"B{product:04d}",
         "product_locale": "us", "esci_label": grade_labels[grade], "small_version": 1, "large_version": 1,
         "split": "train"} for row, (query, product, grade) in enumerate(judgments)])
    # Rows the default reading must leave out: another locale, and a pair only in the large version.
    others = examples.head(4).assign(product_locale="es", esci_label="C")
    large_only = examples.head(2).assign(product_id="B9999", small_version=0, esci_label="C")
    pd.concat([examples, others, large_only]).to_parquet(folder / "shopping_queries_dataset_examples.parquet")
    pd.DataFrame([{"product_id": f"B{product:04d}", "product_title": name, "product_description": f"a {name}",
                   "product_bullet_point": f"{product_class}\nsturdy", "product_brand": brand,
                   "product_color": colour, "product_locale": locale}
                  for product, (name, product_class, brand, colour) in enumerate(PRODUCTS)
                  for locale in ("us", "es")]).to_parquet(folder / "shopping_queries_dataset_products.parquet")


@pytest.fixture(scope="module")
def script():
    return load_script()


def test_both_data_sets_report_bm25_and_hybrid_with_intervals(script, tmp_path):
    write_wands(tmp_path / "wands")
    write_esci(tmp_path / "esci")
    queries, _ = queries_and_judgments()
    assert {script.split_of(query) for query in range(len(queries))} == {"train", "valid", "test"}
    output = tmp_path / "results" / "search_public.json"
    assert script.main(["--wands", str(tmp_path / "wands"), "--esci", str(tmp_path / "esci"),
                        "--candidates", "10", "--output", str(output)]) == 0
    results = json.loads(output.read_text())
    assert set(results) == {"wands", "esci"}
    for data_set, rows in results.items():
        for variant in ("bm25", "hybrid"):
            row = rows[variant]
            assert row["test_queries"] == rows["setup"]["queries"]["test"] > 0
            for metric in ("NDCG@10", "MRR@10", "Recall@50"):
                low, high = row[f"{metric}_ci"]
                assert 0 <= low <= row[metric] <= high <= 100, (data_set, variant, metric, row)
        assert rows["setup"]["gain"] == "2^grade - 1"
        assert sum(rows["setup"]["queries"].values()) == len(queries)
    assert results["wands"]["setup"]["gains"] == {"Exact": 2, "Partial": 1, "Irrelevant": 0}
    assert results["esci"]["setup"]["gains"] == {"E": 3, "S": 2, "C": 1, "I": 0}
    # Every query names its own product: BM25 puts a relevant product first on every one.
    assert results["wands"]["bm25"]["MRR@10"] == 100.0
    # ESCI: the 12 us products judged in the small version, not B9999 (large only) nor es copies.
    assert results["esci"]["setup"]["products"] == len(PRODUCTS)


def test_wands_labels_map_to_grades(script, tmp_path):
    path = tmp_path / "label.csv"
    write_tab(path, ["id", "query_id", "product_id", "label"],
              [(0, 1, 10, "Exact"), (1, 1, 11, "Irrelevant"), (2, 2, 10, "Partial")])
    labels = script.read_wands_labels(path)
    assert labels.to_dict("list") == {"query_id": ["1", "1", "2"], "product_id": ["10", "11", "10"],
                                      "grade": [2, 0, 1]}


def test_esci_labels_map_to_grades_within_the_locale_and_version(script, tmp_path):
    path = tmp_path / "examples.parquet"
    pd.DataFrame({"example_id": [0, 1, 2, 3], "query": ["sofa"] * 4, "query_id": [7] * 4,
                  "product_id": ["A", "B", "C", "D"], "product_locale": ["us", "us", "es", "us"],
                  "esci_label": ["E", "S", "C", "I"], "small_version": [1, 0, 1, 1], "large_version": [1, 1, 1, 1],
                  "split": ["test"] * 4}).to_parquet(path)
    small_us = script.read_esci_examples(path, "us", "small")
    assert small_us[["product_id", "grade"]].to_dict("list") == {"product_id": ["A", "D"], "grade": [3, 0]}
    large_us = script.read_esci_examples(path, "us", "large")
    assert large_us[["product_id", "grade"]].to_dict("list") == {"product_id": ["A", "B", "D"], "grade": [3, 2, 0]}
    assert script.read_esci_examples(path, "es", "small")["grade"].tolist() == [1]


def replace_in_text(old: str, new: str):
    return lambda path: path.write_text(path.read_text().replace(old, new, 1))


def rewrite_parquet(change):
    return lambda path: change(pd.read_parquet(path)).to_parquet(path)


BROKEN_FILES = {  # (data set, file, how it is broken, what the error must say)
    "wands unknown label": ("wands", "label.csv", replace_in_text("Exact", "Exct"),
                            "label.csv: unknown value.*'Exct'"),
    "esci unknown label": ("esci", "shopping_queries_dataset_examples.parquet",
                           rewrite_parquet(lambda frame: frame.replace({"esci_label": {"E": "X"}})),
                           "shopping_queries_dataset_examples.parquet: unknown value.*'X'"),
    "wands missing column": ("wands", "product.csv", replace_in_text("product_class", "productclass"),
                             "product.csv: missing column.*'product_class'"),
    "esci missing column": ("esci", "shopping_queries_dataset_products.parquet",
                            rewrite_parquet(lambda frame: frame.drop(columns="product_title")),
                            "shopping_queries_dataset_products.parquet: missing column.*'product_title'"),
}


@pytest.mark.parametrize("case", BROKEN_FILES)
def test_a_broken_file_is_named_with_its_problem(script, tmp_path, case):
    data_set, file_name, break_it, message = BROKEN_FILES[case]
    {"wands": write_wands, "esci": write_esci}[data_set](tmp_path / data_set)
    break_it(tmp_path / data_set / file_name)
    with pytest.raises(ValueError, match=message):
        if data_set == "wands":
            script.read_wands(tmp_path / "wands")
        else:
            script.read_esci(tmp_path / "esci", "us", "small")


def test_a_missing_file_is_named_and_main_says_so_without_a_traceback(script, tmp_path, capsys):
    write_wands(tmp_path / "wands")
    (tmp_path / "wands" / "query.csv").unlink()
    with pytest.raises(ValueError, match="query.csv: file not found"):
        script.read_wands(tmp_path / "wands")
    (tmp_path / "esci").mkdir()
    with pytest.raises(ValueError, match="shopping_queries_dataset_examples.parquet: file not found"):
        script.read_esci(tmp_path / "esci", "us", "small")
    assert script.main(["--wands", str(tmp_path / "wands"), "--output", str(tmp_path / "out.json")]) == 1
    assert "query.csv: file not found" in capsys.readouterr().err
    assert not (tmp_path / "out.json").exists()
