"""The driver side: the process that runs a sweep (Ray Tune, its callbacks, the disk guard, recovery
from a torn state, sync, the sweep's lock)."""
