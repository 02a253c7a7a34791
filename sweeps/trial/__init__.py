"""The trial side: what runs inside a Ray trial (or `vaesweep train`): the engine, the trainable, the
run directory. It imports nothing from the driver or the readers (tests/test_code_layout.py)."""
