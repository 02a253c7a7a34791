"""Sweep service: config, CLI, Ray Tune and MLflow."""
