"""The house without circles: every gs_core module imports on its own, and imports only downward.

Layers, lowest first (a module may import its own layer and the ones below it, never one above):

  0 files, device      ground floor: atomic writes, digests, CheckpointError; the torch device choice
  1 models             generators and discriminator, the registry
  2 checkpoint         storage: safetensors + card; students' spec hooks are registered from slim/student.py
  3 data               photos, the embedded photo set, the teacher-output cache
  4 eval               cost (params, MACs, bits, the one latency timer `median_ms`) and quality metrics
  5 slim               the GS method: gates, quantization, plan, training loop, extraction, packing
  6 deploy             ONNX export, runtimes, deployed latency, the per-layer latency table, engine choice
  7 methods, teacher   what combines slim, eval and deploy: GS and its baselines; the teacher's training
  8 grid               the sweep and the manifest
  9 grid_ray, jobs     the Ray backend of the grid; the queue of users' compression jobs (runs grid points)
 10 cli, __main__      the command line
 11 gs_core            the package itself: imports slim.student so its spec hooks are always registered

The static walk reads every import statement (those inside functions too), so a lazy import cannot hide a cycle
or an upward edge.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path


PACKAGE = Path(__file__).resolve().parents[1] / "gs_core"
LAYERS = [("gs_core.files", "gs_core.device"), ("gs_core.models",), ("gs_core.checkpoint",), ("gs_core.data",),
          ("gs_core.eval",), ("gs_core.slim",), ("gs_core.deploy",), ("gs_core.methods", "gs_core.teacher"),
          ("gs_core.grid",), ("gs_core.grid_ray", "gs_core.jobs"), ("gs_core.cli", "gs_core.__main__"), ("gs_core",)]


def module_names() -> list[str]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def module_path(name: str) -> Path:
    base = PACKAGE.parent.joinpath(*name.split("."))
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


def resolve(name: str, known: set[str]) -> str:
    """The gs_core module an imported name lives in: `gs_core.models.Generator` -> `gs_core.models`."""
    while name not in known:
        name = name.rpartition(".")[0]
    return name


def imports_of(name: str, known: set[str]) -> set[str]:
    """Every gs_core module `name` imports, at module level or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(module_path(name).read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            # `from gs_core.eval import cost` imports the module gs_core.eval.cost; `from . import x` counts too
            package = name if module_path(name).name == "__init__.py" else name.rpartition(".")[0]
            base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]) if node.level else ""
            source = ".".join(part for part in (base, node.module) if part)
            targets = [f"{source}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {resolve(t, known) for t in targets if t.split(".")[0] == "gs_core"}
    return found - {name}


def import_graph() -> dict[str, set[str]]:
    names = module_names()
    known = set(names)
    return {name: imports_of(name, known) for name in names}


def layer(name: str) -> int:
    """Index in LAYERS of the longest prefix that names `name`'s layer."""
    matches = [(len(prefix), index) for index, prefixes in enumerate(LAYERS) for prefix in prefixes
               if name == prefix or name.startswith(prefix + ".")]
    assert matches, f"{name} belongs to no layer: add it to LAYERS (and the docstring)"
    return max(matches)[1]


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as a path that ends where it starts, or None (depth-first search, three colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_walk_sees_imports_inside_functions():
    graph = import_graph()
    assert "gs_core.deploy.runtime" in graph["gs_core.cli"]  # cli imports it inside a function only
    assert "gs_core.files" in graph["gs_core.checkpoint"]


def test_the_walk_resolves_relative_imports(tmp_path, monkeypatch):
    (tmp_path / "gs_core" / "slim").mkdir(parents=True)
    (tmp_path / "gs_core" / "__init__.py").write_text("")
    (tmp_path / "gs_core" / "files.py").write_text("")
    (tmp_path / "gs_core" / "slim" / "__init__.py").write_text("from . import plan\n")
    (tmp_path / "gs_core" / "slim" / "plan.py").write_text("from ..files import x\nfrom .quant import y\n")
    (tmp_path / "gs_core" / "slim" / "quant.py").write_text("import gs_core.files\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", tmp_path / "gs_core")
    assert import_graph() == {"gs_core": set(), "gs_core.files": set(), "gs_core.slim": {"gs_core.slim.plan"},
                              "gs_core.slim.plan": {"gs_core.files", "gs_core.slim.quant"},
                              "gs_core.slim.quant": {"gs_core.files"}}


def test_find_cycle_finds_one_and_only_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_gs_core_imports_form_no_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_every_import_goes_down_the_layers():
    upward = [f"{a} (layer {layer(a)}) imports {b} (layer {layer(b)})"
              for a, targets in import_graph().items() for b in sorted(targets) if layer(b) > layer(a)]
    assert not upward, "\n".join(upward)


def test_the_ground_floor_imports_nothing_of_gs_core():
    graph = import_graph()
    assert graph["gs_core.files"] == set()
    assert not any(b.startswith("gs_core.slim") for b in graph["gs_core.checkpoint"])


# Each module is imported after every gs_core module is dropped from sys.modules, so it must import on its own,
# whatever was imported before it; third-party packages (torch: seconds) stay loaded, so one interpreter serves all.
ALONE = """
import importlib, sys, traceback
for name in sys.argv[1:]:
    for loaded in [m for m in sys.modules if m == "gs_core" or m.startswith("gs_core.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception:
        print(f"{name}: {traceback.format_exc(limit=-3)}")
"""


def test_every_module_imports_on_its_own_in_a_fresh_interpreter():
    names = [name for name in module_names() if name != "gs_core.__main__"]  # that one runs the command line
    run = subprocess.run([sys.executable, "-c", ALONE, *names], capture_output=True, text=True, timeout=280,
                         cwd=PACKAGE.parent)
    assert run.returncode == 0 and not run.stdout, run.stdout[-3000:] + run.stderr[-2000:]


def test_storage_alone_rebuilds_a_gs_student(tiny_generator, tmp_path):
    """checkpoint.py does not import the method; importing only it must still load a gated, quantized student
    (gs_core/__init__.py registers slim.student's spec hooks before anything else runs)."""
    from gs_core.checkpoint import save_model
    from gs_core.slim.student import make_student

    save_model(make_student(tiny_generator("cartoongan"), bits=4), tmp_path / "student")
    load = ("from gs_core.checkpoint import load_model; "
            f"model, card = load_model({str(tmp_path / 'student')!r}); "
            "print(type(model).__name__, card['architecture']['gated'], "
            "sorted({type(m).__name__ for m in model.modules()} & {'ChannelGate', 'QuantConv2d'}), "
            "sorted(set(card['architecture']['weight_bits'].values())))")
    run = subprocess.run([sys.executable, "-c", load], capture_output=True, text=True, timeout=240,
                         cwd=PACKAGE.parent)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "CartoonGAN True ['ChannelGate', 'QuantConv2d'] [4]"
