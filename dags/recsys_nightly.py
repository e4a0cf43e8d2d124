"""recsys_nightly: the nightly e-commerce recommendation pipeline (wiring only).

Every task runs one stage of jobs/stages.py for the run's logical date; tasks hand each
other paths and counts, never data. Params left at null keep the configured values
(jobs/config.py); set them in the Trigger form to change one run.
"""

import datetime as dt

from airflow.sdk import DAG, CronDataIntervalTimetable, Param

from fusionrec_operators import FusionrecStageOperator
from jobs.stages import STAGE_ORDER  # a light module: names only, no Spark/TF/MLflow

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
        "config_overrides": Param({}, type="object", description="Any nested config keys (jobs/config.py)"),
    },
    doc_md=__doc__,
) as dag:
    previous = None
    for stage in STAGE_ORDER:
        task = FusionrecStageOperator(task_id=stage, stage=stage)
        if previous is not None:
            previous >> task
        previous = task
