#!/usr/bin/env python
"""Score the mock's galaxy population against DESI's published target densities and redshifts.

    python benchmarks/mock_tuning.py --area 0.3 [--seed 0] [--set physics.dust_delta=0.0,0.2 ...]
    python benchmarks/mock_tuning.py --area 0.3 --out grid.jsonl \
        --grid '{"smf.mass_offset": [0.05, 0.12], "physics.dust_delta": [[-0.1, 0.2], [0.0, 0.2]]}'

One draw of the population over ``--area`` deg^2 (no spectra): true photometry, the
catalog's noise and Milky Way dust, the catalog limit and the DESI target cuts, exactly as
``make_mock_survey`` does for its spectroscopic set. Prints each class's density (by the
desitarget bits) and median z, the ELG fraction at z < 0.6, the LRG fraction at z < 0.4, and
a loss: the squared log density ratios of BGS, LRG, ELG LOP and VLO, plus 0.1 x the squared
median offsets (BGS 0.2 +- 0.03, LRG 0.75 +- 0.04) and the squared excess of the two
low-z fractions over 5% (in units of 3%). ``--set`` / ``--grid`` keys name fields of
PopulationModel as GROUP.FIELD (smf, quenching, physics) or FIELD; tuples as comma lists.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from specdiff_catalog.bands import BandSet
from specdiff_catalog.mock.config import MockConfig
from specdiff_catalog.mock.footprint import SPECTROSCOPIC
from specdiff_catalog.mock.imaging import imaging_catalog
from specdiff_catalog.mock.population import draw_parameters
from specdiff_catalog.mock.sample import completeness_mass
from specdiff_catalog.mock.spectra import model_maggies
from specdiff_catalog.mock.targets import bgs_bright, elg, lrg

TARGETS = {"BGS": 864, "LRG": 605, "LOP": 1940, "VLO": 460}  # deg^-2 (docs/mock.md for the sources)


def configured(settings: dict[str, Any]) -> MockConfig:
    """MockConfig() with population fields replaced ({"physics.dust_delta": (0.0, 0.2), ...})."""
    population = MockConfig().population
    for key, value in settings.items():
        group, _, name = key.rpartition(".")
        if group:
            population = replace(population, **{group: replace(getattr(population, group), **{name: value})})
        else:
            population = replace(population, **{name: value})
    return replace(MockConfig(), population=population)


def draw(config: MockConfig, area: float, seed: int) -> pd.DataFrame:
    """Catalog rows (above the catalog limit) over ``area`` deg^2 with Z and the class flags."""
    bandset = BandSet.load(config.bands)
    with threadpool_limits(limits=1, user_api="blas"):
        rng = np.random.default_rng(seed)
        log_m_min = completeness_mass(config.population, config.photometric_limit, bandset)
        galaxies = draw_parameters(area, config.population, log_m_min, rng)
        galaxies.flux = bandset.maggies_to_flux(
            model_maggies(galaxies, tuple(b.filter for b in bandset.bands))
        )
        table = imaging_catalog(
            galaxies,
            seed=0,
            kind=SPECTROSCOPIC,
            bandset=bandset,
            patch=config.patch,
            noise=config.imaging_noise,
            reddening=config.reddening,
            defects=config.defects,
            fibre=config.fibre,
            rng=rng,
        )
    keep = config.photometric_limit(table)
    table = table[keep].reset_index(drop=True)
    lop, vlo = elg(table)
    return table.assign(Z=galaxies.redshift[keep], LRG=lrg(table), BGS=bgs_bright(table), LOP=lop, VLO=vlo)


def score(table: pd.DataFrame, area: float) -> dict[str, Any]:
    """Densities, median z, low-z fractions and the loss of one draw."""
    out: dict[str, Any] = {"catalog": round(len(table) / area)}
    for name in ("BGS", "LRG", "LOP", "VLO"):
        z = table.loc[table[name], "Z"]
        out[name] = {"density": round(len(z) / area), "z_median": round(float(z.median()), 3)}
    elg_z = table.loc[table["LOP"] | table["VLO"], "Z"]
    lrg_z = table.loc[table["LRG"], "Z"]
    out["elg_below_0.6"] = round(float((elg_z < 0.6).mean()), 3)
    out["lrg_below_0.4"] = round(float((lrg_z < 0.4).mean()), 3)
    loss = sum(np.log(max(out[k]["density"], 1) / v) ** 2 for k, v in TARGETS.items())
    loss += (
        0.1 * ((out["BGS"]["z_median"] - 0.2) / 0.03) ** 2
        + 0.1 * ((out["LRG"]["z_median"] - 0.75) / 0.04) ** 2
    )
    loss += 0.1 * (max(out["elg_below_0.6"] - 0.05, 0) / 0.03) ** 2
    loss += 0.1 * (max(out["lrg_below_0.4"] - 0.05, 0) / 0.03) ** 2
    out["loss"] = round(float(loss), 3)
    return out


def _value(text: str) -> Any:
    parts = [float(x) for x in text.split(",")]
    return tuple(parts) if len(parts) > 1 else parts[0]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--area", type=float, default=0.3, help="deg^2 per draw")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], help="GROUP.FIELD=VALUE (repeatable)")
    parser.add_argument("--grid", help='JSON {"GROUP.FIELD": [values, ...]}: every combination')
    parser.add_argument("--out", help="append one JSON line per draw here")
    args = parser.parse_args()
    fixed = {k: _value(v) for k, v in (s.split("=", 1) for s in args.set)}
    grid = json.loads(args.grid) if args.grid else {}
    for values in itertools.product(*grid.values()):
        settings = fixed | {
            k: tuple(v) if isinstance(v, list) else v for k, v in zip(grid, values, strict=True)
        }
        start = time.perf_counter()
        result = score(draw(configured(settings), args.area, args.seed), args.area)
        row = {"settings": settings, "seed": args.seed, "area": args.area, **result}
        row["seconds"] = round(time.perf_counter() - start, 1)
        print(json.dumps(row), flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
