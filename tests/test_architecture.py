"""The structure says what the code is: lanes over one core (docs/architecture.md), checked from
the import graph of src/ (every import statement, lazy ones inside functions included)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "airoad"
# each lane: its own package; none imports another, nothing else imports it
LANES = ("airoad.sft", "airoad.pref", "airoad.export")
ENTRIES = "airoad.commands"  # one short entry per command: the only place a lane is named
MAX_LINES, MAX_POSITIONAL = 80, 7


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PKG.rglob("*.py")}


def imports_of(path: Path) -> set[str]:
    """airoad modules ``path`` imports, anywhere in the file (``from airoad.x import y`` counts as
    airoad.x.y when that is a module, else as airoad.x)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("airoad")}
        elif (
            isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("airoad")
        ):
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                found.add(sub if sub in MODULES else node.module)
    return {m for m in found if m in MODULES}


GRAPH = {name: imports_of(path) - {name} for name, path in MODULES.items()}


def in_package(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_the_graph_sees_lazy_imports():
    assert "airoad.core.run.fit" in GRAPH["airoad.sft.run"]  # imported inside train()
    assert "airoad.core.model.model_parts" in GRAPH["airoad.sft.teacher_cache"]  # inside a function


def test_nothing_outside_a_lane_imports_it_and_lanes_do_not_import_each_other():
    bad = [
        f"{m} imports {t}"
        for m, targets in GRAPH.items()
        for t in targets
        for lane in LANES
        if in_package(t, lane) and not in_package(m, lane) and not in_package(m, ENTRIES)
    ]
    assert not bad, bad


def test_the_core_imports_no_lane_and_no_tool():
    bad = [
        f"{m} imports {t}"
        for m, targets in GRAPH.items()
        if in_package(m, "airoad.core")
        for t in targets
        if not in_package(t, "airoad.core")
    ]
    assert not bad, bad


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as [a, b, ..., a], or None (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                return path[path.index(t) :] + [t]
            if t not in state and (cycle := visit(t)):
                return cycle
        state[m] = 2
        path.pop()
        return None

    for m in sorted(graph):
        if m not in state and (cycle := visit(m)):
            return cycle
    return None


def test_the_cycle_check_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle():
    cycle = find_cycle(GRAPH)
    assert cycle is None, " -> ".join(cycle)


def _autograd_method(node: ast.FunctionDef, parents: dict) -> bool:
    owner = parents.get(node)
    bases = [ast.unparse(b) for b in getattr(owner, "bases", [])]
    return node.name in ("forward", "backward") and any(b.endswith("autograd.Function") for b in bases)


def test_functions_fit_on_a_screen_and_take_few_positional_arguments():
    bad = []
    for path in sorted(PKG.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) or _autograd_method(
                node, parents
            ):
                continue
            where = f"{path.relative_to(SRC)}:{node.lineno} {node.name}"
            lines = node.end_lineno - node.lineno + 1
            positional = [a for a in node.args.posonlyargs + node.args.args if a.arg not in ("self", "cls")]
            if lines > MAX_LINES:
                bad.append(f"{where}: {lines} lines")
            if len(positional) > MAX_POSITIONAL:
                bad.append(f"{where}: {len(positional)} positional parameters")
    assert not bad, bad


def test_the_run_dir_checkpoint_prefix_is_hf_s():
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    from airoad.core.run.rundir import CHECKPOINT_PREFIX

    assert CHECKPOINT_PREFIX == PREFIX_CHECKPOINT_DIR


# The core's rooms and their floors: nothing points back up (run > model > data > {kernels, base}).
ROOMS = ("base", "data", "kernels", "model", "run")
MAY_IMPORT = {
    "base": {"base"},
    "kernels": {"kernels"},
    "data": {"data", "base"},
    "model": {"model", "data", "kernels", "base"},
    "run": set(ROOMS),
}
TORCH_FREE_ROOMS = ("base", "data")
HEAVY = ("torch", "transformers", "peft", "trl", "accelerate", "datasets")


def room_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[:2] == ["airoad", "core"] and parts[2] in ROOMS else None


def test_every_core_module_lives_in_a_room():
    loose = [m for m in MODULES if in_package(m, "airoad.core") and m != "airoad.core" and room_of(m) is None]
    assert not loose, loose


def test_rooms_import_only_their_floors():
    bad = [
        f"{m} imports {t}"
        for m, targets in GRAPH.items()
        if (room := room_of(m))
        for t in targets
        if (other := room_of(t)) and other not in MAY_IMPORT[room]
    ]
    assert not bad, bad


def third_party_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_torch_free_rooms_import_no_torch():
    bad = [
        f"{m} imports {lib}"
        for m, path in MODULES.items()
        if room_of(m) in TORCH_FREE_ROOMS
        for lib in third_party_imports(path) & set(HEAVY)
    ]
    assert not bad, bad


def test_every_command_module_declares_one_command_and_imports_no_torch_for_help():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from airoad.core.run.command import table\n"
        "from airoad.cli import main\n"
        "names = [[n] for n in table() if n not in ('data', 'export')]\n"
        "names += [['data', t] for t in table('data')] + [['export', t] for t in table('export')]\n"
        "assert len(names) >= 14, names\n"
        "for words in names:\n"
        "    assert main([*words, '--help']) == 0, words\n"
        "assert 'torch' not in sys.modules, 'torch loaded by --help'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_command_rule_maps_every_name_to_its_module():
    from airoad.core.run.command import module_name, table

    for group in (None, "data", "export"):
        for name in table(group):
            words = [group, name] if group else [name]
            if group is None and name in ("data", "export"):
                continue
            module = __import__(module_name(words), fromlist=["COMMAND"])
            assert module.COMMAND.summary == table(group)[name]


def test_the_suites_longest_first_list_names_test_files_that_exist():
    from conftest import LONGEST_FIRST

    tests = Path(__file__).parent
    assert len(set(LONGEST_FIRST)) == len(LONGEST_FIRST)
    assert [name for name in LONGEST_FIRST if not (tests / name).is_file()] == []
