#!/usr/bin/env python
"""The store's shard size against padding and file count, for real and synthetic partition lists.

    python benchmarks/shard_choice.py

Prints a markdown table (docs/formats.md quotes it): for each catalog, the shard size
``io.store.choose_shard_rows`` picks and a few others, with the rows the store then has
(objects + padding), the padding in percent of the objects and the shard files per
array. Synthetic partition sizes are drawn with ``numpy.random.default_rng(0)``.
"""

from __future__ import annotations

import numpy as np

from specdiff_catalog.io.catalog import demo_catalog_dir, open_catalog
from specdiff_catalog.io.store import choose_shard_rows, padding, shard_files


def rows(name: str, n_rows: np.ndarray) -> list[str]:
    total, best = int(n_rows.sum()), choose_shard_rows(n_rows)
    out = []
    for s in sorted({best, 64, 1024, 4096, 16384, 32768, 65536}):
        pad = padding(n_rows, s)
        shard = f"**{s:,}** (chosen)" if s == best else f"{s:,}"
        out.append(
            f"| {name} | {len(n_rows):,} | {total:,} | {shard} | {total + pad:,} | "
            f"{100 * pad / total:.1f}% | {shard_files(n_rows, s):,} |"
        )
    return out


def main() -> None:
    rng = np.random.default_rng(0)
    catalogs = {
        "bundled demo": np.array([p.n_rows for p in open_catalog(demo_catalog_dir()).partitions]),
        "1e9, partitions of 250k-750k": rng.integers(250_000, 750_001, 2000),
        "3e9, partitions of 150k-450k": rng.integers(150_000, 450_001, 10_000),
        "1e9, partitions of 1,000": np.full(1_000_000, 1000),
        "1e9, partitions of 65,537": np.full(15_258, 65_537),
    }
    header = (
        "catalog",
        "partitions",
        "objects",
        "shard_rows",
        "rows with padding",
        "padding",
        "files per array",
    )
    print("| " + " | ".join(header) + " |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, n_rows in catalogs.items():
        print("\n".join(rows(name, n_rows)))


if __name__ == "__main__":
    main()
