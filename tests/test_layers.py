"""The import contract (pyproject.toml, checked by ``lint-imports``) holds for the two scripts beside the package too.

import-linter only takes packages as roots, so train.py and app.py are added here to the graph grimp (its engine)
builds of the package, with the imports they make, and checked against the contract's own layers: app.py above
them all, train.py beside serving (it trains; it may not import what serves). ``make lint`` runs this file after
``lint-imports``."""

from __future__ import annotations

import ast

import grimp
import pytest
import tomllib  # import-linter's own reader: the tests run where it does (Python 3.11 and up)

from tests.conftest import ROOT

SCRIPTS = ("app", "train")


def contract_layers() -> list[list[str]]:
    contract = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"][0]
    return [[module.strip() for module in layer.split("|")] for layer in contract["layers"]]


def imported_by(source: str) -> set[str]:
    """Every module of the package a script's source imports (``from toystory_gpt.x import y`` names x, and y if it
    is a module)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
    return {name for name in found if name.split(".")[0] == "toystory_gpt"}


def violations(sources: dict[str, str]) -> set:
    graph = grimp.build_graph("toystory_gpt", cache_dir=None)
    layers = contract_layers()
    serving = next(i for i, layer in enumerate(layers) if "toystory_gpt.serving" in layer)
    layers.insert(0, ["app"])
    layers[serving + 1].append("train")
    for script, source in sources.items():
        graph.add_module(script)
        for name in imported_by(source) & graph.modules:
            graph.add_import(importer=script, imported=name)
    return graph.find_illegal_dependencies_for_layers(
        layers=[grimp.Layer(*layer, independent=True) for layer in layers])


def test_the_scripts_keep_the_import_contract():
    assert violations({name: (ROOT / f"{name}.py").read_text() for name in SCRIPTS}) == set()


@pytest.mark.parametrize("script, line", [
    ("train", "from toystory_gpt.serving import Engine"),
    ("train", "from toystory_gpt import api"),
    ("train", "import toystory_gpt.ui.page"),
])
def test_training_that_imports_serving_breaks_it(script, line):
    source = (ROOT / f"{script}.py").read_text() + f"\n{line}\n"
    assert {(v.importer, v.imported) for v in violations({script: source})}
