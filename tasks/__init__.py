"""Prefect tasks: thin, named steps over geo/ and models/; the unit of retry, caching and logging."""
