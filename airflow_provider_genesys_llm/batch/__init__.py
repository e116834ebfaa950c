"""Airflow-free batch engine: items in, validated completions out, results to a sink in chunks."""
