"""The import graph runs one way: each module imports only from lower layers or its own group.

Every ``import``/``from ... import`` of the package is read from the source (lazy imports
inside functions included), so a layer violation fails here before anyone has to find it.
``python -m tests.test_layers`` prints the layers and each module's imports.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "specdiff_catalog"

# group -> layer; data walks down: a module may import a lower layer or its own group
LAYERS = {
    "base": 0,  # defaults, config, flags, bands, hashing, extras: configuration as data
    "numerics": 1,  # features, spectral, summaries, metrics, synphot
    "io": 2,  # io/*: files at the edges
    "models": 3,  # models/*: networks, samplers, the model directory
    "selection": 3,  # which DESI spectra train a model
    "inference": 4,
    "reconstruct": 4,
    "mock": 4,  # the synthetic survey, written through io
    "training": 5,
    "pipeline": 5,
    "report": 5,
    "rail": 6,  # rail/*: the RAIL stages, an adapter beside the CLI
    "cli": 6,
    "api": 6,  # the package's public names (__init__ imports them lazily) and api.py
}
GROUP_OF = {
    "__init__": "api",
    "__main__": "cli",
    "defaults": "base",
    "config": "base",
    "flags": "base",
    "bands": "base",
    "hashing": "base",
    "extras": "base",
    "features": "numerics",
    "spectral": "numerics",
    "summaries": "numerics",
    "metrics": "numerics",
    "synphot": "numerics",
    "selection": "selection",
    "inference": "inference",
    "ppc": "inference",  # the posterior-predictive check of the photometry, one of predict's checks
    "reconstruct": "reconstruct",
    "cli": "cli",
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)


def group(module: str) -> str:
    head = module.split(".")[0]
    return GROUP_OF.get(head, head)


def imports() -> dict[str, set[str]]:
    """module (relative to the package) -> the package modules it imports."""
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = defaultdict(set)
    for path in sorted(PACKAGE.rglob("*.py")):
        source = module_name(path)
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.startswith("specdiff_catalog")
            ):
                base = node.module.removeprefix("specdiff_catalog").lstrip(".")
                names = [f"{base}.{a.name}".lstrip(".") for a in node.names] + ([base] if base else [])
            elif isinstance(node, ast.Import):
                names = [
                    a.name.removeprefix("specdiff_catalog.")
                    for a in node.names
                    if a.name.startswith("specdiff_catalog.")
                ]
            graph[source] |= {n for n in names if n in modules and n != source}
    return graph


def violations() -> list[str]:
    found = []
    for source, targets in imports().items():
        for target in targets:
            same = group(source) == group(target)
            if not same and LAYERS[group(target)] >= LAYERS[group(source)]:
                found.append(f"{source} ({group(source)}) imports {target} ({group(target)})")
    return sorted(found)


def test_every_module_has_a_layer():
    assert {group(m) for m in imports()} | {group(module_name(p)) for p in PACKAGE.rglob("*.py")} <= set(
        LAYERS
    )


def test_imports_run_down_the_layers():
    assert violations() == []


def test_io_imports_nothing_above_it():
    above = {
        "models",
        "training",
        "pipeline",
        "report",
        "inference",
        "ppc",
        "reconstruct",
        "mock",
        "selection",
        "cli",
    }
    io = {m: t for m, t in imports().items() if group(m) == "io"}
    assert io and not {(m, t) for m, ts in io.items() for t in ts if group(t) in above}


def test_the_check_has_power(monkeypatch):
    """An import that runs back up is reported."""
    graph = imports()
    monkeypatch.setattr(
        __import__(__name__), "imports", lambda: graph | {"io.store": graph["io.store"] | {"reconstruct"}}
    )
    assert violations() == ["io.store (io) imports reconstruct (reconstruct)"]


if __name__ == "__main__":
    graph = imports()
    for name, layer in sorted(LAYERS.items(), key=lambda kv: (kv[1], kv[0])):
        members = sorted(m for m in {module_name(p) for p in PACKAGE.rglob("*.py")} if group(m) == name)
        print(f"layer {layer} {name}: {', '.join(members)}")
    print()
    for source in sorted(graph):
        if graph[source]:
            print(f"{source} -> {', '.join(sorted(graph[source]))}")
