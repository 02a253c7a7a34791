"""The readers: what reads a sweep without running it (status, the report, MLflow's runs as frames).
They import nothing from the driver (tests/test_code_layout.py)."""
