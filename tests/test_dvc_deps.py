"""dvc.yaml lists, for every stage, each package module that the stage's code imports (transitively).

Chosen over "the whole package as one dep": editing serve.py or the README must not re-train the
model, while editing any module a stage really runs must make `dvc status` report it stale.
Imports are read from the source (ast), lazy imports inside functions included; cli.py is the thin
argv layer and is not a dep.
"""

from __future__ import annotations

import ast

import pytest
import yaml

from conftest import REPO

PKG = REPO / "src/deepfake_detector"
STAGE_MODULES = {"validate": "validate", "split": "split", "train": "train", "baselines": "baselines",
                 "evaluate": "evaluate", "drift": "drift"}


def package_imports(module: str) -> set[str]:
    """Transitive closure of `from .x import ...` / `from . import x` within the package."""
    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        tree = ast.parse((PKG / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                if node.module:
                    todo.append(node.module.split(".")[0])
                else:
                    todo.extend(a.name for a in node.names)
    return seen


@pytest.mark.parametrize("stage", sorted(STAGE_MODULES))
def test_every_imported_module_is_a_stage_dep(stage):
    deps = set(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage]["deps"])
    needed = {f"src/deepfake_detector/{m}.py" for m in package_imports(STAGE_MODULES[stage])}
    if "src/deepfake_detector/datadocs.py" in needed:  # the vendored Data Docs assets it copies
        needed.add("src/deepfake_detector/assets/gx_docs")
    missing = sorted(needed - deps)
    assert not missing, f"dvc.yaml stage {stage!r} misses deps: {missing}"
    stale = sorted(d for d in deps if d.startswith("src/") and d not in needed)
    assert not stale, f"dvc.yaml stage {stage!r} lists modules it does not import: {stale}"


@pytest.mark.parametrize("module", ["predict", "serve", "export", "drift", "evaluate", "gate", "scoring", "validate"])
def test_product_and_evaluation_code_never_imports_the_training_code(module):
    """Scoring lives in scoring.py; only `train` and `baselines` (which trains) reach train.py."""
    assert not {"train", "gan", "distributed"} & package_imports(module), module
