"""evaluate: every model and fusion level, ranked against the full catalog on the test day.

Output: reports/dt=<ds>/metrics.json ({model: {metric: value}}) and metrics.md (the same as
a Markdown table, best model first by the primary metric), both also logged as artifacts
of the MLflow run "evaluate <ds>", whose metrics are named <model>.<metric> (with '@'
spelled '_at_', which MLflow requires).

The cutoffs are config["evaluation"]["ks"] (default 20; e.g. [1, 5, 10, 20]); the primary
metric's cutoff is always included.
"""

from __future__ import annotations

import json
import os

from jobs.evaluation import DEFAULT_KS, evaluate_scorer, mlflow_metric_key, parse_metric
from jobs.schema import MODEL_FUSION, MODEL_ITEM_ENCODER, MODEL_USER_ENCODER, REPORTS, SPLIT_TEST

METRICS_JSON = "metrics.json"
METRICS_MARKDOWN = "metrics.md"
MODEL_NAMES = ("popularity", "user_encoder", "item_encoder", "fusion_feature", "fusion_stacking", "fusion_rrf")


def main(config: dict, ds: str) -> str:
    """Evaluate night ds's models on its test day; returns the reports/dt=<ds> directory."""
    from jobs.features import load_features, make_examples
    from jobs.fuse import load_all_scorers
    from jobs.lake import partition_path, replace_partition
    from jobs.tracking import stage_run

    primary = config["mlflow"]["primary_metric"]
    features = load_features(config, ds)
    test = make_examples(features.sequences, SPLIT_TEST, config["max_seq_len"])
    if len(test.targets) == 0:
        raise ValueError(f"no test-day examples in features/sequences/dt={ds}: nothing to evaluate")
    scorers = load_all_scorers(partition_path(config, MODEL_USER_ENCODER, ds),
                               partition_path(config, MODEL_ITEM_ENCODER, ds),
                               partition_path(config, MODEL_FUSION, ds), features.items, features.n_items)
    ks = report_ks(config)
    metrics = {name: evaluate_scorer(scorers[name], test, ks) for name in MODEL_NAMES}

    report_dir = partition_path(config, REPORTS, ds)
    with replace_partition(report_dir) as staging:
        write_report(staging, metrics, primary, n_examples=len(test.targets), ds=ds)
    with stage_run(config, "evaluate", ds):
        _log_evaluation_run(report_dir, metrics, len(test.targets))
    best = ranked_models(metrics, primary)[0]
    print(f"evaluate {ds}: {len(test.targets)} test examples; best {best} {primary}={metrics[best][primary]:.4f} "
          f"→ {report_dir}")
    return report_dir


def report_ks(config: dict) -> tuple[int, ...]:
    """The configured cutoffs, always including the primary metric's."""
    ks = config.get("evaluation", {}).get("ks", DEFAULT_KS)
    _, primary_k = parse_metric(config["mlflow"]["primary_metric"])
    return tuple(sorted({int(k) for k in ks} | {primary_k}))


def ranked_models(metrics: dict, primary: str) -> list[str]:
    """Model names, best primary metric first (ties by name, for a stable table)."""
    missing = [name for name, values in metrics.items() if primary not in values]
    if missing:
        raise ValueError(f"primary metric {primary!r} was not computed for {missing}")
    return sorted(metrics, key=lambda name: (-metrics[name][primary], name))


def write_report(directory: str, metrics: dict, primary: str, n_examples: int, ds: str) -> None:
    with open(os.path.join(directory, METRICS_JSON), "w") as handle:
        json.dump(metrics, handle, indent=2)
    with open(os.path.join(directory, METRICS_MARKDOWN), "w") as handle:
        handle.write(markdown_table(metrics, primary, n_examples, ds))


def markdown_table(metrics: dict, primary: str, n_examples: int, ds: str) -> str:
    """One row per model, sorted by the primary metric; one column per metric."""
    columns = list(next(iter(metrics.values())))
    lines = [f"Test day {ds}: {n_examples} examples, full-catalog ranking, sorted by {primary}.", "",
             "| model | " + " | ".join(columns) + " |",
             "|---|" + "---:|" * len(columns)]
    for name in ranked_models(metrics, primary):
        lines.append(f"| {name} | " + " | ".join(f"{metrics[name][column]:.4f}" for column in columns) + " |")
    return "\n".join(lines) + "\n"


def _log_evaluation_run(report_dir: str, metrics: dict, n_examples: int) -> None:
    import mlflow

    mlflow.log_metrics({mlflow_metric_key(model, metric): value
                        for model, values in metrics.items() for metric, value in values.items()})
    mlflow.log_metric("n_test_examples", n_examples)
    for file_name in (METRICS_JSON, METRICS_MARKDOWN):
        mlflow.log_artifact(os.path.join(report_dir, file_name))
    mlflow.log_figure(metrics_figure(metrics), "metrics.png")


def metrics_figure(metrics: dict):
    """Grouped bars: one group per metric, one bar per model, for the MLflow run page."""
    import matplotlib

    matplotlib.use("Agg")  # no display on workers
    from matplotlib import pyplot as plt

    names = list(metrics)
    columns = list(next(iter(metrics.values())))
    figure, axes = plt.subplots(figsize=(4 + 1.6 * len(columns), 4))
    width = 0.8 / len(names)
    for offset, name in enumerate(names):
        positions = [c + offset * width for c in range(len(columns))]
        axes.bar(positions, [metrics[name][column] for column in columns], width, label=name)
    axes.set_xticks([c + 0.4 - width / 2 for c in range(len(columns))], columns)
    axes.set_ylim(0, 1)
    axes.set_title("Holdout metrics, full-catalog ranking")
    axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    figure.tight_layout()
    plt.close(figure)
    return figure
