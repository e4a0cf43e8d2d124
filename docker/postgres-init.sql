-- fusionrec_airflow is created by POSTGRES_DB; MLflow and the serving tables get their own
-- (the same names `make stack` creates on a local PostgreSQL).
CREATE DATABASE fusionrec_mlflow OWNER fusionrec;
CREATE DATABASE fusionrec_serving OWNER fusionrec;
