"""register_and_gate: log tonight's fused model to MLflow, register it, and gate it.

The challenger and the current champion are both scored through their registered pyfunc
on tonight's holdout (the same examples, the same code path), so the comparison is fair
even when the champion was trained on an older vocabulary. The challenger takes alias
`champion` when there is none or when it is strictly better on the primary metric;
otherwise it gets alias `challenger` and waits for a person's review in the registry.
The champion is read from the registry each night, so a `champion` a person set by hand is
what tonight's model must beat; other aliases are a person's own and never touched. A night
older than the champion's (a backfill) never takes `champion` (gate_version), and lists from
its own version (serving_version).

A retry registers nothing twice: each version is tagged with a fingerprint of the night's
models, and an attempt that finds a version of its night with the same fingerprint (an
earlier attempt was killed after registering it) gates that version again in that version's
own MLflow run instead of registering another.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from jobs.common import schema
from jobs.common.lake import partition_path
from jobs.common.night import Night
from jobs.common.packaging import JOBS_DIR, copy_closure, module_closure
from jobs.evaluation.metrics import mlflow_metric_key, parse_metric
from jobs.serving.fused_model import TYPE_NAMES, FusedRecommenderModel, model_signature, write_serving_settings
from jobs.serving.night_models import FUSER_NAMES, VALID_METRICS_FILE, night_model_dirs

CHAMPION, CHALLENGER = "champion", "challenger"
FINGERPRINT_TAG = "night_fingerprint"
_READ_CHUNK = 1 << 20


def choose_variant(config: dict, ds: str) -> str:
    """The fusion variant to serve: the best on the validation fold (never on the test day)."""
    path = os.path.join(night_model_dirs(config, ds)["fusion"], VALID_METRICS_FILE)
    primary = config["mlflow"]["primary_metric"]
    with open(path) as handle:
        valid_metrics = json.load(handle)
    fusion_variants = {name: m for name, m in valid_metrics.items() if name in FUSER_NAMES}
    if not fusion_variants:
        raise ValueError(f"{path} lists no fusion variant")
    return max(sorted(fusion_variants), key=lambda name: fusion_variants[name][primary])


def raw_histories(examples, item_ids: np.ndarray) -> tuple[list, list]:
    """Index arrays of examples → raw item-id and event-type-name histories (padding dropped)."""
    histories, types = [], []
    for row_items, row_types in zip(examples.items, examples.types):
        keep = row_items > 0
        histories.append([item_ids[i] for i in row_items[keep]])
        types.append([TYPE_NAMES[t] for t in row_types[keep]])
    return histories, types


def raw_timestamps(examples) -> list | None:
    """Epoch seconds parallel to raw_histories' histories, rebuilt from the examples' gap
    buckets; None for examples without gaps.

    Examples keep each event's gap bucket, not its time. Setting every gap to its bucket's
    lower edge (bucket 1: 0 s; bucket b >= 2: schema.GAP_BUCKET_EDGES_SECONDS[b - 2]) lets the
    served model's features.gap_buckets give each event its bucket back, so the gate scores
    models with the gaps they get in serving. Two cases differ: the oldest event of a row has
    no previous one here (bucket 0; batch_recommend's requests send one event more for it),
    and an event right after a dropped out-of-catalog event gets the bucket of the two gaps
    summed.
    """
    gaps = getattr(examples, "gaps", None)
    if gaps is None:
        return None
    lower_edge_of_bucket = np.array([0, 0, *schema.GAP_BUCKET_EDGES_SECONDS], dtype=np.int64)  # buckets 0, 1, 2, ...
    timestamps = []
    for row_items, row_types, row_gaps in zip(examples.items, examples.types, np.asarray(gaps)):
        is_event = row_types != 0  # padding has type 0; an out-of-catalog event (item 0) does not
        seconds = np.cumsum(lower_edge_of_bucket[row_gaps[is_event]])
        timestamps.append([int(second) for second in seconds[row_items[is_event] > 0]])
    return timestamps


def request_frame(histories: list, types: list, timestamps: list | None = None):
    """The pyfunc model's input for raw histories; without timestamps the column is left out."""
    import pandas as pd

    columns = {"history": histories, "event_types": types}
    if timestamps is not None:
        columns["timestamps"] = timestamps
    return pd.DataFrame(columns)


def topk_metrics(recommended: list[list], targets: list, k: int) -> dict:
    """Recall / MRR / NDCG @k from top-k lists (a target missing from the list is a miss)."""
    from jobs.evaluation.metrics import ranking_metrics

    miss_rank = k + 1
    ranks = np.array([lst.index(t) + 1 if t in lst else miss_rank for lst, t in zip(recommended, targets)])
    return ranking_metrics(ranks, ks=(k,))


def score_model(model_uri: str, requests, targets, k: int) -> dict:
    """Top-k metrics of a registered model on request_frame rows (a champion logged before
    timestamps existed ignores that column: MLflow drops inputs its signature lacks)."""
    import mlflow

    model = mlflow.pyfunc.load_model(model_uri)
    predictions = model.predict(requests, params={"k": k})
    return topk_metrics([list(ids) for ids in predictions["item_ids"]], targets, k)


def log_bundle(config: dict, ds: str, variant: str, input_example, python_model=None, signature=None,
               extra_artifacts: dict | None = None) -> str:
    """Log the pyfunc bundle in the current run; return its model URI.

    The bundle is the night's models, items table and serving.json, plus extra_artifacts;
    python_model (default the fused recommender) answers. The model's code is the closure
    of the pyfunc's module only (MLflow copies each code path whole into the model's code/
    folder and puts that folder first on sys.path when loading), so a copy of just those
    files, in a jobs/ tree of their own, is logged.
    """
    import mlflow

    python_model = python_model or FusedRecommenderModel()
    artifacts = {**night_model_dirs(config, ds), "items": partition_path(config, schema.FEATURE_ITEMS, ds),
                 **(extra_artifacts or {})}
    with tempfile.TemporaryDirectory(prefix="fusionrec-serving-") as scratch:
        artifacts["serving"] = write_serving_settings(scratch, variant, config["max_seq_len"])
        code = copy_closure(served_code(type(python_model).__module__), JOBS_DIR, os.path.join(scratch, "code"))
        info = mlflow.pyfunc.log_model(
            name="model", python_model=python_model, artifacts=artifacts,
            code_paths=[str(code)], signature=signature or model_signature(config["top_k"]),
            input_example=input_example,
        )
    return info.model_uri


def night_fingerprint(config: dict, ds: str, variant: str, extra_folders: dict | None = None) -> str:
    """A digest of what the bundle serves: every file of the night's models and items table
    (path and bytes), of extra_folders, the variant and max_seq_len. Same models, same fingerprint."""
    digest = hashlib.sha256(json.dumps({"variant": variant, "max_seq_len": config["max_seq_len"]}).encode())
    inputs = {**night_model_dirs(config, ds), "items": partition_path(config, schema.FEATURE_ITEMS, ds),
              **(extra_folders or {})}
    for part, folder in sorted(inputs.items()):
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file():
                digest.update(f"\0{part}/{path.relative_to(folder).as_posix()}\0".encode())
                with open(path, "rb") as handle:
                    while chunk := handle.read(_READ_CHUNK):
                        digest.update(chunk)
    return digest.hexdigest()[:32]


def registered_earlier(client, name: str, ds: str, fingerprint: str):
    """The newest version of name registered for ds from the same models, or None."""
    versions = client.search_model_versions(f"name = '{name}' and tags.ds = '{ds}'")
    same = [version for version in versions if version.tags.get(FINGERPRINT_TAG) == fingerprint]
    return max(same, key=lambda version: int(version.version), default=None)


@contextlib.contextmanager
def registered_once(client, config: dict, stage: str, ds: str, name: str, variant: str, fingerprint: str,
                    log_model: Callable[[], str]) -> Iterator[tuple[object, str]]:
    """Inside the stage's MLflow run: (the run, the version of name holding tonight's models).

    A version registered for ds with the same fingerprint (an earlier attempt was killed
    after registering it) is reused, in its own run; otherwise log_model() logs the bundle in
    a new run and returns its URI, and that is registered, tagged with ds, variant and
    fingerprint. The caller gates the version inside the block, so the scores land in the run.
    """
    import mlflow

    from jobs.common.tracking import stage_run

    earlier = registered_earlier(client, name, ds, fingerprint)
    with stage_run(config, stage, ds, resume_run_id=earlier and earlier.run_id) as run:
        if earlier:
            version = str(earlier.version)
            print(f"{stage} {ds}: v{version} already holds tonight's models (registered by an earlier "
                  f"attempt, fingerprint {fingerprint}): gating it, not registering again")
        else:
            version = str(mlflow.register_model(
                log_model(), name, tags={"ds": ds, "variant": variant, FINGERPRINT_TAG: fingerprint}).version)
        yield run, version


def served_code(module: str = FusedRecommenderModel.__module__) -> list[Path]:
    """The jobs files a served model imports: the closure of its pyfunc's module."""
    return module_closure([module], JOBS_DIR)


def run(night: Night) -> dict:
    """Register tonight's fused model and give it alias champion or challenger."""
    from mlflow import MlflowClient

    from jobs.common.features import load_features, make_examples
    from jobs.common.tracking import configure_mlflow
    config, ds = night.config, night.ds

    name, primary = config["mlflow"]["registered_model"], config["mlflow"]["primary_metric"]
    # Both models are scored at the primary metric's own cutoff (ndcg@20: top 20), whatever
    # top_k the night serves: a run with top_k 7 is still gated on ndcg@20.
    k = parse_metric(primary)[1]
    features = load_features(config, ds)
    test = make_examples(features.sequences, schema.SPLIT_TEST, config["max_seq_len"])
    item_ids = np.empty(int(features.meta["n_items"]) + 1, dtype=object)
    item_ids[features.items[schema.ITEM_IDX].to_numpy()] = features.items[schema.ITEM_ID].to_numpy()
    histories, types = raw_histories(test, item_ids)
    requests = request_frame(histories, types, raw_timestamps(test))
    targets = list(item_ids[test.targets])

    variant = choose_variant(config, ds)
    configure_mlflow(config)  # before the client: a fresh worker process has no tracking URI yet
    client = MlflowClient()
    fingerprint = night_fingerprint(config, ds, variant)
    with registered_once(client, config, "register_and_gate", ds, name, variant, fingerprint,
                         lambda: log_bundle(config, ds, variant, requests.head(2))) as (run, version):
        challenger = score_model(f"models:/{name}/{version}", requests, targets, k)
        gate = gate_version(client, name, version, ds, primary, challenger,
                            lambda uri: score_model(uri, requests, targets, k))
        _describe(client, name, version, ds, variant, primary, challenger, gate)
        record_gate(version, gate.alias, variant, challenger, gate.champion)
    print(f"register_and_gate {ds}: " + gate.decision(f"v{version} ({variant})", challenger))
    return {"model_name": name, "version": int(version), "alias": gate.alias, "variant": variant,
            "challenger": challenger, "champion": gate.champion, "champion_version": gate.champion_version,
            "run_id": run.info.run_id}


def record_gate(version: str, alias: str, variant: str, challenger: dict, champion: dict | None) -> None:
    """Both models' scores and the decision, in the current MLflow run."""
    import mlflow

    mlflow.log_metrics({mlflow_metric_key("challenger", key): value for key, value in challenger.items()})
    if champion:
        mlflow.log_metrics({mlflow_metric_key("champion", key): value for key, value in champion.items()})
    mlflow.set_tags({"registered_version": version, "alias": alias, "variant": variant})


@dataclasses.dataclass(frozen=True)
class Gate:
    """What the gate decided for a registered version (gate_version)."""

    metric: str
    alias: str
    champion_version: str | None
    champion: dict | None  # its scores on tonight's requests (None for an older night: not scored)
    champion_ds: str | None  # the night the champion was trained for (version_night)
    older_night: bool  # tonight is older than the champion's night: never promoted

    def decision(self, challenger_label: str, challenger: dict) -> str:
        """One line: the challenger's metric against the champion's, and the alias it got."""
        if self.older_night:
            return (f"{challenger_label} {self.metric}={challenger[self.metric]:.4f} → {self.alias}: a night "
                    f"older than champion v{self.champion_version}'s {self.champion_ds} (e.g. a backfill) never "
                    f"replaces a model trained on later data, which has seen this night's holdout (not scored)")
        return (f"{challenger_label} {self.metric}={challenger[self.metric]:.4f} vs "
                + (f"champion v{self.champion_version} {self.champion[self.metric]:.4f}" if self.champion
                   else "no champion") + f" → {self.alias}")


def gate_version(client, name: str, version: str, ds: str, metric: str, challenger: dict, score) -> Gate:
    """Give version (registered for night ds, scored `challenger`) alias champion or challenger.

    score(model_uri) scores the current champion on the same requests. The version becomes
    champion when there is none, or when it is strictly better on metric and its night is not
    older than the champion's: a backfilled night's model never replaces one trained on later
    data (that one has seen the older night's holdout, so the comparison would not be fair
    either way). Other aliases are a person's own and never touched.
    """
    champion_version = current_champion(client, name)
    if champion_version == version:  # an earlier attempt promoted it before it was killed
        champion_version = None
    champion_ds = version_night(client, name, champion_version) if champion_version else None
    older_night = champion_ds is not None and ds < champion_ds
    # Not scored for an older night: it has seen that night's holdout, so its score would
    # flatter it, and it is not compared anyway.
    champion = score(f"models:/{name}/{champion_version}") if champion_version and not older_night else None
    promoted = champion_version is None or (not older_night and challenger[metric] > champion[metric])
    alias = CHAMPION if promoted else CHALLENGER
    client.set_registered_model_alias(name, alias, version)
    return Gate(metric, alias, champion_version, champion, champion_ds, older_night)


def serving_version(client, name: str, ds: str) -> tuple[str, str] | None:
    """(version, how it was chosen) of registered model name that night ds serves from, or None.

    The champion, except for a night older than the champion's (a backfill): that night serves
    from the newest version registered for its own ds, so that an old night's lists never come
    from a model trained on later data, and a backfilled night's partitions are what its own
    models make whatever ran since.
    """
    champion = current_champion(client, name)
    if champion is None:
        return None
    champion_ds = version_night(client, name, champion)
    if champion_ds is None or ds >= champion_ds:
        return champion, "champion"
    own = client.search_model_versions(f"name = '{name}' and tags.ds = '{ds}'")
    if not own:
        return None
    return str(max(int(v.version) for v in own)), f"registered for {ds} (the champion is {champion_ds}'s)"


def version_night(client, name: str, version: str) -> str | None:
    """The night (ds) version was trained for: its ds tag, else its run's (a version a person
    registered by hand from a night's run), else None."""
    model_version = client.get_model_version(name, version)
    if "ds" in model_version.tags:
        return model_version.tags["ds"]
    return client.get_run(model_version.run_id).data.tags.get("ds") if model_version.run_id else None


def current_champion(client, name: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, CHAMPION).version)
    except MlflowException:
        return None


def _describe(client, name, version, ds, variant, primary, challenger, gate: Gate):
    for key, value in challenger.items():
        client.set_model_version_tag(name, version, mlflow_metric_key("holdout", key), f"{value:.6f}")
    lines = [f"Fused recommender trained for {ds}; serving variant {variant}.",
             f"Holdout {primary}: {challenger[primary]:.4f}."]
    if gate.champion is not None:
        lines.append(f"Champion v{gate.champion_version} on the same holdout: {gate.champion[primary]:.4f}.")
    if gate.older_night:
        lines.append(f"Not promoted: trained for a night older than the champion's ({gate.champion_ds}).")
    client.update_model_version(name, version, description=" ".join(lines))
