"""No clock, and randomness that is a function of the change.

While a rule runs, the clock functions of ``time`` and ``datetime`` raise
:class:`ClockUnavailable` (in Wasm they would otherwise trap, failing the whole batch, since
the host links no clock), and the ``random`` module is seeded from the change's LSN before
each change, so that a replay or a re-bucketing gives the same answers. Everything is put back
afterwards, so native test runners keep their clocks.
"""

from __future__ import annotations

import contextlib
import datetime as _datetime
import random as _random
import time as _time


class ClockUnavailable(RuntimeError):
    """Raised by ``time.time()``, ``datetime.datetime.now()`` and the other clock readers while
    a rule runs: a rule must be a function of the change alone. Use the row's own timestamp
    columns, or ``change.lsn`` to order changes."""


_MESSAGE = (
    "{name}: sluice rules have no clock (a rule must be a function of the change alone); "
    "use the row's own timestamp columns"
)

_TIME_FUNCTIONS = (
    "time",
    "time_ns",
    "monotonic",
    "monotonic_ns",
    "perf_counter",
    "perf_counter_ns",
    "process_time",
    "process_time_ns",
)


def _refuse(name: str):
    def refused(*_args, **_kwargs):
        raise ClockUnavailable(_MESSAGE.format(name=name))

    return refused


class _NoClockDateTime(_datetime.datetime):
    @classmethod
    def now(cls, tz=None):
        raise ClockUnavailable(_MESSAGE.format(name="datetime.now"))

    @classmethod
    def utcnow(cls):
        raise ClockUnavailable(_MESSAGE.format(name="datetime.utcnow"))

    @classmethod
    def today(cls):
        raise ClockUnavailable(_MESSAGE.format(name="datetime.today"))


class _NoClockDate(_datetime.date):
    @classmethod
    def today(cls):
        raise ClockUnavailable(_MESSAGE.format(name="date.today"))


def seed_for(lsn: int) -> int:
    """The seed of ``random`` for a change: its LSN (0 in ``sluice eval``)."""
    return lsn


@contextlib.contextmanager
def deterministic():
    """Within it: no clock; yields ``reseed(seed)``, to call before each change."""
    saved_time = {name: getattr(_time, name) for name in _TIME_FUNCTIONS if hasattr(_time, name)}
    saved_dt = (_datetime.datetime, _datetime.date)
    saved_state = _random.getstate()
    try:
        for name in saved_time:
            setattr(_time, name, _refuse(f"time.{name}"))
        _datetime.datetime = _NoClockDateTime
        _datetime.date = _NoClockDate
        yield _random.seed
    finally:
        for name, function in saved_time.items():
            setattr(_time, name, function)
        _datetime.datetime, _datetime.date = saved_dt
        _random.setstate(saved_state)
