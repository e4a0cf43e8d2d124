"""recsys_nightly: the nightly e-commerce recommendation pipeline (wiring only).

Every task runs one stage of jobs/pipeline.py (task id = stage = module name) for the run's
logical date; stages share the night's manifest and the lake, never data through XCom.
TensorFlow training tasks go to the queue TRAINING_QUEUE, so a deployment with GPU workers
routes them there by configuration (a worker listening on that queue); LocalExecutor runs
every queue. Params left at null keep the configured values
(jobs/common/config.py); set them in the Trigger form to change one run.

Before ingest, wait_for_landing waits (rescheduling, so it holds no worker slot) until the
night's clickstream export has landed; every task has a finite execution_timeout
(STAGE_TIMEOUTS), and a failed task logs one line naming itself, the night and its log.
Retries and the landing wait come from config section airflow (resolved when the file is
parsed: FUSIONREC_CONFIG and the defaults, nothing heavy).

Backfills (`airflow backfill create --dag-id recsys_nightly --from-date D1 --to-date D2
--max-active-runs 1`, or the UI's Backfill form) run the same tasks once per date, in order:
each night re-processes its own date, trains and registers its own models, never takes
`champion` from a later night's model and lists from its own; publish_serving leaves a later
night's live lists in place.
"""

import datetime as dt

from airflow.sdk import DAG, CronDataIntervalTimetable

from fusionrec_operators import FusionrecStageOperator, LandedPartitionSensor, log_task_failure
from jobs.common.config import resolve_config, trigger_params  # pydantic only, which Airflow imports anyway
from jobs.pipeline import STAGE_ORDER, STAGES  # a light module: names only, no Spark/TF/MLflow

TRAINING_QUEUE = "gpu"
# Generous but finite: the small demo night's slowest stage took under 4 minutes (README);
# a stage running past its limit is stuck, not slow, and its retry starts clean.
_ETL, _TRAIN = dt.timedelta(hours=1), dt.timedelta(hours=3)
STAGE_TIMEOUTS = {
    "ingest": _ETL, "validate": _ETL, "clean": _ETL, "denoise": _ETL, "normalize_features": _ETL,
    "train_baselines": _ETL, "train_user_encoder": _TRAIN, "train_item_encoder": _TRAIN, "fuse": _TRAIN,
    "evaluate": _ETL, "train_search_ranker": _ETL,
    "register_search_ranker": _ETL, "register_and_gate": _ETL, "batch_recommend": _ETL, "publish_serving": _ETL,
}
DEFAULT_STAGE_TIMEOUT = _ETL  # a stage added to jobs/pipeline.py without an entry above
# Retries and the landing wait: config section airflow (FUSIONREC_CONFIG; no heavy import).
ORCHESTRATION = resolve_config()["airflow"]

with DAG(
    dag_id="recsys_nightly",
    description="Clickstream → Spark ETL → TF encoders → fusion → evaluation → MLflow gate → top-K",
    # Data-interval semantics: the run that starts at 02:00 on day D+1 has logical date D and
    # processes day D (the two hours let late tracking files land). A plain "@daily" in
    # Airflow 3 would name the run after D+1, the day whose data does not exist yet.
    schedule=CronDataIntervalTimetable("0 2 * * *", timezone="UTC"),
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
    catchup=False,
    max_active_runs=1,  # nights share the MLflow champion: gate them one at a time
    tags=["fusionrec", "recsys", "nightly"],
    default_args={"retries": ORCHESTRATION["retries"], "owner": "fusionrec",
                  "retry_delay": dt.timedelta(seconds=ORCHESTRATION["retry_delay_s"]),
                  "on_failure_callback": log_task_failure},  # every task: one line naming it
    params=trigger_params(STAGE_ORDER),  # declared once with the config keys they set
    doc_md=__doc__,
) as dag:
    previous = LandedPartitionSensor(
        task_id="wait_for_landing", mode="reschedule",
        poke_interval=dt.timedelta(seconds=ORCHESTRATION["landing_poke_interval_s"]),
        timeout=dt.timedelta(seconds=ORCHESTRATION["landing_timeout_s"]),
        execution_timeout=dt.timedelta(minutes=5))  # per poke
    for stage in STAGES:
        queue = {"queue": TRAINING_QUEUE} if stage.trains else {}
        task = FusionrecStageOperator(task_id=stage.name, stage=stage.name,
                                      execution_timeout=STAGE_TIMEOUTS.get(stage.name, DEFAULT_STAGE_TIMEOUT),
                                      **queue)
        previous >> task
        previous = task
