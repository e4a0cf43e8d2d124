"""recsys_nightly: the nightly e-commerce recommendation pipeline (wiring only).

Every task runs one stage of jobs/pipeline.py (task id = stage = module name) for the run's
logical date; stages share the night's manifest and the lake, never data through XCom.
TensorFlow training tasks go to the queue TRAINING_QUEUE, so a deployment with GPU workers
routes them there by configuration (a worker listening on that queue); LocalExecutor runs
every queue. Params left at null keep the configured values
(jobs/common/config.py); set them in the Trigger form to change one run.
"""

import datetime as dt

from airflow.sdk import DAG, CronDataIntervalTimetable

from fusionrec_operators import FusionrecStageOperator
from jobs.common.config import trigger_params  # pydantic only, which Airflow imports anyway
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
    params=trigger_params(),  # declared once with the config keys they set
    doc_md=__doc__,
) as dag:
    previous = None
    for stage in STAGES:
        queue = {"queue": TRAINING_QUEUE} if stage.trains else {}
        task = FusionrecStageOperator(task_id=stage.name, stage=stage.name, **queue)
        if previous is not None:
            previous >> task
        previous = task
