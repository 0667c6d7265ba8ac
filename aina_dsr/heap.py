"""The running desk's garbage collector: settled once started, collecting less often.

A running desk keeps many objects for good (modules, models, compiled
statements, the bot's and the channels' state) and makes many that live for
one update. CPython's full collections look at every object it tracks: in
the Telegram benchmark at 1,000 dialogs (BENCHMARKS.md section 6, fifth
session) 16 of them took 4.8 s of the desk's 40 s of CPU and up to 364 ms
each, the whole loop stopped meanwhile: the longest waits of people at 100
updates/s. So once the desk is built, what it holds is frozen out of the
collector's sight (``gc.freeze``), and young objects are collected in larger
batches, so that fewer of an update's objects live long enough to be looked
at again in the older generations.
"""

from __future__ import annotations

import gc

# Objects allocated, less freed, before the youngest generation is collected
# (CPython's default is 700); the older two keep CPython's own counts.
YOUNG_THRESHOLD = 10_000


def settle_heap() -> None:
    """Call once the process is built, before it serves: collects, freezes, sets the pace."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
