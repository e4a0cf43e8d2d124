"""The data stages (ingest, validate, clean, denoise, normalize_features) and their helpers."""
