"""The packages' imports point one way:
backbones <- data <- models <- training <- evaluation/export <- reproduce <- cli,
with layers and metrics (which import none of the project) usable from models up.

`tfrecords_tools` (the converters) depends on `nlr_tf.data` only, and only
the binaries and the reproduction use it. Every import counts, at module
level or inside a function.
"""

import ast
import os

from cli_util import ROOT

BASE = {"nlr_tf.backbones", "nlr_tf.layers", "nlr_tf.metrics"}  # each imports none of the project's packages
BELOW = {
    **{package: set() for package in BASE},
    "nlr_tf.data": {"nlr_tf.backbones"},
    "nlr_tf.models": BASE | {"nlr_tf.data"},
    "nlr_tf.training": BASE | {"nlr_tf.data", "nlr_tf.models"},
    "nlr_tf.evaluation": BASE | {"nlr_tf.data", "nlr_tf.models", "nlr_tf.training"},
    "nlr_tf.export": BASE | {"nlr_tf.data", "nlr_tf.models", "nlr_tf.training"},
    "tfrecords_tools": {"nlr_tf.data"},
}
BELOW["nlr_tf.reproduce"] = set(BELOW) - {"nlr_tf.reproduce"}
BELOW["nlr_tf.cli"] = set(BELOW) - {"nlr_tf.cli"}


def _layer(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "nlr_tf" and len(parts) > 1 else parts[0]


def _imports(path: str):
    """(imported module, line) for every import of the project's packages in a file."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
            # `from nlr_tf import data` imports the package nlr_tf.data
            if node.module == "nlr_tf":
                names = [f"nlr_tf.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] in ("nlr_tf", "tfrecords_tools"):
                yield name, node.lineno


def _modules():
    for package in ("nlr_tf", "tfrecords_tools"):
        for folder, _, files in os.walk(os.path.join(ROOT, package)):
            for name in sorted(files):
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    module = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".").removesuffix(".__init__")
                    yield module, path


def test_every_package_imports_only_the_layers_below_it():
    violations = []
    seen = set()
    for module, path in _modules():
        layer = _layer(module)
        if layer == "nlr_tf":  # the package's own __init__
            continue
        assert layer in BELOW, f"{module} is in no layer: add its package to this test's BELOW"
        seen.add(layer)
        for imported, line in _imports(path):
            target = _layer(imported)
            if target != layer and target not in BELOW[layer]:
                violations.append(f"{os.path.relpath(path, ROOT)}:{line}: {layer} imports {imported}")
    assert seen == set(BELOW)
    assert not violations, "imports against the layering:\n" + "\n".join(violations)


def test_the_check_sees_imports_inside_functions(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("import os\n\ndef f():\n    from nlr_tf.cli import train\n    import tfrecords_tools.writer\n")
    assert list(_imports(str(path))) == [("nlr_tf.cli", 4), ("tfrecords_tools.writer", 5)]
