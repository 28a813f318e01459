"""specdiff-catalog: photo-z PDFs and rest-frame spectra for HEALPix catalogs.

A SPENDER-style spectrum autoencoder learns a latent space of rest-frame spectra;
a conditional latent diffusion model samples [latent, redshift] given broadband
fluxes. See docs/architecture.md for the modules and the data's path through them.
"""

__version__ = "0.1.0"
