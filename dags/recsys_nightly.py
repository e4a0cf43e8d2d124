"""recsys_nightly: the nightly e-commerce recommendation pipeline (wiring only).

Every task runs one stage of jobs/pipeline.py (task id = stage = module name) for the run's
logical date; stages share the night's manifest and the lake, never data through XCom.
TensorFlow training tasks go to the queue TRAINING_QUEUE, so a deployment with GPU workers
routes them there by configuration (a worker listening on that queue); LocalExecutor runs
every queue. Params left at null keep the configured values
(jobs/common/config.py); set them in the Trigger form to change one run.
"""

import datetime as dt

from airflow.sdk import DAG, CronDataIntervalTimetable, Param

from fusionrec_operators import FusionrecStageOperator
from jobs.pipeline import STAGES  # a light module: names only, no Spark/TF/MLflow

TRAINING_QUEUE = "gpu"

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
    default_args={"retries": 1, "retry_delay": dt.timedelta(minutes=5), "owner": "fusionrec"},
    params={
        "window_days": Param(None, type=["null", "integer"], minimum=3, description="Days of history"),
        "top_k": Param(None, type=["null", "integer"], minimum=1, maximum=1000, description="Recommendations per user"),
        "user_encoder_epochs": Param(None, type=["null", "integer"], minimum=1),
        "item_encoder_epochs": Param(None, type=["null", "integer"], minimum=1),
        "spark_master": Param(None, type=["null", "string"], description="e.g. spark://host:7077"),
        "config_overrides": Param({}, type="object", description="Any nested config keys (jobs/common/config.py)"),
    },
    doc_md=__doc__,
) as dag:
    previous = None
    for stage in STAGES:
        queue = {"queue": TRAINING_QUEUE} if stage.trains else {}
        task = FusionrecStageOperator(task_id=stage.name, stage=stage.name, **queue)
        if previous is not None:
            previous >> task
        previous = task
