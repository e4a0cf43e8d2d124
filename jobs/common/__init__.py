"""What every layer shares: the feature contract (schema), the resolved config, lake paths,
MLflow conventions, the Spark session and its lake I/O, and spark-submit."""
