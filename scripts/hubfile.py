"""Checks a FluSight submission file (the rows of enkf.hub_submission, as its CSV holds them)
against the hub's task definitions (data/flusight/hub-tasks.json) with the hub's own rules: the
columns, every task id among the task's values (reference date, location, horizon, target end
date), output types the target allows, every required output type id and no other, value ranges,
quantiles monotone, whole counts, pmfs summing to 1, samples: 100 ids per location, each id at
every horizon, at most the allowed length, whole and non-negative.

Used by the tests (tests/twin/test_targets.py) and by the demo, which writes the submission of
its last reference date and checks it. The peak week's ids are the Saturdays of the reference
date's own season: a task file lists those of its round's season only, so for a reference date
outside that season they are checked to be consecutive Saturdays instead.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

COLUMNS = {"reference_date", "target", "horizon", "target_end_date", "location", "output_type", "output_type_id", "value"}
COUNT_TARGETS = ("wk inc flu hosp", "peak inc flu hosp")
PEAK_WEEK = "peak week inc flu hosp"


def model_tasks(path: Path) -> dict[str, dict]:
    """The hub's model tasks of the first round, by target name."""
    tasks = json.loads(Path(path).read_text())["rounds"][0]["model_tasks"]
    return {t["task_ids"]["target"]["optional"][0]: t for t in tasks}


def problems(rows: list[dict], by_target: dict[str, dict]) -> list[str]:
    """Everything in `rows` the hub would refuse, as sentences (empty: a valid file)."""
    out: list[str] = []
    if not rows:
        return ["the file is empty"]
    if set(rows[0]) != COLUMNS:
        return [f"columns {sorted(rows[0])}, not {sorted(COLUMNS)}"]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        task = by_target.get(r["target"])
        if task is None:
            out.append(f"target {r['target']!r} is not a task of the hub")
            continue
        ids = task["task_ids"]
        if r["reference_date"] not in ids["reference_date"]["optional"]:
            out.append(f"reference date {r['reference_date']} is not one of the round's")
        if r["location"] not in ids["location"]["optional"]:
            out.append(f"location {r['location']!r} is not one of the hub's")
        horizons = ids["horizon"]["optional"]
        if horizons is None:
            if r["horizon"] != "" or r["target_end_date"] != "":
                out.append(f"{r['target']} has no horizon or target end date: {r}")
        else:
            h = int(r["horizon"])
            if h not in horizons:
                out.append(f"horizon {h} of {r['target']} is not among {horizons}")
            end = dt.date.fromisoformat(r["reference_date"]) + dt.timedelta(days=7 * h)
            if r["target_end_date"] != end.isoformat():
                out.append(f"target end date {r['target_end_date']} is not reference date + {h} weeks")
        if r["output_type"] not in task["output_type"]:
            out.append(f"output type {r['output_type']!r} is not allowed for {r['target']}")
            continue
        key = (r["location"], r["target"], r["output_type"], r["horizon"] if r["output_type"] != "sample" else "")
        groups.setdefault(key, []).append(r)
    for (location, target, output_type, horizon), group in groups.items():
        out.extend(_group_problems(location, target, output_type, horizon, group, by_target[target]))
    return out


def _group_problems(location, target, output_type, horizon, group, task) -> list[str]:
    spec = task["output_type"][output_type]
    where = f"{location} {target} {output_type} {horizon}".rstrip()
    ids = [g["output_type_id"] for g in group]
    try:
        values = [float(g["value"]) for g in group]
    except ValueError:
        return [f"{where}: a value is not a number"]
    if any(math.isnan(v) for v in values):
        return [f"{where}: a value is missing"]
    out = []
    if output_type == "sample":
        params = spec["output_type_id_params"]
        distinct = set(ids)
        if not params["min_samples_per_task"] <= len(distinct) <= params["max_samples_per_task"]:
            out.append(f"{where}: {len(distinct)} samples, not {params['min_samples_per_task']}..{params['max_samples_per_task']}")
        if any(len(i) > params["max_length"] for i in distinct):
            out.append(f"{where}: a sample id is longer than {params['max_length']} characters")
        per_horizon: dict[str, set] = {}
        for g in group:
            per_horizon.setdefault(g["horizon"], set()).add(g["output_type_id"])
        if any(s != distinct for s in per_horizon.values()):
            out.append(f"{where}: a sample id is missing at some horizon")
        if any(v != int(v) or v < spec["value"]["minimum"] for v in values):
            out.append(f"{where}: samples must be whole and at least {spec['value']['minimum']}")
        return out
    if len(ids) != len(set(ids)):
        out.append(f"{where}: an output type id appears twice")
    required = [str(x) for x in spec["output_type_id"]["required"]]
    if target == PEAK_WEEK and not set(ids) & set(required):
        # Another season than the round's: its own Saturdays, consecutive.
        days = sorted(dt.date.fromisoformat(i) for i in ids)
        if any(d.weekday() != 5 for d in days) or any((b - a).days != 7 for a, b in zip(days, days[1:])):
            out.append(f"{where}: the peak weeks are not the season's consecutive Saturdays")
    elif sorted(ids) != sorted(required):
        out.append(f"{where}: ids differ from the required ones: {sorted(set(ids) ^ set(required))}")
    if any(v < spec["value"]["minimum"] for v in values):
        out.append(f"{where}: a value is below {spec['value']['minimum']}")
    if "maximum" in spec["value"] and any(v > spec["value"]["maximum"] for v in values):
        out.append(f"{where}: a value is above {spec['value']['maximum']}")
    if output_type == "pmf" and not math.isclose(sum(values), 1.0, abs_tol=1e-9):
        out.append(f"{where}: the pmf sums to {sum(values)}")
    if output_type == "quantile":
        ordered = [v for _, v in sorted(zip(map(float, ids), values))]
        if any(a > b for a, b in zip(ordered, ordered[1:])):
            out.append(f"{where}: quantiles decrease")
        if target in COUNT_TARGETS and any(v != int(v) for v in values):
            out.append(f"{where}: counts must be whole numbers")
    return out
