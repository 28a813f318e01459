"""Dn4000 of spectra decoded from photometry against a mock's truth, per target class, for several models.

Run from the repository root:

    python benchmarks/dn4000_from_photometry.py --mock sps_s2 --model ae10=MODEL_A --model ae16=MODEL_B \
        [--spectra 1000] [--out DIR]

For each model, ``validate_spectra`` (what ``evaluate --spectra`` runs: the prediction from
each target's FIBERMAP photometry alone, decoded into a rest-frame spectrum) on the first
``--spectra`` selected targets of MOCK/spectra, then median and NMAD of decoded minus true
Dn4000 per TARGET_CLASS (``photoz_paired_bootstrap.dn4000_by_class``; the observed
spectrum's own Dn4000 alongside). The same objects and seed for every model.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from photoz_paired_bootstrap import dn4000_by_class  # benchmarks/: run as a script

from specdiff_catalog.report.spectral_validation import validate_spectra


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mock", type=Path, required=True, help="a mock survey (MOCK/spectra, MOCK/truth)")
    parser.add_argument("--model", action="append", required=True, metavar="NAME=DIR")
    parser.add_argument("--spectra", type=int, default=1000, help="targets compared (default 1000)")
    parser.add_argument("--out", type=Path, help="write each model's per-object table as DIR/NAME.parquet")
    args = parser.parse_args()
    if not (args.mock / "truth" / "spectroscopic.parquet").is_file():
        raise SystemExit(f"{args.mock}: not a mock survey (no truth/spectroscopic.parquet)")
    out = args.out or Path("build/dn4000_from_photometry")
    out.mkdir(parents=True, exist_ok=True)
    for spec in args.model:
        name, _, model = spec.partition("=")
        if not name or not model:
            raise SystemExit(f"--model {spec}: give NAME=DIR")
        start = time.perf_counter()
        result = validate_spectra(
            args.mock / "spectra", model, truth=args.mock / "truth", max_objects=args.spectra
        )
        table = out / f"{name}.parquet"
        result.objects.to_parquet(table, index=False)
        print(f"== {name}: {len(result.objects)} spectra, {time.perf_counter() - start:.0f} s")
        frame = dn4000_by_class(table, args.mock / "truth")
        print(frame.to_string(index=False, float_format="{:+.4f}".format), flush=True)


if __name__ == "__main__":
    main()
