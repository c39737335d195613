"""dvc.yaml must list, for every stage, each project module the stage's code imports (directly or not).

A module missing from `deps` means DVC does not rerun the stage when that code changes, and the
committed metrics silently describe old code.
"""

import ast

import yaml

from tests.helpers import ROOT

PACKAGES = ("acento", "pipeline")  # the library and the stage scripts


def project_imports(module: str) -> set[str]:
    """Files of the project modules `module` imports, transitively, itself included (as repo paths)."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        path = ROOT / (name.replace(".", "/") + ".py")
        rel = str(path.relative_to(ROOT))
        if rel in seen or not path.is_file():
            continue
        seen.add(rel)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PACKAGES:
                todo.append(node.module)
                todo += [f"{node.module}.{alias.name}" for alias in node.names]  # `from acento.audio import mpeg`
            elif isinstance(node, ast.Import):
                todo += [alias.name for alias in node.names if alias.name.split(".")[0] in PACKAGES]
    return seen


def stage_modules() -> dict[str, tuple[str, set[str]]]:
    """stage name -> (the module its cmd runs, its deps that are project files)."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    out = {}
    for name, stage in stages.items():
        words = stage["cmd"].split()
        module = words[words.index("-m") + 1]
        deps = {d if isinstance(d, str) else next(iter(d)) for d in stage.get("deps", [])}
        out[name] = (module, {d for d in deps if d.startswith(tuple(f"{p}/" for p in PACKAGES))})
    return out


def test_the_import_walk_finds_transitive_imports(tmp_path):
    # known answer on the project itself: evaluate reaches config through more than one module
    found = project_imports("acento.console")
    assert found == {"acento/console.py", "acento/config.py", "acento/errors.py", "acento/audio/melscale.py"}


def test_every_stage_lists_every_project_module_it_imports():
    problems = []
    for name, (module, deps) in stage_modules().items():
        missing = sorted(project_imports(module) - deps)
        if missing:
            problems.append(f"stage '{name}' ({module}) misses deps: {', '.join(missing)}")
    assert not problems, "dvc.yaml: " + "; ".join(problems)


def test_every_stage_runs_a_module_of_the_package():
    modules = stage_modules()
    assert set(modules) == {"download", "prepare", "features", "pretrain", "train", "evaluate"}
    for name, (module, _) in modules.items():
        assert (ROOT / (module.replace(".", "/") + ".py")).is_file(), name


def test_dvc_yaml_outputs_are_the_paths_the_code_writes():
    from acento import paths

    dvc_yaml = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))
    declared = set()
    for stage in [*dvc_yaml["stages"].values(), dvc_yaml]:  # each stage's, then the top-level (compare)
        for kind in ("outs", "metrics", "plots"):
            declared |= {o if isinstance(o, str) else next(iter(o)) for o in stage.get(kind, [])}
    # every path but the reports for people of the tools (git tracks them, not DVC): the comparison's
    # Markdown, the ablation's and the benchmarks' reports; and the final model, a tool's output
    # (`make final-model`), the stages' wall-clock timings and train's resume checkpoint, which neither git
    # nor DVC tracks (DVC would delete the checkpoint before the stage could resume from it), nor the
    # self-training first run's curves (a log: the model is the second run's)
    for_people = {paths.COMPARE_REPORT, paths.ABLATION_REPORT, paths.ABLATION_JSON, paths.BENCH_REPORT,
                  paths.BENCH_JSON, paths.FINAL_MODEL, paths.TRAIN_TIMING, paths.EVAL_TIMING, paths.TRAIN_CHECKPOINT,
                  paths.TEACHER_CURVES}
    in_code = {str(v) for k, v in vars(paths).items() if k.isupper() and v not in for_people}
    # the dvclive folders are declared by their plots subfolders
    curves = {str(paths.TRAINING_CURVES), str(paths.PRETRAINING_CURVES)}
    in_code = {f"{p}/plots/metrics" if p in curves else p for p in in_code}
    assert declared == in_code
    # the trained model is also the registry's model artifact
    assert [a["path"] for a in dvc_yaml["artifacts"].values() if a["type"] == "model"] == [str(paths.MODEL_FILE)]
