#!/usr/bin/env python
"""Run the CLI on the hostile inputs of issue 13 and print what a user sees: exit status, the
last line on stderr, whether a traceback shows, and what any store written holds.

    python benchmarks/hostile_inputs.py [--workdir DIR] [--only NAME,...] [--json out.json]

Each case is a real ``python -m specdiff_catalog`` process on files written here: a 60-object
HATS catalog (3 partitions of 20, cut from the bundled demo catalog) and variants of it (null,
uint64 and repeated ids; absurd fluxes; two columns differing only in case; a garbage
``hats.properties``), damaged copies of the bundled default model (config.json a list, a pickle
in baseline.cbm, latent sizes that disagree), bad options, another program's Zarr group, and
``evaluate`` / ``spectra`` on a clean store with ids or rows that do not exist. Runs use 16
samples, 5 sampler steps and one worker of one thread. What the rule asks of every case:
never a wrong or mixed row with exit 0, one line instead of a traceback. The table it prints
is quoted in docs/reliability.md.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RUN = [
    "--n-samples",
    "16",
    "--sampler",
    "dpmpp2m",
    "--steps",
    "5",
    "--n-workers",
    "1",
    "--threads-per-worker",
    "1",
]
RUN += ["--no-progress", "--dashboard-address", ":0", "--memory-limit", "2GiB"]
NOTES = ("NOTE: the bundled default model", "too few for the quantile levels", "Dask dashboard:")
DASK_LOG = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ - distributed\.")


@dataclass(frozen=True)
class Case:
    """One hostile input: the issue's case number, what it is, and a function of the work
    directory that writes the files and gives (argv after ``specdiff_catalog``, the store it
    writes or None)."""

    name: str
    issue: str
    what: str
    make: Callable[[Path], tuple[list[str], Path | None]]
    timeout: float = 1800.0


def _table(root: Path):
    """The 60 objects (pandas) of the base catalog, written once."""
    import pandas as pd
    import pyarrow.parquet as pq

    from specdiff_catalog.io.catalog import demo_catalog_dir, open_catalog

    parts = open_catalog(demo_catalog_dir()).partitions[:3]
    return pd.concat([pq.read_table(p.path).to_pandas().head(20) for p in parts], ignore_index=True)


def catalog(root: Path, name: str, edit: Callable | None = None) -> Path:
    """The base catalog (``edit`` None) or a variant: ``edit(table)`` -> the table to write."""
    from specdiff_catalog.io.catalog import write_hats

    path = root / "catalogs" / name
    if not path.exists():
        table = _table(root)
        write_hats(table if edit is None else edit(table.copy()), path, order=3, catalog_name=name)
    return path


def run(root: Path, name: str, *extra: str, input_name: str = "base", edit: Callable | None = None):
    out = root / "stores" / f"{name}.zarr"
    return ["run", "--input", str(catalog(root, input_name, edit)), "--out", str(out), *RUN, *extra], out


def clean_store(root: Path) -> Path:
    """A finished store of the base catalog (made once, by the first case that needs it)."""
    return finished(root, "clean")


def finished(root: Path, case: str) -> Path:
    """The store of ``case`` ("clean": the base catalog's), run now unless it exists."""
    argv, out = run(root, "clean") if case == "clean" else next(c for c in CASES if c.name == case).make(root)
    assert out is not None
    if not (out / "zarr.json").exists():
        subprocess.run(
            [sys.executable, "-m", "specdiff_catalog", *argv],
            check=True,
            capture_output=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
    return out


def model(root: Path, name: str, damage: Callable[[Path], object]) -> Path:
    """A copy of the bundled default model, damaged by ``damage(model_dir)``."""
    from specdiff_catalog.models.store import default_model_dir

    path = root / "models" / name
    if not path.exists():
        shutil.copytree(default_model_dir(), path)
        damage(path)
    return path


def _edit_config(path: Path, edit: Callable[[dict], None]) -> None:
    data = json.loads((path / "config.json").read_text())
    edit(data)
    (path / "config.json").write_text(json.dumps(data))


def _pickle_baseline(path: Path) -> None:
    """A pickle in place of baseline.cbm, its sha256 recorded so that the hash check passes."""
    import hashlib

    (path / "baseline.cbm").write_bytes(pickle.dumps({"not": "a model"}))
    sha = hashlib.sha256((path / "baseline.cbm").read_bytes()).hexdigest()
    _edit_config(path, lambda d: d["baseline"]["weights"].update(sha256=sha))


def _null_ids(t):
    t["OBJECT_ID"] = t["OBJECT_ID"].astype("Int64")
    t.loc[[3, 4, 5], "OBJECT_ID"] = None
    return t


def _uint64_ids(t):
    t["OBJECT_ID"] = np.uint64(2**63) + np.arange(len(t), dtype=np.uint64)
    return t


def _repeated_ids_across_partitions(t):
    t.loc[25, "OBJECT_ID"] = t.loc[5, "OBJECT_ID"]  # rows 5 and 25 lie in different partitions
    return t


def _flux(column: str, value: float):
    def edit(t):
        t[column] = value
        return t

    return edit


def _all_fluxes(value: float):
    def edit(t):
        for c in [c for c in t.columns if c.startswith("FLUX_") and "IVAR" not in c]:
            t[c] = value
        return t

    return edit


def _case_clash(t):
    t["flux_g"] = t["FLUX_G"] * 2
    return t


def _garbage_properties(root: Path) -> Path:
    path = root / "catalogs" / "garbage_properties"
    if not path.exists():
        shutil.copytree(catalog(root, "base"), path)
        (path / "hats.properties").write_bytes(bytes(range(128, 256)) * 4)
    return path


def _foreign_group(root: Path) -> Path:
    import zarr

    path = root / "stores" / "foreign.zarr"
    if not path.exists():
        group = zarr.open_group(path, mode="w", attributes={"project": "someone else's"})
        group.create_array("x", data=np.arange(4))
    return path


def _demo_truth() -> Path:
    from specdiff_catalog.io.catalog import demo_catalog_dir

    return demo_catalog_dir().parent / "truth.parquet"


def _other_truth(root: Path) -> Path:
    import pandas as pd

    path = root / "truth_other_ids.parquet"
    pd.DataFrame({"OBJECT_ID": 10**15 + np.arange(60), "Z": np.linspace(0.1, 1.0, 60)}).to_parquet(path)
    return path


CASES = [
    Case(
        "ids_null",
        "2",
        "3 null OBJECT_ID in a partition",
        lambda r: run(r, "ids_null", input_name="ids_null", edit=_null_ids),
    ),
    Case(
        "ids_uint64",
        "2",
        "uint64 OBJECT_ID >= 2^63",
        lambda r: run(r, "ids_uint64", input_name="ids_uint64", edit=_uint64_ids),
    ),
    Case("ids_ra", "2", "--id-column RA", lambda r: run(r, "ids_ra", "--id-column", "RA")),
    Case(
        "ids_repeated",
        "2",
        "one OBJECT_ID repeated in two partitions",
        lambda r: run(r, "ids_repeated", input_name="ids_repeated", edit=_repeated_ids_across_partitions),
    ),
    Case(
        "save_samples",
        "3",
        "--save-samples 50 --n-samples 8",
        lambda r: run(r, "save", "--save-samples", "50", "--n-samples", "8"),
    ),
    Case("n_samples_0", "7", "--n-samples 0", lambda r: run(r, "n0", "--n-samples", "0")),
    Case("n_samples_-3", "7", "--n-samples -3", lambda r: run(r, "nm3", "--n-samples", "-3")),
    Case("batch_-5", "3, 7", "--batch-size -5", lambda r: run(r, "bm5", "--batch-size", "-5")),
    Case("batch_0", "7", "--batch-size 0", lambda r: run(r, "b0", "--batch-size", "0")),
    Case("steps_0", "7", "--steps 0", lambda r: run(r, "s0", "--steps", "0")),
    Case("steps_-2", "7", "--steps -2", lambda r: run(r, "sm2", "--steps", "-2")),
    Case(
        "model_list",
        "7",
        "a config.json that is a list",
        lambda r: run(
            r,
            "model_list",
            "--model",
            str(model(r, "list", lambda p: (p / "config.json").write_text("[1, 2, 3]"))),
        ),
    ),
    Case(
        "model_pickle",
        "7",
        "a pickle in baseline.cbm (its sha256 recorded)",
        lambda r: run(r, "model_pickle", "--model", str(model(r, "pickle", _pickle_baseline))),
    ),
    Case(
        "model_latent",
        "7",
        "latent sizes that disagree (autoencoder 6, diffusion 10)",
        lambda r: run(
            r,
            "model_latent",
            "--model",
            str(
                model(
                    r,
                    "latent",
                    lambda p: _edit_config(p, lambda d: d["autoencoder"]["config"].update(latent_size=6)),
                )
            ),
        ),
    ),
    Case(
        "flux_g_-50",
        "8",
        "FLUX_G = -50 for every object",
        lambda r: run(r, "g_m50", input_name="g_m50", edit=_flux("FLUX_G", -50.0)),
    ),
    Case(
        "flux_r_1e30",
        "8",
        "FLUX_R = 1e30 for every object",
        lambda r: run(r, "r_1e30", input_name="r_1e30", edit=_flux("FLUX_R", 1e30)),
    ),
    Case(
        "fluxes_-1e30",
        "8",
        "every flux -1e30",
        lambda r: run(r, "all_m1e30", input_name="all_m1e30", edit=_all_fluxes(-1e30)),
    ),
    Case(
        "case_clash",
        "9",
        "columns FLUX_G and flux_g",
        lambda r: run(r, "case", input_name="case", edit=_case_clash),
    ),
    Case(
        "garbage_properties",
        "9",
        "a garbage hats.properties (bytes 128-255)",
        lambda r: (
            ["run", "--input", str(_garbage_properties(r)), "--out", str(r / "stores" / "props.zarr"), *RUN],
            r / "stores" / "props.zarr",
        ),
    ),
    Case(
        "overwrite_foreign",
        "6",
        "run --overwrite onto another program's Zarr group",
        lambda r: ([*run(r, "foreign")[0][:4], str(_foreign_group(r)), *RUN, "--overwrite"], None),
    ),
    Case(
        "evaluate_no_ids",
        "9",
        "evaluate with a truth file of other ids",
        lambda r: (["evaluate", "--pz", str(clean_store(r)), "--truth", str(_other_truth(r))], None),
    ),
    Case(
        "spectra_id_2^63",
        "9",
        "spectra --select ids=...,2^63",
        lambda r: (
            [
                "spectra",
                "--pz",
                str(clean_store(r)),
                "--select",
                f"ids=1,{2**63}",
                "--out",
                str(r / "s1.fits"),
            ],
            None,
        ),
    ),
    Case(
        "spectra_rows_past_end",
        "9",
        "spectra --select rows=55:70 (60 objects)",
        lambda r: (
            ["spectra", "--pz", str(clean_store(r)), "--select", "rows=55:70", "--out", str(r / "s2.fits")],
            None,
        ),
    ),
    Case(
        "evaluate_repeated",
        "2",
        "evaluate of the ids_repeated store",
        lambda r: (
            ["evaluate", "--pz", str(finished(r, "ids_repeated")), "--truth", str(_demo_truth())],
            None,
        ),
    ),
    Case(
        "memory_50MB",
        "5",
        "--memory-limit 50MB",
        lambda r: run(r, "mem50", "--memory-limit", "50MB"),
        timeout=180.0,
    ),
]


def store_summary(out: Path) -> dict:
    """What a store holds: partition statuses, result rows, and over the result rows the z_median
    range, negative quantiles, NaN medians and the flags set."""
    from specdiff_catalog.flags import Flag
    from specdiff_catalog.io.store import open_store

    store = open_store(out, mode="r")
    status = store.partitions()["status"].value_counts().to_dict()
    rows = np.zeros(store.n_rows(), dtype=bool)
    for block, values in store.blocks(["valid"]):
        rows[block] = store.result_mask(block, values["valid"])
    summary: dict = {"partitions": status, "result_rows": int(rows.sum())}
    if rows.any():
        median, quantiles = store.read("z_median")[rows], store.read("z_quantiles")[rows]
        flags = np.bitwise_or.reduce(store.read("flags")[rows])
        finite = median[np.isfinite(median)]
        summary |= {
            "z_median": [round(float(finite.min()), 3), round(float(finite.max()), 3)]
            if finite.size
            else None,
            "nan_z_median": int(np.isnan(median).sum()),
            "negative_quantiles": int((quantiles < 0).sum()),
            "flags": [f.name for f in Flag if f & flags],
            "object_ids": int(np.unique(store.read("object_id")[rows]).size),
        }
    return summary


def try_case(case: Case, root: Path) -> dict:
    argv, out = case.make(root)
    proc = subprocess.Popen(
        [sys.executable, "-m", "specdiff_catalog", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        start_new_session=True,  # a process group of its own: a timed-out run goes with its workers
    )
    code: int | None
    try:
        stdout, stderr = proc.communicate(timeout=case.timeout)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        code = None
    lines = [line for line in stderr.splitlines() if line.strip() and not any(n in line for n in NOTES)]
    logs = [line for line in lines if DASK_LOG.match(line)]  # Dask's own log lines (a worker restarted...)
    said = [line for line in lines if not DASK_LOG.match(line)]
    failed = [line.strip() for line in stdout.splitlines() if line.strip().startswith("failed partition")]
    shown = said[-1] if said and code != 0 else (stdout.strip().splitlines() or said or [""])[0]
    return {
        "case": case.name,
        "issue": case.issue,
        "input": case.what,
        "exit": code if code is not None else f"killed after {case.timeout:.0f} s",
        "stderr_lines": len(said),
        "dask_log_lines": len(logs),
        "traceback": "Traceback" in stderr,
        "said": shown.replace(f"{root}/", "W/"),
        "first_failed_partition": failed[0].replace(f"{root}/", "W/") if failed else None,
        "store": store_summary(out) if out is not None and (out / "zarr.json").exists() else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--only", help="comma-separated case names")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    chosen = [c for c in CASES if not args.only or c.name in args.only.split(",")]
    results = []
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        for case in chosen:
            results.append(try_case(case, Path(tmp)))
            print(json.dumps(results[-1]), flush=True)
    print("| case | issue | input | exit | traceback | what the user sees | store |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        said = " / ".join(x for x in (r["said"], r["first_failed_partition"]) if x).replace("|", "\\|")
        traceback = "yes" if r["traceback"] else "no"
        store = json.dumps(r["store"]) if r["store"] else "none"
        print(f"| {r['case']} | {r['issue']} | {r['input']} | {r['exit']} | {traceback} | {said} | {store} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
