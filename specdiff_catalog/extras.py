"""Optional extras: which installed distributions a command needs, checked before it starts.

``require(extra, what)`` reads this package's own requirements (``importlib.metadata``) for
the extra ``[extra]`` and raises ``MissingExtraError`` naming the extra and the missing
distributions when any is not installed, so a command whose extra is missing stops with
one line (wrapped here) before it does any work::

    specdiff-catalog mock needs the [mock] extra (bagpipes not installed):
    pip install 'specdiff-catalog[mock]'

The lists live in pyproject.toml only. Importing this module imports nothing (the CLI's
``--help`` stays fast); ``importlib.metadata`` is imported when a check runs.
"""

from __future__ import annotations

DISTRIBUTION = "specdiff-catalog"


class MissingExtraError(ImportError):
    """A command needs an optional extra that is not installed."""


def extra_requirements(extra: str) -> list[str]:
    """Names of the distributions the extra ``[extra]`` adds ([] when this package's metadata
    is not installed, e.g. when run from a source tree)."""
    from importlib import metadata

    from packaging.requirements import Requirement

    try:
        requires = metadata.requires(DISTRIBUTION) or []
    except metadata.PackageNotFoundError:
        return []
    names = []
    for text in requires:
        requirement = Requirement(text)
        if requirement.marker is not None and requirement.marker.evaluate({"extra": extra}):
            if requirement.name != DISTRIBUTION:  # an extra that includes another one
                names.append(requirement.name)
    return names


def missing(extra: str) -> list[str]:
    """The distributions of ``[extra]`` that are not installed."""
    from importlib import metadata

    absent = []
    for name in extra_requirements(extra):
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            absent.append(name)
    return absent


def require(extra: str, what: str) -> None:
    """Raise MissingExtraError when a distribution of ``[extra]`` is missing; ``what`` names the
    command or function that needs it (e.g. "specdiff-catalog mock")."""
    absent = missing(extra)
    if absent:
        raise MissingExtraError(
            f"{what} needs the [{extra}] extra ({', '.join(absent)} not installed): "
            f"pip install '{DISTRIBUTION}[{extra}]'"
        )
