"""The ``specdiff-catalog`` command: parse arguments, call one library function per command.

No numerics live here. Errors a user can fix (missing or corrupt files, bad
configuration) end with a one-line message and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from specdiff_catalog import __version__

Handler = Callable[[argparse.Namespace], int | None]


def _add_mock(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("mock", help="write a synthetic survey in the real DESI and HATS formats")
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--n-spec", type=int, default=2000, help="galaxies with DESI-format spectra (default 2000)")
    p.add_argument("--n-phot", type=int, default=20000, help="galaxies in the HATS photometric catalog (default 20000)")
    p.add_argument("--seed", type=int, default=0, help="random seed 0..1023; seeds never share object ids (default 0)")
    p.add_argument("--r-max", type=float, default=22.5, help="r-band AB magnitude limit of both sets (default 22.5)")
    p.add_argument("--order", type=int, default=4, help="HEALPix order of the catalog partitions (default 4)")
    p.add_argument("--n-rest", type=int, default=500, help="noiseless rest-frame spectra kept as truth (default 500)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    p.set_defaults(handler=_mock)


def _mock(args: argparse.Namespace) -> None:
    from specdiff_catalog.mock import MockConfig, make_mock_survey

    config = MockConfig(n_spec=args.n_spec, n_phot=args.n_phot, seed=args.seed, r_max=args.r_max,
                        order=args.order, n_rest_spectra=args.n_rest)
    summary = make_mock_survey(args.out, config, overwrite=args.overwrite)
    print(f"mock survey in {args.out}: {summary['counts']} ({summary['seconds']} s)")


def _add_prepare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare", help="turn DESI coadd + redrock files into a training set")
    p.add_argument("--desi", required=True, type=Path, help="directory searched recursively for coadd-*.fits")
    p.add_argument("--out", required=True, type=Path, help="training-set directory to write")
    p.add_argument("--bands", default="ls-grzw1w2", help="band preset name or TOML/JSON file (default ls-grzw1w2)")
    p.add_argument("--z-min", type=float, default=0.0, help="lowest redshift kept (default 0)")
    p.add_argument("--z-max", type=float, default=0.8, help="highest redshift kept (default 0.8)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing training set")
    p.set_defaults(handler=_prepare)


def _prepare(args: argparse.Namespace) -> int:
    from specdiff_catalog.io.desi import Selection
    from specdiff_catalog.training.prepare import prepare_training_set

    report = prepare_training_set(args.desi, args.out, bands=args.bands,
                                  selection=Selection(z_min=args.z_min, z_max=args.z_max),
                                  overwrite=args.overwrite)
    print(report.summary())
    return 1 if report.failed_files else 0


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (also used to render docs/cli.md)."""
    parser = argparse.ArgumentParser(
        prog="specdiff-catalog",
        description="Photo-z PDFs and rest-frame spectra for HEALPix-partitioned catalogs "
        "with a conditional latent diffusion model.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--traceback", action="store_true", help="show the full traceback on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_mock, _add_prepare]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print(f"specdiff-catalog {args.command}: interrupted", file=sys.stderr)
        return 130
    except (OSError, ValueError, KeyError) as err:
        if args.traceback:
            raise
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"specdiff-catalog {args.command}: error: {message}", file=sys.stderr)
        return 2
