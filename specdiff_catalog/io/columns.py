"""The output row, defined once: every per-object column of the store ``run`` writes.

``output_columns`` is the one list the store layout (``io.store``), the partition
writer (``io.store.OutputStore.write_partition``) and the per-partition predictor
(``inference.predict_columns``) share: name, dtype, dimensions, CF ``units`` and
``long_name``, and the fill value of padding rows. Identifiers and bit masks carry no
``units`` (CF: not physical quantities); dimensionless quantities carry "1".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from specdiff_catalog.flags import Flag, cf_attributes


@dataclass(frozen=True)
class Column:
    """One per-object array: dims[0] is always "object"; a second dimension has ``width`` entries.

    fill: the value of padding rows (valid = 0); units: CF units or None (no attribute).
    finite: a model output, finite in every object row unless its flags say why not
    (``flags.NO_RESULT``); cf: further CF attributes (name, value) pairs.
    """

    name: str
    dtype: str
    long_name: str
    units: str | None
    fill: Any
    dims: tuple[str, ...] = ("object",)
    width: int | None = None
    finite: bool = False
    cf: tuple[tuple[str, Any], ...] = ()

    @property
    def shape_tail(self) -> tuple[int, ...]:
        """() for a 1-D column, (width,) for a 2-D one."""
        return () if self.width is None else (self.width,)

    def attributes(self) -> dict[str, Any]:
        """The array's CF attributes."""
        units = {} if self.units is None else {"units": self.units}
        return {"long_name": self.long_name} | units | dict(self.cf)

    def empty(self, n: int = 0) -> np.ndarray:
        """(n, ...) of this column's dtype filled with its padding value."""
        return np.full((n, *self.shape_tail), self.fill, dtype=self.dtype)


POSITION_COLUMNS = ("object_id", "_healpix_29", "ra", "dec")
"""Columns taken from the catalog row (``pipeline.run``); the others come from the model."""


def output_columns(n_quantiles: int, latent_size: int, n_samples_saved: int) -> dict[str, Column]:
    """Every per-object column of a store with these widths, in store order.

    latent_size 0: no ``latent``/``latent_std``; n_samples_saved 0: no ``z_samples``.
    The latent dimension is named ``latent_dim``: xarray takes a variable named like one of
    its dimensions for that dimension's coordinate.
    """
    columns = [
        Column("object_id", "int64", "object identifier from the input catalog", None, -1),
        Column("_healpix_29", "int64", "HEALPix order-29 nested pixel index", None, -1),
        Column("ra", "float64", "right ascension", "deg", np.nan),
        Column("dec", "float64", "declination", "deg", np.nan),
        Column("valid", "uint8", "1 for an object row, 0 for a padding row", None, 0),
        Column(
            "flags",
            "uint16",
            "quality flag bits (specdiff_catalog.flags.Flag)",
            None,
            int(Flag.PADDING),
            cf=tuple(cf_attributes().items()),
        ),
        _dimensionless(
            "z_quantiles",
            "redshift PDF quantiles at the quantile levels",
            ("object", "quantile"),
            n_quantiles,
        ),
        _dimensionless("z_median", "median of the redshift PDF"),
        _dimensionless("z_mode", "mode of the redshift PDF (Gaussian KDE)"),
        _dimensionless("z_mean", "mean of the redshift PDF"),
        _dimensionless("z_std", "standard deviation of the redshift PDF"),
        _dimensionless(
            "coverage",
            "training-set coverage score: fraction of training-like objects in sparser regions "
            "of feature space (docs/coverage.md); NaN: the model has no coverage section",
            finite=False,
        ),
    ]
    if latent_size:
        dims = ("object", "latent_dim")
        columns += [
            _dimensionless("latent", "spectral latent at the redshift mode", dims, latent_size),
            _dimensionless("latent_std", "spread of the spectral latent there", dims, latent_size),
            _dimensionless(
                "ppc_chi2",
                "posterior-predictive chi^2 of the fluxes against spectra decoded from the posterior "
                "(free amplitude; mean over draws); NaN: not checked (ppc_dof 0)",
                finite=False,
            ),
            Column("ppc_dof", "int8", "degrees of freedom of ppc_chi2 (0: not checked)", "1", -1),
            _dimensionless(
                "ppc_pvalue", "posterior-predictive p-value of the photometry; NaN: not checked", finite=False
            ),
        ]
    if n_samples_saved:
        columns.append(
            _dimensionless(
                "z_samples", "redshift samples of the PDF", ("object", "sample"), n_samples_saved, "float16"
            )
        )
    return {c.name: c for c in columns}


def _dimensionless(
    name: str,
    long_name: str,
    dims: tuple[str, ...] = ("object",),
    width: int | None = None,
    dtype: str = "float32",
    finite: bool = True,
) -> Column:
    """A float model output of a dimensionless quantity (units "1"), NaN in padding rows;
    finite=False for a check that may not be computed for an object (NaN: not checked)."""
    return Column(name, dtype, long_name, "1", np.nan, dims, width, finite=finite)
