"""The DEBUG1 lines that enkf.assimilate and enkf.forecast report (with
`SET client_min_messages = debug1`), parsed into named figures for bench/twin_cycle.py and
bench/twin_breakdown.py. The formats are those of extension/src/twin/assimilate/mod.rs and
extension/src/twin/forecast.rs; a line in any other form is an error that quotes it, so that a
change of format stops the benchmarks instead of leaving them to report figures that are no
longer measured.

The forecast's line gives its total and its parts: reading, computing (summed over the threads,
so it can exceed the total when enkf.threads > 1) and writing."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

_ASSIMILATE = re.compile(
    r'pg_enkf assimilate of twin "(?P<twin>.*)": (?P<locations>\d+) locations, (?P<counts>\d+) counts'
    r" in (?P<seconds>[0-9.]+) s \(plan (?P<plan>[0-9.]+) s, compute (?P<compute>[0-9.]+) s\)")
_FORECAST = re.compile(
    r'pg_enkf forecast of twin "(?P<twin>.*)": (?P<locations>\d+) locations in (?P<seconds>[0-9.]+) s'
    r" \(read (?P<read>[0-9.]+) s, compute (?P<compute>[0-9.]+) s summed over threads, write (?P<write>[0-9.]+) s\)")


@dataclass
class Assimilate:
    twin: str
    locations: int
    counts: int
    # Wall time in the function, of which planning and the model and filter's arithmetic.
    seconds: float
    plan: float
    compute: float


@dataclass
class Forecast:
    twin: str
    locations: int
    # Wall time in the function up to its last write (before its provenance), of which reading
    # the analyses and counts, and writing the forecasts and targets; the models' and targets'
    # arithmetic summed over the threads.
    seconds: float
    read: float
    compute: float
    write: float


def _line(messages: list[str], prefix: str, pattern: re.Pattern) -> dict:
    lines = [m for m in messages if m.startswith(prefix)]
    if len(lines) != 1:
        raise ValueError(f"expected one DEBUG1 line starting {prefix!r}, got {len(lines)} among {messages!r}")
    m = pattern.fullmatch(lines[0])
    if m is None:
        raise ValueError(f"DEBUG1 line in an unknown format (see bench/debug_lines.py): {lines[0]!r}")
    return m.groupdict()


def _seconds(fields: dict, *names: str) -> None:
    for name in names:
        fields[name] = float(fields[name])
        if not math.isfinite(fields[name]) or fields[name] < 0:
            raise ValueError(f"{name} = {fields[name]} s in a DEBUG1 line")


def assimilate(messages: list[str]) -> Assimilate:
    """The one enkf.assimilate line among `messages`."""
    f = _line(messages, "pg_enkf assimilate", _ASSIMILATE)
    _seconds(f, "seconds", "plan", "compute")
    return Assimilate(twin=f["twin"], locations=int(f["locations"]), counts=int(f["counts"]),
                      seconds=f["seconds"], plan=f["plan"], compute=f["compute"])


def forecast(messages: list[str]) -> Forecast:
    """The one enkf.forecast line among `messages`."""
    f = _line(messages, "pg_enkf forecast", _FORECAST)
    _seconds(f, "seconds", "read", "compute", "write")
    return Forecast(twin=f["twin"], locations=int(f["locations"]), seconds=f["seconds"], read=f["read"],
                    compute=f["compute"], write=f["write"])
