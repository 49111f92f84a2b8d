"""The package's layers import one way, and nothing imports lazily without a reason.

Every module of tinyslm is read with `ast` (nothing is imported): its module-level and
function-level imports, absolute and relative, `from . import x` resolved to the submodule x where
x is one. Each module belongs to one layer of LAYERS; a module may import its own layer and the
layers listed before it, never one listed after it. No two modules may import each other, directly
or round a longer loop, even within one layer. A module that enters a subpackage from outside also
runs that subpackage's __init__.py first, so that counts as an import for the loops too (it is how
`checkpoint -> gguf.loader -> checkpoint` fails at import time with a half-initialized module).

An import inside a function is allowed for the optional dependencies (pyproject.toml's extras) and
for the few reasons in LAZY_ALLOWED; every other one must move to the top of its module.
"""

from __future__ import annotations

import ast
import tomllib
from dataclasses import dataclass
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "tinyslm"

# Lowest first. A module may import from its own layer and from those above it in this list.
# A module is placed by the longest prefix that names it ("tinyslm" names only tinyslm/__init__.py); "*.command" is
# every subpackage's command.py.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    # what everything may use: exception types, careful file reading, the machine's cores and threads
    ("foundation", ("tinyslm.errors", "tinyslm.files", "tinyslm.machine")),
    # the config as data (checked fields, per-layer expansion, the rope_scaling dict's schema)
    ("config", ("tinyslm.config", "tinyslm.layerwise", "tinyslm.rope_scaling")),
    # the plain decoder: its modules, the model, its size, greedy/sampled generation
    ("reference", ("tinyslm.layers", "tinyslm.model", "tinyslm.sizing", "tinyslm.sampling", "tinyslm.generate")),
    # one file per model family: config.json <-> ModelConfig, HF tensor names <-> ours
    ("families", ("tinyslm.families",)),
    # files on disk: HF folders, GGUF, tokenizers
    ("formats", ("tinyslm.checkpoint", "tinyslm.tokenizer", "tinyslm.tokenizer_types", "tinyslm.chat_template",
                 "tinyslm.gguf")),
    # what makes it fast: native kernels, decode steps, quantized linears; and the loading entry points
    # that hand a format's quantized weights to them (tinyslm.pretrained)
    ("runtime", ("tinyslm.quant", "tinyslm.runtime", "tinyslm.pretrained")),
    # what is done with models: training, data, ablations, the inspect/bench/parity/demo tools, a chat session, the course's
    # exercise checkers (tinyslm.course: what notebooks/ imports besides the public API)
    ("experiments", ("tinyslm.train", "tinyslm.data", "tinyslm.ablate", "tinyslm.tools", "tinyslm.chat",
                     "tinyslm.course")),
    # the command line: the parser and every subpackage's command.py
    ("cli", ("tinyslm.cli", "*.command")),
    # `import tinyslm`: the public names, re-exported from wherever they live
    ("api", ("tinyslm",)),
]

# pyproject.toml: the extras (imported only where they are used, so that tinyslm runs without them), and
# the standard library's modules that exist on some systems only
OPTIONAL = {  # by top-level name
    "gguf": "extra [gguf]: only when a GGUF file is read or written",
    "matplotlib": "extras [plots], [course]: `tinyslm ablate`'s PNG plots, the lessons' figures",
    "llama_cpp": "extra [llamacpp]: llama.cpp beside tinyslm in `tinyslm bench`",
    "transformers": "extra [test]: the reference `tinyslm parity` and the tests compare against",
    "accelerate": "extra [test]: what transformers needs to load a GGUF",
    "fcntl": "POSIX only: file locks (files.lock_within)",
}

# Other lazy imports, each with its reason: (importing module, imported module) -> why.
LAZY_ALLOWED: dict[tuple[str, str], str] = {
    # start-up: torch modules that cost a second or more to import, for what few runs do (measured after torch)
    ("tinyslm.train.trainer", "torch.distributed.checkpoint.state_dict"): "1.4 s; only a training run's save/resume",
    ("tinyslm.train.distributed", "torch.distributed.fsdp"): "1.3 s; only `tinyslm train --fsdp`",
    ("tinyslm.quant.native", "torch.utils"): "cpp_extension, 0.3 s; only when the native kernels are built or loaded",
    # old import paths, kept working: a lower layer re-exports a name that moved up, resolved on first use (PEP 562)
    ("tinyslm.checkpoint", "tinyslm.pretrained"): "compat: tinyslm.checkpoint.load_pretrained",
    ("tinyslm.gguf", "tinyslm.pretrained"): "compat: tinyslm.gguf.load_gguf",
    ("tinyslm.gguf.loader", "tinyslm.pretrained"): "compat: tinyslm.gguf.loader.load_gguf / quantized_linear_factory",
}

# Imports not checked yet, each with the pending change that will fix it (remove the entry then): a module (all its
# imports) or one (module, imported module) pair. test_the_allowances_are_still_needed fails once one has gone, so
# that none outlives its fix. A layer violation named here is left out of the cycle check too.
PENDING: dict[str | tuple[str, str], str] = {}


def pending(imp: Import) -> bool:
    return imp.importer in PENDING or (imp.importer, imp.target) in PENDING


# ----------------------------------------------------------------------------------------------
# reading the package


@dataclass(frozen=True)
class Import:
    importer: str
    target: str  # a tinyslm module, or a third-party / standard-library one (`from a.b import c`: a.b)
    line: int
    lazy: bool  # inside a function or class body, not at module level
    implicit: bool = False  # the __init__.py of a subpackage that `target`'s import runs first

    def __str__(self) -> str:
        how = "runs the package __init__ of" if self.implicit else "lazily imports" if self.lazy else "imports"
        return f"{_path(self.importer)}:{self.line} {how} {self.target}"


def _path(module: str) -> str:
    rel = Path(*module.split("."))
    return str(rel / "__init__.py") if (PACKAGE.parent / rel).is_dir() else f"{rel}.py"


def package_modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name, for its __init__.py)."""
    modules = {}
    for file in sorted(PACKAGE.rglob("*.py")):
        parts = list(file.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = file
    return modules


def _is_package(name: str, modules: dict[str, Path]) -> bool:
    return name in modules and modules[name].name == "__init__.py"


def imports_of(name: str, file: Path, modules: dict[str, Path]) -> list[Import]:
    tree = ast.parse(file.read_text(), str(file))
    found: list[Import] = []

    def add(target: str, node: ast.AST, lazy: bool) -> None:
        if target.split(".")[0] == "tinyslm" and target not in modules:  # a name, not a module: its module
            target = target.rpartition(".")[0]
        found.append(Import(name, target, node.lineno, lazy))

    def visit(node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    add(alias.name, child, lazy)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = name if _is_package(name, modules) else name.rpartition(".")[0]
                    for _ in range(child.level - 1):
                        base = base.rpartition(".")[0]
                    base = f"{base}.{child.module}" if child.module else base
                else:
                    base = child.module or ""
                named = [f"{base}.{a.name}" for a in child.names if f"{base}.{a.name}" in modules]
                if len(named) < len(child.names) or base.split(".")[0] != "tinyslm":
                    add(base, child, lazy)  # names defined in `base` itself
                for target in named:  # `from . import x`, `from ..gguf import loader`: the submodule x
                    add(target, child, lazy)
            visit(child, inner)

    visit(tree, False)
    return found


def with_package_inits(imports: list[Import]) -> list[Import]:
    """Each import into a subpackage from outside it also runs that subpackage's __init__.py (the root
    package's own is left out: it runs before anything else and is not entered from inside)."""
    extra = []
    for imp in imports:
        if not imp.target.startswith("tinyslm."):
            continue
        parts = imp.target.split(".")
        for k in range(2, len(parts)):
            package = ".".join(parts[:k])
            if imp.importer != package and not imp.importer.startswith(package + "."):
                extra.append(Import(imp.importer, package, imp.line, imp.lazy, implicit=True))
    return imports + extra


def layer_of(module: str) -> int | None:
    best, best_len = None, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if prefix == "*.command":
                hit = module.endswith(".command")
                length = 10**6  # a command module is a command, whatever package it sits in
            else:
                hit = module == prefix or (prefix != "tinyslm" and module.startswith(prefix + "."))
                length = len(prefix)
            if hit and length > best_len:
                best, best_len = index, length
    return best


def all_imports() -> tuple[dict[str, Path], list[Import]]:
    modules = package_modules()
    imports = [imp for name, file in modules.items() for imp in imports_of(name, file, modules)]
    return modules, imports


def strongly_connected(nodes: list[str], edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm (iterative): the components of the import graph with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    counter = 0
    for root in nodes:
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


# ----------------------------------------------------------------------------------------------
# the checks


def test_every_module_has_a_layer():
    modules = package_modules()
    unplaced = [name for name in modules if layer_of(name) is None]
    assert not unplaced, f"modules in no layer of LAYERS (tests/test_imports.py): place them: {unplaced}"


def layer_violations(imports: list[Import]) -> list[Import]:
    return [
        imp for imp in imports
        if imp.target.split(".")[0] == "tinyslm" and not pending(imp)
        and (imp.importer, imp.target) not in LAZY_ALLOWED  # a compat re-export, named there
        and layer_of(imp.target) > layer_of(imp.importer)
    ]  # fmt: skip


def test_imports_go_down_the_layers_only():
    _, imports = all_imports()
    bad = layer_violations(imports)
    names = [name for name, _ in LAYERS]
    lines = [f"{imp}  ({names[layer_of(imp.importer)]} -> {names[layer_of(imp.target)]})" for imp in bad]
    assert not bad, (
        "imports against the layer order " + " <- ".join(names) + " (a layer may import only those to its left):\n  "
        + "\n  ".join(lines)
    )


def cycle_edges(imports: list[Import], modules) -> list[Import]:
    """The imports the cycle check follows: all but the allowed compat re-exports and the pending layer violations."""
    upward = [imp for imp in imports if pending(imp) and imp.target.split(".")[0] == "tinyslm"
              and layer_of(imp.target) > layer_of(imp.importer)]  # fmt: skip
    kept = [imp for imp in imports if imp not in upward and (imp.importer, imp.target) not in LAZY_ALLOWED]
    return [imp for imp in with_package_inits(kept) if imp.target in modules and imp.target != imp.importer]


def test_no_import_cycles():
    modules, imports = all_imports()
    followed = cycle_edges(imports, modules)
    edges: dict[str, set[str]] = {}
    for imp in followed:
        edges.setdefault(imp.importer, set()).add(imp.target)
    cycles = strongly_connected(sorted(modules), edges)
    described = []
    for component in cycles:
        inside = set(component)
        links = [str(imp) for imp in followed if imp.importer in inside and imp.target in inside]
        described.append(" <-> ".join(component) + ":\n    " + "\n    ".join(sorted(set(links))))
    assert not cycles, "modules that import each other (cut the loop: move the shared part down a layer):\n  " + (
        "\n  ".join(described)
    )


def lazy_violations(imports: list[Import]) -> list[Import]:
    return [
        imp for imp in imports
        if imp.lazy and not pending(imp)
        and imp.target.split(".")[0] not in OPTIONAL and (imp.importer, imp.target) not in LAZY_ALLOWED
    ]  # fmt: skip


def test_lazy_imports_only_for_optional_dependencies_or_a_named_reason():
    _, imports = all_imports()
    bad = lazy_violations(imports)
    assert not bad, (
        "imports inside functions, for no reason in tests/test_imports.py (move them to the top of the module; an "
        "optional dependency goes in OPTIONAL, a start-up cost or an old import path in LAZY_ALLOWED):\n  "
        + "\n  ".join(map(str, bad))
    )


def test_the_allowances_are_still_needed():
    """Every LAZY_ALLOWED entry names a lazy import that still exists, and every PENDING entry still covers a
    violation: an allowance that no longer applies is removed, so that none hides a new import."""
    _, imports = all_imports()
    lazy = {(imp.importer, imp.target) for imp in imports if imp.lazy}
    stale = [pair for pair in LAZY_ALLOWED if pair not in lazy]
    assert not stale, f"LAZY_ALLOWED entries with no such lazy import (remove them): {stale}"
    saved = dict(PENDING)
    try:
        PENDING.clear()
        bad = layer_violations(imports) + lazy_violations(imports)
    finally:
        PENDING.update(saved)
    still = {imp.importer for imp in bad} | {(imp.importer, imp.target) for imp in bad}
    done = [entry for entry in PENDING if entry not in still]
    assert not done, f"PENDING modules with nothing left to exempt (remove them): {done}"


def test_optional_dependencies_match_pyproject():
    """OPTIONAL names the extras of pyproject.toml, never a required dependency."""
    project = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["project"]
    required = {d.split(";")[0].split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip().replace("-", "_")
                for d in project["dependencies"]}  # fmt: skip
    assert not required & set(OPTIONAL), f"required dependencies listed as optional: {required & set(OPTIONAL)}"


# ----------------------------------------------------------------------------------------------
# the checker checks itself on small made-up packages


def test_relative_imports_resolve_to_submodules(tmp_path):
    modules = {name: tmp_path / f"{name}.py" for name in ("tinyslm.gguf", "tinyslm.gguf.loader", "tinyslm.checkpoint")}
    modules["tinyslm.gguf"] = tmp_path / "__init__.py"
    source = tmp_path / "loader.py"
    source.write_text("from . import reader\nfrom .. import checkpoint\nfrom ..checkpoint import f\n"
                      "def g():\n    from . import loader\n    import numpy.linalg\n")  # fmt: skip
    found = imports_of("tinyslm.gguf.loader", source, modules)
    assert [(i.target, i.lazy) for i in found] == [
        ("tinyslm.gguf", False), ("tinyslm.checkpoint", False), ("tinyslm.checkpoint", False),
        ("tinyslm.gguf.loader", True), ("numpy.linalg", True),
    ]  # fmt: skip


def test_a_loop_through_a_package_init_is_a_cycle():
    imports = [Import("tinyslm.checkpoint", "tinyslm.gguf.reader", 1, False),
               Import("tinyslm.gguf", "tinyslm.gguf.loader", 1, False),
               Import("tinyslm.gguf.loader", "tinyslm.checkpoint", 1, False)]  # fmt: skip
    edges: dict[str, set[str]] = {}
    for imp in with_package_inits(imports):
        edges.setdefault(imp.importer, set()).add(imp.target)
    names = ["tinyslm.checkpoint", "tinyslm.gguf", "tinyslm.gguf.loader", "tinyslm.gguf.reader"]
    assert strongly_connected(names, edges) == [["tinyslm.checkpoint", "tinyslm.gguf", "tinyslm.gguf.loader"]]


def test_layers_place_modules_by_their_longest_prefix():
    names = [name for name, _ in LAYERS]
    assert names[layer_of("tinyslm.gguf.command")] == "cli"
    assert names[layer_of("tinyslm.gguf.loader")] == "formats"
    assert names[layer_of("tinyslm")] == "api"
    assert names[layer_of("tinyslm.tokenizer_types")] == "formats"
