# One image for every fusionrec role (Airflow components, Spark master/workers, GPU trainer):
# the same pinned environment as `make venv`, so the cluster runs exactly the tested code.
FROM python:3.11-slim-bookworm
RUN apt-get update && apt-get install -y --no-install-recommends openjdk-17-jre-headless make git \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/fusionrec
COPY requirements.txt constraints.txt ./
# Cluster-only clients: PostgreSQL for Airflow/MLflow metadata, boto3 for MinIO artifacts.
# GPU workers: build with --build-arg TF_GPU=1 to add the CUDA build of the same TensorFlow.
ARG TF_GPU=0
# .pyc written at build time: otherwise every container (and, where PYTHONDONTWRITEBYTECODE is
# set, every process) compiles TensorFlow, MLflow and Spark's Python anew at each start.
ENV UV_COMPILE_BYTECODE=1
RUN pip install --no-cache-dir uv==0.13.8 \
    && uv pip install --system --no-cache -r requirements.txt -c constraints.txt \
    && uv pip install --system --no-cache psycopg2-binary==2.9.13 boto3==1.44.5 \
    && if [ "$TF_GPU" = 1 ]; then uv pip install --system --no-cache "tensorflow[and-cuda]==2.21.0"; fi
COPY jobs ./jobs
COPY dags ./dags
COPY plugins ./plugins
ENV PYTHONPATH=/opt/fusionrec \
    SPARK_HOME=/usr/local/lib/python3.11/site-packages/pyspark \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/fusionrec/dags \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/fusionrec/plugins \
    AIRFLOW__CORE__LOAD_EXAMPLES=False
