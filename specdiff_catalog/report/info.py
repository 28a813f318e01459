"""``specdiff-catalog info``: a store's provenance, counts, flag counts and quantile levels.

Reads only the attributes, the partition table and the ``valid`` / ``flags`` arrays
(block by block), so it is quick on a store of any size. Objects count as written only
in done partitions (rows of failed or pending ones are not results), and a run that
holds the store's lock is named.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from specdiff_catalog import flags as flagbits
from specdiff_catalog.io.store import open_store
from specdiff_catalog.io.store_lock import read_lock


def _simulated(attrs: dict[str, Any]) -> bool | None:
    """Whether the store's model was trained on simulations, as its model directory says;
    None when the directory is gone or unreadable."""
    from specdiff_catalog.models.store import ModelDirectoryError, read_config

    try:
        return read_config(attrs.get("model_path", "")).provenance.simulated
    except (ModelDirectoryError, OSError):
        return None


def store_info(path: str | Path) -> dict[str, Any]:
    """A JSON-serialisable summary of an output store.

    Keys: path; provenance (software_version, model id, model_path, trained_on_simulations
    (True / False / None = unknown), model_trained_on, input, input_kind, input_fingerprint,
    created, command_line, config); counts (rows incl. padding, objects, valid = objects
    written in done partitions, partitions done / pending / failed and the failed
    partitions' messages); flags ({flag name: objects carrying it}, over those objects);
    quantile_levels; writer (the run holding the store's lock: host, pid, started, alive
    (None: another host); None when no run holds it).
    """
    store = open_store(path, mode="r")
    attrs = store.attrs
    parts = store.partitions()
    flag_counts = dict.fromkeys((f.name for f in flagbits.Flag if f != flagbits.Flag.PADDING), 0)
    n_valid = 0
    for rows, block in store.blocks(["valid", "flags"]):
        valid = store.result_mask(rows, block["valid"])
        n_valid += int(valid.sum())
        for name, count in flagbits.describe(block["flags"][valid]).items():
            if name in flag_counts:
                flag_counts[name] += count
    status = parts["status"].value_counts()
    failed = parts[parts["status"] == "failed"]
    return {
        "path": str(path),
        "provenance": {
            "software_version": attrs.get("software_version"),
            "model": attrs.get("model"),
            "model_path": attrs.get("model_path"),
            "trained_on_simulations": _simulated(attrs),
            "model_trained_on": attrs.get("model_trained_on"),
            "input": attrs.get("input"),
            "input_kind": attrs.get("input_kind"),
            "input_fingerprint": attrs.get("input_fingerprint"),
            "created": attrs.get("created"),
            "command_line": attrs.get("command_line"),
            "config": attrs.get("config"),
        },
        "counts": {
            "rows": store.n_rows(),
            "objects": int(parts["n_rows"].sum()),
            "valid": n_valid,
            "partitions": len(parts),
            **{s: int(status.get(s, 0)) for s in ("done", "pending", "failed")},
            "failed_partitions": {int(i): str(m) for i, m in failed["error"].items()},
        },
        "flags": flag_counts,
        "quantile_levels": [float(q) for q in store.read("quantile")],
        "writer": _writer(store.path),
    }


def _writer(path: Any) -> dict[str, Any] | None:
    """The run holding the store's lock: host, pid, started, alive (False: a stale lock)."""
    holder = read_lock(path)
    if holder is None:
        return None
    return {"host": holder.host, "pid": holder.pid, "started": holder.started, "alive": holder.alive()}


def _yes_no(value: bool | None) -> str:
    return {True: "yes", False: "no", None: "unknown"}[value]


def format_info(info: dict[str, Any]) -> str:
    """The ``store_info`` summary as the text ``specdiff-catalog info`` prints."""
    prov, counts = info["provenance"], info["counts"]
    model = prov["model"] or "unknown"
    lines = [
        f"store            {info['path']}",
        f"software         specdiff-catalog {prov['software_version']}",
        f"model            {model[:16]}{'...' if len(model) > 16 else ''}  ({prov['model_path']})",
        f"trained on simulations  {_yes_no(prov['trained_on_simulations'])}",
        f"input            {prov['input']} ({prov['input_kind']})",
        f"created          {prov['created']}",
        f"command line     {prov['command_line']}",
        f"run options      {json.dumps(prov['config'], sort_keys=True)}",
        f"objects          {counts['objects']} ({counts['valid']} written, "
        f"{counts['rows']} rows with padding)",
        f"partitions       {counts['partitions']}: {counts['done']} done, {counts['pending']} pending, "
        f"{counts['failed']} failed",
    ]
    lines += [f"  failed {i}: {msg}" for i, msg in counts["failed_partitions"].items()]
    if info.get("writer"):
        w = info["writer"]
        gone = " (that process is gone: a stale lock the next run takes over)" if w["alive"] is False else ""
        lines.append(
            f"being written    by a run on host {w['host']}, pid {w['pid']}, since {w['started']}{gone}"
        )
    lines.append("flags (objects)  " + ", ".join(f"{k} {v}" for k, v in info["flags"].items()))
    lines.append("quantile levels  " + ", ".join(f"{q:g}" for q in info["quantile_levels"]))
    return "\n".join(lines)
