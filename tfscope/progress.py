"""A one-line progress bar on stderr: step, loss, steps/s. Redrawn in place on a terminal,
a plain line every few seconds otherwise (logs, CI)."""

from __future__ import annotations

import sys
import time


class ProgressBar:
    def __init__(self, label: str = "train", stream=sys.stderr, interval: float = 5.0) -> None:
        self.label, self.stream = label, stream
        self.tty = stream.isatty()
        self.interval = 0.1 if self.tty else interval
        self.last = 0.0
        self.drawn = False

    def __call__(self, p) -> None:
        now = time.monotonic()
        done = p.step >= p.total
        if not done and now - self.last < self.interval:
            return
        self.last = now
        width = 24
        filled = int(width * min(p.step, p.total) / max(p.total, 1))
        line = (f"{self.label} [{'#' * filled}{'.' * (width - filled)}] step {p.step:,}/{p.total:,}"
                f"  loss {p.loss:.3e}  {p.steps_per_second:,.0f} steps/s")
        if self.tty:
            self.stream.write("\r" + line)
            self.drawn = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False
