"""The import layering of the project's modules (docs/layout.md shows it with each module's job).

`LAYERS` sorts every module (a path from the repository root; tests/ and benchmarks/ are not
part of it) into layers, bottom to top. A module may import modules of its own layer and of the
layers below it, never of a layer above; the command-line tools (the top layer) import no other
tool. Imports are read with `ast`, at module level and inside functions alike (`if
TYPE_CHECKING:` blocks too), so a late import cannot hide an upward arrow.
"""

import ast
import os
import re
from typing import Dict, Iterator, List, Optional, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Bottom to top: (layer, its modules).
LAYERS: Tuple[Tuple[str, Tuple[str, ...]], ...] = (
    ("leaves", ("errors.py", "bounds.py", "detections.py", "sessions.py",
                "backbone/__init__.py", "dataset/__init__.py")),
    ("shared tools", ("cli.py", "outputs.py", "utils.py")),
    ("config", ("hparams_config.py", "run_options.py")),
    ("data", ("dataset/tfrecord_util.py", "dataset/validation.py", "dataset/label_maps.py",
              "dataset/clutter_dataset.py", "record_files.py", "coco_json.py", "coco_metric.py",
              "coco_metric_ops.py")),
    ("model", ("backbone/efficientnet.py", "anchors.py", "vfpn.py", "efficientdet_arch.py",
               "postprocess.py", "checkpoint_io.py", "run_dir.py")),
    ("input pipeline", ("dataloader.py",)),
    ("training", ("vfpn_training.py", "train_hooks.py", "cluster.py", "det_model_fn.py",
                  "evaluator.py", "bn_calibration.py", "record_checks.py", "trainer.py")),
    ("serving", ("serving.py", "export.py", "detectors.py", "visualize.py", "quantize.py",
                 "inference.py", "inspect_options.py")),
    ("command line", ("main.py", "model_inspect.py", "dataset/create_coco_tfrecord.py",
                      "dataset/create_pascal_tfrecord.py", "dataset/sample_dataset.py",
                      "dataset/validate_tfrecord.py", "docs/draw_fpn.py")),
)
# The layer whose modules must not import one another: a tool's logic that another needs
# belongs in a library module below.
TOOLS = "command line"
# Directories that hold no project modules (tests and benchmarks sit on top of everything).
NOT_MODULES = ("tests", "benchmarks")

LAYER_OF: Dict[str, int] = {m: i for i, (_, modules) in enumerate(LAYERS) for m in modules}


def project_modules() -> List[str]:
    """Every .py file of the repository (paths from the root), tests and benchmarks aside."""
    found = []
    for directory, subdirs, files in os.walk(ROOT):
        rel = os.path.relpath(directory, ROOT)
        subdirs[:] = [d for d in subdirs if not d.startswith((".", "__"))
                      and not (rel == "." and d in NOT_MODULES)]
        found += [os.path.normpath(os.path.join(rel, f)).replace(os.sep, "/")
                  for f in files if f.endswith(".py")]
    return sorted(found)


def _module_file(dotted: str) -> Optional[str]:
    """The project file that module name `dotted` is, or None (a library)."""
    path = dotted.replace(".", "/")
    for candidate in (path + ".py", path + "/__init__.py"):
        if os.path.isfile(os.path.join(ROOT, candidate)):
            return candidate
    return None


def _resolve(base: str, name: str) -> str:
    """`from base import name`: the module base.name when it is one, else base."""
    return f"{base}.{name}" if _module_file(f"{base}.{name}") else base


def imports_in(source: str, module: str) -> Iterator[Tuple[str, int]]:
    """(project file, line) of every import in `source`, the text of `module`: `import a.b`
    names a.b, `from a import b` names a.b when that is a module, else a."""
    package = module.split("/")[:-1]
    for node in ast.walk(ast.parse(source, module)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            # A relative import counts from the importing module's package.
            parts = package[:len(package) - node.level + 1] if node.level else []
            base = ".".join(parts + ([node.module] if node.module else []))
            names = [_resolve(base, alias.name) for alias in node.names]
        else:
            continue
        for name in names:
            target = _module_file(name)
            if target and target != module:
                yield target, node.lineno


def imported_modules(module: str) -> List[Tuple[str, int]]:
    """(project file, line) of every import in the project file `module`."""
    with open(os.path.join(ROOT, module), encoding="utf-8") as f:
        return list(imports_in(f.read(), module))


def _layer(module: str) -> int:
    """`module`'s layer index; a file outside the table (tests, benchmarks) is above all."""
    return LAYER_OF.get(module, len(LAYERS))


def _describe(module: str) -> str:
    name = LAYERS[_layer(module)][0] if module in LAYER_OF else "above every layer"
    return f"{module} ({name})"


def test_every_module_has_one_layer():
    listed = [m for _, modules in LAYERS for m in modules]
    twice = sorted({m for m in listed if listed.count(m) > 1})
    assert not twice, f"modules listed in two layers of LAYERS: {twice}"
    missing = sorted(set(project_modules()) - set(listed))
    assert not missing, (f"modules without a layer: {missing}; add each to LAYERS in "
                         f"tests/test_layers.py and to docs/layout.md")
    gone = sorted(set(listed) - set(project_modules()))
    assert not gone, f"LAYERS lists files that do not exist: {gone}"


def test_no_module_imports_from_a_higher_layer():
    upward = [f"{_describe(module)} imports {_describe(target)} (line {line})"
              for module in LAYER_OF for target, line in imported_modules(module)
              if _layer(target) > _layer(module)]
    assert not upward, "imports from a higher layer:\n" + "\n".join(upward)


def test_no_command_line_tool_imports_another():
    tools = dict(LAYERS)[TOOLS]
    crossing = [f"{module} imports {target} (line {line})" for module in tools
                for target, line in imported_modules(module) if target in tools]
    assert not crossing, "a tool imports another tool:\n" + "\n".join(crossing)


def test_the_parser_sees_late_and_from_imports():
    """The imports an upward arrow may hide in (a late import inside a function, `from
    package import module`, a relative import) are found; libraries are left out."""
    source = ("import numpy as np\nfrom dataset import label_maps, tfrecord_util\n"
              "from . import validation\n"
              "def late():\n    import trainer\n    from hparams_config import Config\n")
    found = sorted(imports_in(source, "dataset/probe.py"))
    assert found == [("dataset/label_maps.py", 2), ("dataset/tfrecord_util.py", 2),
                     ("dataset/validation.py", 3), ("hparams_config.py", 6), ("trainer.py", 5)]


def test_the_layout_page_shows_this_table():
    """docs/layout.md's table rows (layer, module, job; a blank layer continues the one above)
    put every module in the layer LAYERS gives it."""
    shown: Dict[str, str] = {}
    layer = ""
    with open(os.path.join(ROOT, "docs", "layout.md"), encoding="utf-8") as f:
        for row in re.finditer(r"^\|([^|]*)\|\s*`([\w/]+\.py)`\s*\|", f.read(), re.M):
            layer = row.group(1).strip() or layer
            shown[row.group(2)] = layer
    assert shown == {m: name for name, modules in LAYERS for m in modules}
