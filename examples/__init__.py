"""Runnable example pipelines (`rivers materialize examples.demo:repo`)."""
