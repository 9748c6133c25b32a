"""dvc.yaml lists, for every stage, each package module that the stage's code imports (transitively).

Chosen over "the whole package as one dep": editing serve.py or the README must not re-train the
model, while editing any module a stage really runs must make `dvc status` report it stale.
Imports are read from the source (ast), lazy imports inside functions included; cli.py is the thin
argv layer and is not a dep.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from conftest import REPO

PKG = REPO / "src/deepfake_detector"
STAGE_MODULES = {"validate": "data.validate", "split": "data.split", "train": "model.train",
                 "baselines": "evaluation.baselines", "evaluate": "evaluation.evaluate", "drift": "evaluation.drift"}


def module_file(module: str, root: Path = PKG) -> Path:
    """'model.train' -> src/deepfake_detector/model/train.py"""
    return root / (module.replace(".", "/") + ".py")


def direct_imports(module: str, root: Path = PKG) -> set[str]:
    """Package modules a module imports (relative imports, lazy ones inside functions included)."""
    tree = ast.parse(module_file(module, root).read_text())
    here = module.split(".")[:-1]  # the module's package path inside deepfake_detector
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level >= 1:
            base = here[: len(here) - (node.level - 1)]
            pkg = [*base, node.module] if node.module else base
            out.add(".".join(pkg) or "__init__")  # from .x import name; `from .. import x` at the top: __init__.py
            # or from . import module / from .x import module:
            out.update(".".join([*pkg, a.name]) for a in node.names)
    return {m for m in out if module_file(m, root).is_file()}


def package_imports(module: str) -> set[str]:
    """Transitive closure of direct_imports."""
    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(direct_imports(name))
    return seen


@pytest.mark.parametrize("stage", sorted(STAGE_MODULES))
def test_every_imported_module_is_a_stage_dep(stage):
    deps = set(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage]["deps"])
    needed = {module_file(m).relative_to(REPO).as_posix() for m in package_imports(STAGE_MODULES[stage])}
    if "src/deepfake_detector/data/datadocs.py" in needed:  # the vendored Data Docs assets it copies
        needed.add("src/deepfake_detector/data/assets/gx_docs")
    missing = sorted(needed - deps)
    assert not missing, f"dvc.yaml stage {stage!r} misses deps: {missing}"
    stale = sorted(d for d in deps if d.startswith("src/") and d not in needed)
    assert not stale, f"dvc.yaml stage {stage!r} lists modules it does not import: {stale}"


@pytest.mark.parametrize("module", ["serving.predict", "serving.serve", "serving.export", "evaluation.drift",
                                    "evaluation.evaluate", "evaluation.gate", "model.scoring", "data.validate"])
def test_product_and_evaluation_code_never_imports_the_training_code(module):
    """Scoring lives in model/scoring.py; only `train` and `baselines` (which trains) reach train.py."""
    assert not {"model.train", "model.gan", "model.distributed"} & package_imports(module), module


def test_no_import_cycles_between_modules():
    import networkx as nx

    graph = nx.DiGraph()
    for path in PKG.rglob("*.py"):
        module = path.relative_to(PKG).with_suffix("").as_posix().replace("/", ".")
        if path.name != "__init__.py":
            graph.add_edges_from((module, dep) for dep in direct_imports(module))
    assert list(nx.simple_cycles(graph)) == []


def test_no_module_over_400_lines():
    long = {p.relative_to(PKG).as_posix(): n for p in PKG.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 400}
    assert long == {}


# The house: each floor imports only floors below it (evaluation and serving share a floor and do not
# import each other); the ground floor (core/) imports nothing of ours. docs/pipeline.md draws it.
FLOORS = {"core": 0, "data": 1, "model": 2, "evaluation": 3, "serving": 3}
TOP = 4  # cli.py, api.py, __init__.py: the entry points


def floor(module: str) -> int:
    return FLOORS.get(module.split(".")[0], TOP) if "." in module else TOP


def upward_imports(root: Path = PKG) -> list[str]:
    out = []
    for path in root.rglob("*.py"):
        module = path.relative_to(root).with_suffix("").as_posix().replace("/", ".")
        if path.name == "__init__.py":
            continue
        for dep in direct_imports(module, root):
            same_room = dep.split(".")[0] == module.split(".")[0] or floor(dep) == floor(module) == TOP  # the entry points
            if floor(dep) > floor(module) or (floor(dep) == floor(module) and not same_room):
                out.append(f"{module} -> {dep}")
    return sorted(out)


def test_every_import_runs_down_a_floor():
    assert upward_imports() == [], "imports that do not run down a floor:\n" + "\n".join(upward_imports())


def test_the_floor_check_reports_upward_and_sideways_imports(tmp_path):
    """The check above can fail: a house with a data -> model, a lazy core -> data and a serving ->
    evaluation import is reported three times; its downward imports are not."""
    files = {"core/params.py": "def f():\n    from ..data import demo\n",
             "data/demo.py": "from ..core.params import f\nfrom ..model.train import g\n",
             "model/train.py": "from ..data.demo import x\ng = 1\n",
             "evaluation/gate.py": "from ..model.train import g\n",
             "serving/serve.py": "from ..evaluation.gate import g\n", "cli.py": "from .serving.serve import g\n"}
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    assert upward_imports(tmp_path) == ["core.params -> data.demo", "data.demo -> model.train",
                                        "serving.serve -> evaluation.gate"]


@pytest.mark.parametrize("stage", ["train"])
def test_stages_that_train_name_each_train_key_that_changes_the_model(stage):
    """Per key, so that `train.threads`, `train.device`, `train.cache_ram_gb` or `train.ddp_backend` (how a run
    is placed, not what it learns: core.params.RUNTIME_TRAIN_KEYS) never make the model stale. The baselines'
    keys are what their code reads (tests/test_param_reads.py): train.gan_weight is not one of them."""
    from deepfake_detector.core.params import RUNTIME_TRAIN_KEYS, TrainParams

    params = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage]["params"]
    named = {p.removeprefix("train.") for p in params if p.startswith("train.")}
    assert "train" not in params and named == set(TrainParams.model_fields) - RUNTIME_TRAIN_KEYS
    assert {"seed", "model", "validate.max_pixels", "serve.formats"} <= set(params)
