"""Prefect flows: AOI inference, training per method and data set, evaluation, deployments."""
