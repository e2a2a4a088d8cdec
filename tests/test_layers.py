"""The library is built in layers: each module imports only modules of its own layer or lower
ones, and no module imports another module's private (``_``-prefixed) name.

Read from the source with :mod:`ast` (nothing is imported), counting every import, including the
ones inside functions, which hide cycles at import time but not from a reader.
"""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "cxvae"

# Lowest first. A module may import the modules of its own layer and of the layers before it.
LAYERS = {
    "base": ["config", "data", "noise", "layers", "paper_values"],
    "model": ["__init__", "regularisers", "model", "train"],  # __init__ re-exports config, data, model
    "inference and metrics": ["evaluation", "oracle", "predictive", "metrics", "summary", "bias"],
    "analysts' API": ["frames", "tabular", "estimator", "mixed", "classical"],
    "studies": ["store", "runner", "engine", "strength", "gap", "table_bench", "real_data", "bench"],
    "book and CLI": ["report", "plots", "chapters", "cli"],
}
LEVEL = {module: level for level, modules in enumerate(LAYERS.values()) for module in modules}

# Imports that break the layers on purpose, each with its reason: (importer, imported) -> why.
ALLOWED_UPWARD: dict = {}  # none left: bias reads compare_to from cxvae.summary, a layer below runner


def _modules():
    return sorted(p.stem for p in PACKAGE.glob("*.py"))


def _imports(source: str, in_package: bool = True):
    """Every cxvae import in ``source``: ``[(line, module, names)]``, with ``module`` the imported
    cxvae module's name (``'__init__'`` for the package itself) and ``names`` the names taken from
    it (``[]`` for a module); and ``{alias: module}`` for the names bound to cxvae modules (to find
    attribute access such as ``runner._x``). Relative imports count only ``in_package``."""
    modules = set(_modules())
    found, aliases = [], {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and in_package:
                parts = node.module.split(".") if node.module else []
            elif node.level == 0 and node.module and node.module.split(".")[0] == "cxvae":
                parts = node.module.split(".")[1:]
            else:
                continue
            if parts:  # from .x import a, b / from cxvae.x import a, b
                found.append((node.lineno, parts[0], [a.name for a in node.names]))
                continue
            for alias in node.names:  # from . import x / from cxvae import x: a module or a package name
                if alias.name in modules:
                    found.append((node.lineno, alias.name, []))
                    aliases[alias.asname or alias.name] = alias.name
                else:
                    found.append((node.lineno, "__init__", [alias.name]))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "cxvae":
                    module = parts[1] if len(parts) > 1 else "__init__"
                    found.append((node.lineno, module, []))
                    if alias.asname and len(parts) > 1:
                        aliases[alias.asname] = module
    return found, aliases


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _private_uses(source: str, own: str = "", in_package: bool = True):
    """``'line module.name'`` for every private name of another cxvae module that ``source``
    (the module ``own``) takes, by from-import or through a module alias."""
    found, aliases = _imports(source, in_package)
    bad = [f"{line} {module}.{name}" for line, module, names in found
           for name in names if module != own and _private(name)]
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                and aliases[node.value.id] != own and _private(node.attr)):
            bad.append(f"{node.lineno} {aliases[node.value.id]}.{node.attr}")
    return bad


def _layer(module):
    return list(LAYERS)[LEVEL[module]]


def test_every_module_has_a_layer():
    """A new module is placed in a layer (LAYERS) before anything imports it."""
    assert sorted(set(_modules()) - set(LEVEL)) == []
    assert sorted(set(LEVEL) - set(_modules())) == [], "LAYERS names a module that no longer exists"


@pytest.mark.parametrize("module", _modules())
def test_module_imports_only_its_own_and_lower_layers(module):
    """Each import (top-level or inside a function) points to the same or a lower layer."""
    found, _ = _imports((PACKAGE / f"{module}.py").read_text())
    upward = sorted({f"{module} ({_layer(module)}) imports {target} ({_layer(target)}) at line {line}"
                     for line, target, _ in found
                     if target in LEVEL and LEVEL[target] > LEVEL[module]
                     and (module, target) not in ALLOWED_UPWARD})
    assert upward == []


def test_allowed_upward_imports_are_still_needed():
    """An allowlist entry whose import is gone goes too."""
    for module, target in ALLOWED_UPWARD:
        found, _ = _imports((PACKAGE / f"{module}.py").read_text())
        assert LEVEL[target] > LEVEL[module], f"{module} -> {target} is not upward"
        assert any(t == target for _, t, _ in found), f"{module} no longer imports {target}: drop the entry"


def test_no_module_or_script_takes_another_modules_private_name():
    """Private names stay in their module, for cxvae's modules and scripts/ alike (tests may)."""
    bad = [f"cxvae/{p.name}:{use}" for p in sorted(PACKAGE.glob("*.py"))
           for use in _private_uses(p.read_text(), own=p.stem)]
    bad += [f"scripts/{p.name}:{use}" for p in sorted((ROOT / "scripts").glob("*.py"))
            for use in _private_uses(p.read_text(), in_package=False)]
    assert bad == []


def test_the_checks_find_what_they_look_for():
    """Known answers on made-up source: an import inside a function, a private name taken by
    from-import and one reached through a module alias are all found; dunders and the module's
    own names are not private uses."""
    source = ("from . import __version__\n"
              "from .runner import _finished, compare_to\n"
              "from . import tabular as tab\n"
              "import cxvae.store as st\n"
              "def f():\n"
              "    from cxvae.cli import main\n"
              "    from .bias import _check\n"
              "    return tab._names, tab.__doc__, st._lock\n")
    found, aliases = _imports(source)
    assert sorted({t for _, t, _ in found}) == ["__init__", "bias", "cli", "runner", "store", "tabular"]
    assert aliases == {"tab": "tabular", "st": "store"}
    assert sorted(_private_uses(source, own="bias")) == ["2 runner._finished", "8 store._lock", "8 tabular._names"]
    assert _imports(source, in_package=False)[0] == [(4, "store", []), (6, "cli", ["main"])]
