"""Configuration as data: find and load TOML/JSON presets and user files into dataclasses."""

from __future__ import annotations

import dataclasses
import json
import tomllib
from pathlib import Path
from typing import Any, TypeVar

PRESET_DIR = Path(__file__).parent / "presets"

T = TypeVar("T")


class ConfigError(ValueError):
    """A preset or configuration file that cannot be used; the message names it."""


def available_presets(kind: str) -> list[str]:
    """Names of the bundled presets of one kind (``bands`` or ``models``)."""
    return sorted(p.stem for p in (PRESET_DIR / kind).glob("*.toml"))


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML or JSON file into a dict; a bad file raises ConfigError naming it."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"cannot read configuration file {path}: {err.strerror}") from err
    try:
        if path.suffix.lower() == ".json":
            return json.loads(text)
        return tomllib.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path}: not valid {path.suffix.lstrip('.').upper() or 'TOML'}: {err}") from err


def load_preset(kind: str, name_or_path: str | Path) -> dict[str, Any]:
    """Load ``presets/<kind>/<name>.toml``, or a user TOML/JSON file when given a path.

    A value containing a path separator or ending in .toml/.json is a file; anything
    else is a preset name. A file may start from another of the same kind with a top-level
    ``base = "<name or file>"`` (a relative file is read from the referring file's directory):
    its tables merge key by key, and every value it sets replaces the base's.
    """
    return _load(kind, str(name_or_path), Path(), ())


def _is_file(reference: str) -> bool:
    return "/" in reference or reference.endswith((".toml", ".json"))


def _load(kind: str, reference: str, folder: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    """The preset or file ``reference`` (files relative to ``folder``), its base merged under it."""
    if _is_file(reference):
        path = folder / reference
        if chain and not path.is_file():
            raise ConfigError(f"{chain[-1]}: its base {path} is not a file")
    else:
        path = PRESET_DIR / kind / f"{reference}.toml"
        if not path.exists():
            known = ", ".join(available_presets(kind))
            raise ConfigError(f"unknown {kind} preset {reference!r}; bundled presets: {known}")
    if path.resolve() in chain:
        raise ConfigError(f"{path}: its base chain comes back to itself ({' -> '.join(map(str, chain))})")
    data = load_config_file(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: holds {type(data).__name__}, not a table (a JSON object)")
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"{path}: base must be a {kind} preset name or file, not {base!r}")
    return _merge(_load(kind, base, path.parent, (*chain, path.resolve())), data)


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``override``'s values; tables present in both merge recursively."""
    merged = dict(base)
    for key, value in override.items():
        below = merged.get(key)
        merged[key] = _merge(below, value) if isinstance(below, dict) and isinstance(value, dict) else value
    return merged


def from_dict(cls: type[T], data: dict[str, Any], *, source: str = "configuration") -> T:
    """Build dataclass ``cls`` from ``data``, refusing unknown keys by name."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {unknown} for {cls.__name__}; known: {sorted(names)}")
    try:
        return cls(**data)
    except TypeError as err:
        raise ConfigError(f"{source}: {err}") from err
