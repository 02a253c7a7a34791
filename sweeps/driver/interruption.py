"""SIGINT and SIGTERM to the driver: the first stops the sweep gracefully, a second at once."""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Iterator
from typing import Any

from sweeps import environment


class Interruption:
    """The first signal asks Tune to stop gracefully (it saves the experiment state, stops the trials and
    returns), a second raises KeyboardInterrupt at once. Tune's own SIGINT handler is switched off so that
    both signals take the same path: Tune's stop handler, which it always installs on SIGUSR1 while it
    runs."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        environment.tune_leaves_sigint_alone()

    def install(self) -> None:
        """(Re)install the handlers: ``ray.init`` installs a SIGTERM handler of its own."""
        for sig in self.previous:
            signal.signal(sig, self.handle)

    @contextlib.contextmanager
    def handling(self) -> Iterator["Interruption"]:
        """The handlers installed inside, the previous ones restored after."""
        self.install()
        try:
            yield self
        finally:
            for sig, handler in self.previous.items():
                signal.signal(sig, handler)

    def handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            print(f"vaesweep: {signal.Signals(signum).name} again: stopping at once (the sweep resumes from the "
                  "state Ray saved last)", file=sys.stderr)
            raise KeyboardInterrupt
        self.signum = signum
        print(f"vaesweep: {signal.Signals(signum).name} received: stopping the sweep and saving its state "
              "(press Ctrl-C again to stop at once)", file=sys.stderr)
        tune_stop = signal.getsignal(signal.SIGUSR1)
        if not callable(tune_stop):  # Tune is not running yet (or any more): nothing to save
            raise KeyboardInterrupt
        tune_stop(signum, frame)
