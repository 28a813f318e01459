"""The synthetic survey: a SkyPy galaxy population observed as DESI spectra and a Legacy Surveys catalog.

``make_mock_survey(out, MockConfig(...))`` writes DESI coadd/redrock files, a HATS
catalog and the truth. Modules: population (galaxies), spectra (templates -> spectra
and photometry), footprint (positions, bricks, ids), reddening (E(B-V)), skymodel and
noise (instruments), imaging (catalog rows), redrock (redshift-fit emulation), survey
(assembly and writing). See docs/mock.md.
"""

import warnings

from astropy.utils.exceptions import AstropyDeprecationWarning

with warnings.catch_warnings():  # skypy's package init imports astropy's deprecated test runner
    warnings.simplefilter("ignore", AstropyDeprecationWarning)
    import skypy  # noqa: F401

from specdiff_catalog.mock.config import MockConfig
from specdiff_catalog.mock.survey import make_mock_survey

__all__ = ["MockConfig", "make_mock_survey"]
