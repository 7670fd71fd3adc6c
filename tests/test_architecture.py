"""The shape of the code, held by a test over its imports (docs/architecture.md explains the rules).

Packages under ``services/``: the ground floor ``common``, the networks ``models``, the simulated
annotator ``simulation``, the command line ``cli``; every other package is a wing (a deployed service,
the gateway included). The rules, read from the source with ``ast`` (nothing is imported or run):

(a) ``common`` and ``models`` import no wing, nor ``cli``; ``common`` imports nothing of ``simulation``
    either. ``models`` holds the training loops, which drive the standard clicker of ``simulation``
    (iterative click simulation); rule (b) keeps them out of every deployed process.
(b) What a deployed process loads (the import closure of each wing's ``server.py``, ``worker.py``,
    ``app.py`` and ``__main__.py``, following every ``services.*`` import, function-level ones too)
    holds no module of another wing (``common`` and ``models`` aside), nothing of ``simulation`` and
    nothing of ``cli``.
(c) No module imports another wing's ``server.py`` or ``worker.py``: they are process entry points.
    Scanned: ``services``, ``bench``, ``fuzz`` and ``tests``; ``tests/<wing>/`` belongs to its wing
    (tests mirror services), everything else (``bench``, ``fuzz``, ``tests/chaos``, ...) belongs to no
    wing and starts servers and workers as processes, the way they run.
(d) No ``video*`` module is left in ``services/segmentation/``.
(e) No module of a wing imports another wing or ``cli``, offline tools included (rule (b) only sees
    what the entry points load): what two wings share moves to the ground floor; what one needs of
    another goes through gRPC or a Celery message. Offline tools inside a wing may use ``simulation``.

The mermaid picture in docs/architecture.md is checked against the same source: its arrows and the
real dependencies between packages must be the same set (see ``check_diagram``).
"""

from __future__ import annotations

import ast
import re
import textwrap
from collections import deque
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
FLOORS = ("common", "models")  # importable by every wing
NOT_DEPLOYED = ("simulation", "cli")  # never loaded by a deployed process
OFFLINE_BELOW = {"common": (), "models": ("simulation",)}  # what a floor may import of NOT_DEPLOYED
ENTRY_POINTS = ("server.py", "worker.py", "app.py", "__main__.py")
TRANSPORT = ("server", "worker")
SCANNED = ("services", "bench", "fuzz", "tests")


@dataclass(frozen=True)
class Import:
    file: Path  # relative to the tree's root
    line: int
    module: str  # the module it loads, resolved: ``from services.video import server`` -> services.video.server

    def __str__(self) -> str:
        return f"{self.file}:{self.line} imports {self.module}"


def module_name(rel: Path) -> str:
    parts = list(rel.with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_of(module: str) -> str | None:
    """``services.video.flow`` -> ``video``; None outside ``services.<package>``."""
    parts = module.split(".")
    return parts[1] if parts[0] == "services" and len(parts) > 1 else None


def owner(rel: Path) -> str | None:
    """The package a file belongs to: services/<p>/... and tests/<p>/... belong to <p>."""
    parts = rel.parts
    return parts[1] if parts[0] in ("services", "tests") and len(parts) > 2 else None


class Tree:
    """The Python files of a checkout (or a synthetic one), their modules and ``services.*`` imports."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.files: dict[str, Path] = {}
        for top in SCANNED:
            for path in sorted((root / top).rglob("*.py")):
                rel = path.relative_to(root)
                self.files[module_name(rel)] = rel
        services = root / "services"
        self.packages = sorted(p.name for p in services.iterdir() if (p / "__init__.py").is_file())
        self.wings = [p for p in self.packages if p not in FLOORS + NOT_DEPLOYED]
        self._imports: dict[str, list[Import]] = {}
        self._trees: dict[str, ast.Module] = {}

    def ast(self, module: str) -> ast.Module:
        if module not in self._trees:
            rel = self.files[module]
            self._trees[module] = ast.parse((self.root / rel).read_text(), str(rel))
        return self._trees[module]

    def imports(self, module: str) -> list[Import]:
        """Every import of ``services.*`` anywhere in the module (top level, functions, TYPE_CHECKING)."""
        if module in self._imports:
            return self._imports[module]
        rel = self.files[module]
        package = module.split(".") if rel.name == "__init__.py" else module.split(".")[:-1]
        found = []
        for node in ast.walk(self.ast(module)):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base_parts = package[: len(package) - node.level + 1] if node.level else []
                base = ".".join([*base_parts, *([node.module] if node.module else [])])
                # ``from p import x`` loads the module p.x when there is one, else takes a name of p
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in self.files else base for a in node.names]
            for name in dict.fromkeys(names):
                if name == "services" or name.startswith("services."):
                    found.append(Import(rel, node.lineno, name))
        self._imports[module] = found
        return found

    def modules_of(self, package: str) -> list[str]:
        prefix = f"services.{package}"
        return [m for m in self.files if m == prefix or m.startswith(prefix + ".")]

    @cached_property
    def transport(self) -> dict[str, str]:
        """services.<wing>.server / .worker -> <wing>."""
        return {f"services.{w}.{t}": w for w in self.wings for t in TRANSPORT}


def loaded_with(module: str) -> list[str]:
    """Importing a.b.c runs a/__init__, a/b/__init__ and a/b/c."""
    parts = module.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


# --- the rules ------------------------------------------------------------------------------------


def check_ground_floor(tree: Tree) -> list[str]:
    """(a) common and models import no wing, nor cli; common nothing of simulation either."""
    problems = []
    for floor in FLOORS:
        for module in tree.modules_of(floor):
            for imp in tree.imports(module):
                if forbidden(tree, Arrow(floor, package_of(imp.module), "import")):
                    problems.append(f"(a) {imp}: {floor} imports no wing, nor cli; common nothing of simulation "
                                    "(common and models stand below the wings)")
    return problems


def _foreign(tree: Tree, wing: str, module: str) -> bool:
    """A module the deployed processes of ``wing`` must not load."""
    target = package_of(module)
    return target in NOT_DEPLOYED or (target in tree.wings and target != wing)


def check_deployed(tree: Tree) -> list[str]:
    """(b) the import closure of each wing's entry points stays in the wing, common and models."""
    problems = []
    for wing in tree.wings:
        for entry in ENTRY_POINTS:
            start = f"services.{wing}.{entry.removesuffix('.py')}"
            if start not in tree.files:
                continue
            came_from: dict[str, str | None] = {m: None for m in loaded_with(start) if m in tree.files}
            queue = deque(came_from)
            while queue:
                module = queue.popleft()
                for imp in tree.imports(module):
                    if _foreign(tree, wing, imp.module) and not _foreign(tree, wing, module):
                        chain, step = [], module
                        while step is not None:
                            chain.append(step)
                            step = came_from[step]
                        via = " -> ".join(reversed(chain))
                        problems.append(f"(b) {tree.files[start]} loads {imp.module}: {imp} (via {via})")
                    for loaded in loaded_with(imp.module):
                        if loaded in tree.files and loaded not in came_from:
                            came_from[loaded] = module
                            queue.append(loaded)
    return list(dict.fromkeys(problems))


# Test harnesses that host several wings' real servicers in one process, each with the reason.
IN_PROCESS_HARNESSES = {
    "tests/hardening/test_auth_rules.py": "the owner checks of four wings driven on their real servicers behind one "
                                          "kit server, with two annotators' keys",
}


def check_transport_imports(tree: Tree) -> list[str]:
    """(c) nothing imports another wing's server.py or worker.py (IN_PROCESS_HARNESSES aside)."""
    problems = []
    for module, rel in tree.files.items():
        if rel.as_posix() in IN_PROCESS_HARNESSES and tree.root == ROOT:
            continue
        for imp in tree.imports(module):
            wing = tree.transport.get(imp.module)
            if wing is not None and owner(rel) != wing:
                problems.append(f"(c) {imp}: another wing's {imp.module.rsplit('.', 1)[1]}.py is a process "
                                "entry point, not a library")
    return problems


def check_segmentation_has_no_video(tree: Tree) -> list[str]:
    """(d) no video* module in services/segmentation."""
    folder = tree.root / "services" / "segmentation"
    if not folder.is_dir():
        return []
    return [f"(d) {p.relative_to(tree.root)}: video modules belong to services/video"
            for p in sorted(folder.iterdir())
            if p.name.startswith("video") and (p.suffix == ".py" or (p.is_dir() and p.name != "__pycache__"))]


def check_wings_apart(tree: Tree) -> list[str]:
    """(e) no module of a wing imports another wing or cli, offline tools included."""
    problems = []
    for wing in tree.wings:
        for module in tree.modules_of(wing):
            for imp in tree.imports(module):
                target = package_of(imp.module)
                if target == "cli" or (target in tree.wings and target != wing):
                    problems.append(f"(e) {imp}: a wing imports no other wing (nor cli); share through "
                                    "common or models, talk through gRPC or Celery")
    return problems


RULES = {"a": check_ground_floor, "b": check_deployed, "c": check_transport_imports,
         "d": check_segmentation_has_no_video, "e": check_wings_apart}


# --- the picture ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Arrow:
    source: str
    target: str
    kind: str  # import, gRPC, Celery

    def __str__(self) -> str:
        return f"{self.source} --{self.kind}--> {self.target}"


def _string_constants(module: ast.Module) -> dict[str, str]:
    return {target.id: node.value.value for node in module.body if isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
            for target in node.targets if isinstance(target, ast.Name)}


def celery_tasks(tree: Tree) -> set[str]:
    """The Celery tasks the services register: ``@app.task(name=...)`` with a literal, or a constant of
    the module or imported from another one."""
    names = set()
    for module in tree.files:
        if package_of(module) is None:
            continue
        syntax = tree.ast(module)
        constants = _string_constants(syntax)
        for node in ast.walk(syntax):
            if isinstance(node, ast.ImportFrom) and node.module in tree.files:
                source = _string_constants(tree.ast(node.module))
                constants.update({a.asname or a.name: source[a.name] for a in node.names if a.name in source})
        for node in ast.walk(syntax):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "task":
                for keyword in node.keywords:
                    if keyword.arg != "name":
                        continue
                    if isinstance(keyword.value, ast.Constant):
                        names.add(keyword.value.value)
                    elif isinstance(keyword.value, ast.Name) and keyword.value.id in constants:
                        names.add(constants[keyword.value.id])
    return names


def real_arrows(tree: Tree) -> dict[Arrow, list[str]]:
    """Dependencies between packages, each with the places that make it:

    - import: a module of one imports a module of the other;
    - gRPC: a module of one uses a client stub of the other's proto service (``<name>_pb2_grpc.<X>Stub``;
      the proto file is named after its package);
    - Celery: a module of one names a task registered on the other's queue (``<queue>.<task>``: Celery
      routes by that prefix), docstrings aside. The place is the task name.
    """
    arrows: dict[Arrow, list[str]] = {}
    tasks = celery_tasks(tree)

    def add(arrow: Arrow, where: str) -> None:
        if arrow.target in tree.packages and arrow.target != arrow.source and where not in arrows.get(arrow, []):
            arrows.setdefault(arrow, []).append(where)

    for module, rel in tree.files.items():
        source = package_of(module)
        if source not in tree.packages:
            continue
        for imp in tree.imports(module):
            add(Arrow(source, package_of(imp.module) or "", "import"), str(imp))
        syntax = tree.ast(module)
        grpc_modules: dict[str, str] = {}  # local name -> proto file stem
        docstrings = {id(n.value) for n in ast.walk(syntax) if isinstance(n, ast.Expr)}
        for node in ast.walk(syntax):
            if isinstance(node, ast.ImportFrom) and node.module == "annotation.v1":
                for alias in node.names:
                    if alias.name.endswith("_pb2_grpc"):
                        grpc_modules[alias.asname or alias.name] = alias.name.removesuffix("_pb2_grpc")
            elif isinstance(node, ast.ImportFrom) and (node.module or "").endswith("_pb2_grpc"):
                if any(a.name.endswith("Stub") for a in node.names):
                    proto = node.module.rsplit(".", 1)[-1].removesuffix("_pb2_grpc")
                    add(Arrow(source, proto, "gRPC"), f"{rel}:{node.lineno} uses the {proto} client stub")
            elif (isinstance(node, ast.Attribute) and node.attr.endswith("Stub")
                  and isinstance(node.value, ast.Name) and node.value.id in grpc_modules):
                proto = grpc_modules[node.value.id]
                add(Arrow(source, proto, "gRPC"), f"{rel}:{node.lineno} uses the {proto} client stub")
            elif (isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in tasks
                  and id(node) not in docstrings):
                add(Arrow(source, node.value.split(".", 1)[0], "Celery"), node.value)
    return arrows


def forbidden(tree: Tree, arrow: Arrow) -> bool:
    """Import arrows the rules forbid: reported by the rule tests, so never drawn and never demanded."""
    if arrow.kind != "import":
        return False
    if arrow.source in FLOORS:
        return arrow.target in tree.wings or (arrow.target in NOT_DEPLOYED
                                               and arrow.target not in OFFLINE_BELOW[arrow.source])
    if arrow.source in tree.wings:
        return arrow.target == "cli" or arrow.target in tree.wings
    return False


MERMAID = re.compile(r"```mermaid\n(.*?)```", re.DOTALL)
EDGE = re.compile(r'^(\w+)\s*(-->|-\.->)\s*(?:\|"?([^|"]*)"?\|\s*)?(\w+)$')
NODE = re.compile(r"^(\w+)\s*(?:[\[({].*)?$")
SUBGRAPH = re.compile(r"^subgraph\s+(\w+)\b")
SKIPPED = re.compile(r"^(flowchart|graph|direction|classDef|class|style|linkStyle|%%)\b|^end$|^$")
TASK = re.compile(r"\b[a-z_]+\.[a-z_]+\b")


@dataclass(frozen=True)
class Drawn:
    line: str
    label: str


def drawn_arrows(text: str, tree: Tree) -> tuple[dict[Arrow, Drawn], list[str]]:
    """The arrows of the (single) mermaid block of ``text``.

    ``a --> b`` is an import (any label); ``a -.->|gRPC| b`` a gRPC client; ``a -.->|"Celery: q.task"| b``
    a Celery message, naming its tasks. Nodes are packages; an arrow from or to a subgraph stands for one
    from or to each of its nodes. A line of another shape is an error: nothing in the picture goes unchecked.
    """
    blocks = MERMAID.findall(text)
    if len(blocks) != 1:
        return {}, [f"expected one mermaid block, found {len(blocks)}"]
    problems: list[str] = []
    members: dict[str, list[str]] = {}
    edges = []
    current = None
    for raw in blocks[0].splitlines():
        line = raw.strip()
        if match := SUBGRAPH.match(line):
            current = match.group(1)
            members[current] = []
        elif line == "end":
            current = None
        elif SKIPPED.match(line):
            continue
        elif match := EDGE.match(line):
            edges.append((*match.groups(), line))
        elif match := NODE.match(line):
            if match.group(1) not in tree.packages:
                problems.append(f"node {match.group(1)!r} is not a package under services/: {line}")
            if current is not None:
                members[current].append(match.group(1))
        else:
            problems.append(f"line not understood (only nodes, subgraphs, --> and -.-> arrows): {line}")
    arrows: dict[Arrow, Drawn] = {}
    for source, style, label, target, line in edges:
        label = (label or "").strip()
        kind = "import" if style == "-->" else (label.replace(":", " ").split() or [""])[0]
        if kind not in ("import", "gRPC", "Celery"):
            problems.append(f"a dotted arrow is labelled gRPC or Celery: {line}")
            continue
        for node in (source, target):
            if node not in tree.packages and node not in members:
                problems.append(f"arrow end {node!r} is neither a package nor a subgraph: {line}")
        for one in members.get(source, [source]):
            for other in members.get(target, [target]):
                arrows[Arrow(one, other, kind)] = Drawn(line, label)
    return arrows, problems


def check_diagram(tree: Tree, text: str) -> list[str]:
    """Every arrow drawn is a real dependency the rules allow, and every such dependency is drawn; a
    Celery arrow names exactly the tasks sent along it."""
    drawn, problems = drawn_arrows(text, tree)
    real = real_arrows(tree)
    for arrow, how in drawn.items():
        if arrow not in real:
            problems.append(f"drawn, but no such dependency in the code: {arrow} ({how.line})")
        elif forbidden(tree, arrow):
            problems.append(f"drawn, but the rules forbid it: {arrow} ({how.line})")
        elif arrow.kind == "Celery" and set(TASK.findall(how.label)) != set(real[arrow]):
            problems.append(f"{arrow} is labelled with tasks {sorted(TASK.findall(how.label))}, "
                            f"the code sends {sorted(real[arrow])}")
    for arrow, places in real.items():
        if arrow not in drawn and not forbidden(tree, arrow):
            problems.append(f"in the code, but not drawn: {arrow} ({places[0]})")
    return problems


# --- the checks on this checkout ------------------------------------------------------------------


@pytest.fixture(scope="module")
def tree() -> Tree:
    return Tree(ROOT)


@pytest.mark.parametrize("rule", sorted(RULES))
def test_import_rule(tree, rule):
    problems = RULES[rule](tree)
    assert not problems, f"rule ({rule}) broken {len(problems)} time(s):\n" + "\n".join(problems)


def test_the_architecture_picture_matches_the_code(tree):
    doc = ROOT / "docs" / "architecture.md"
    problems = check_diagram(tree, doc.read_text())
    assert not problems, f"{doc.relative_to(ROOT)} and the code disagree:\n" + "\n".join(problems)


# --- the checker itself, on a synthetic tree with one violation of each rule ----------------------


SYNTHETIC = {
    "services/__init__.py": "",
    "services/common/__init__.py": "",
    "services/common/codec.py": "import json\nimport services.alpha.logic\n",
    "services/common/replay.py": "import services.simulation.clicker\n",
    "services/models/__init__.py": "",
    "services/models/net.py": "from services.common import codec\n",
    "services/models/training.py": "from services.simulation import clicker\n",
    "services/simulation/__init__.py": "",
    "services/simulation/clicker.py": "from services.models.net import x\n",
    "services/cli/__init__.py": "",
    "services/cli/main.py": "from services.gamma.client import Client\n",
    "services/alpha/__init__.py": "",
    "services/alpha/server.py": "from services.alpha import logic\nfrom . import store\nQUEUE = 'beta.run'\n",
    "services/alpha/store.py": "from services.common.codec import encode\n",
    "services/alpha/worker.py": "",
    "services/alpha/logic.py": "def run():\n    from services.simulation import clicker\n",
    "services/alpha/offline.py": "from services.simulation import clicker\nfrom services.beta import rules\n",
    "services/beta/__init__.py": "",
    "services/beta/rules.py": "",
    "services/beta/worker.py": ('"""Tasks of beta."""\n'
                                "from annotation.v1 import alpha_pb2_grpc\n"
                                "from services.common.settings import QUEUE_NAME\n\n\n"
                                "@app.task(name='beta.run')\ndef run():\n"
                                "    alpha_pb2_grpc.AlphaStub(None)\n"
                                "    from services.alpha.server import QUEUE\n"),
    "services/gamma/__init__.py": "",
    "services/gamma/client.py": '"""Sends beta.run, says this docstring; the code does not."""\n',
    "services/gamma/app.py": "import services.gamma.client\nfrom services.cli import main\n",
    "services/segmentation/__init__.py": "",
    "services/segmentation/video_job.py": "",
    "bench/run.py": "from services.alpha import worker, server\n",
    "tests/alpha/test_server.py": "from services.alpha.server import QUEUE\n",
    "tests/gamma/test_alpha.py": "from services.alpha.server import QUEUE\n",
}


@pytest.fixture
def synthetic(tmp_path) -> Tree:
    for rel, text in SYNTHETIC.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    return Tree(tmp_path)


def test_the_checker_reports_each_rule_with_file_and_line(synthetic):
    assert synthetic.wings == ["alpha", "beta", "gamma", "segmentation"]
    found = {rule: check(synthetic) for rule, check in RULES.items()}
    # models/training.py may drive the clicker; common/replay.py may not
    assert found["a"] == [("(a) services/common/codec.py:2 imports services.alpha.logic: common imports no wing, "
                           "nor cli; common nothing of simulation (common and models stand below the wings)"),
                          ("(a) services/common/replay.py:1 imports services.simulation.clicker: common imports no "
                           "wing, nor cli; common nothing of simulation (common and models stand below the wings)")]
    b = found["b"]
    # a function-level import, two steps from the entry point; the relative import is followed too
    assert "(b) services/alpha/server.py loads services.simulation.clicker: services/alpha/logic.py:2 imports "\
           "services.simulation.clicker (via services.alpha.server -> services.alpha.logic)" in b
    assert any(p.startswith("(b) services/beta/worker.py loads services.alpha.server: services/beta/worker.py:9 ")
               for p in b)
    assert any(p.startswith("(b) services/gamma/app.py loads services.cli.main: services/gamma/app.py:2 ") for p in b)
    # through the ground floor's bad import, beta's worker loads alpha a second way
    assert any(p.startswith("(b) services/beta/worker.py loads services.alpha.logic: services/common/codec.py:2 ")
               and p.endswith("-> services.alpha.store -> services.common.codec)") for p in b)
    assert len(b) == 4, b  # alpha/offline.py's imports are not loaded by an entry point
    # tests/alpha/test_server.py imports its own wing's server: allowed
    assert sorted(p.split(":", 2)[:2] for p in found["c"]) == [
        ["(c) bench/run.py", "1 imports services.alpha.server"],
        ["(c) bench/run.py", "1 imports services.alpha.worker"],
        ["(c) services/beta/worker.py", "9 imports services.alpha.server"],
        ["(c) tests/gamma/test_alpha.py", "1 imports services.alpha.server"]]
    assert found["d"] == ["(d) services/segmentation/video_job.py: video modules belong to services/video"]
    assert [p.split(":", 2)[:2] for p in found["e"]] == [
        ["(e) services/alpha/offline.py", "2 imports services.beta.rules"],
        ["(e) services/beta/worker.py", "9 imports services.alpha.server"],
        ["(e) services/gamma/app.py", "2 imports services.cli.main"]]


def test_the_checker_passes_a_tree_that_keeps_the_rules(synthetic):
    for rel in ("services/common/codec.py", "services/common/replay.py", "services/alpha/logic.py", "services/alpha/offline.py",
                "services/beta/worker.py", "services/gamma/app.py", "bench/run.py", "tests/gamma/test_alpha.py"):
        (synthetic.root / rel).write_text("import json\n")
    (synthetic.root / "services/segmentation/video_job.py").unlink()
    clean = Tree(synthetic.root)
    assert {rule: check(clean) for rule, check in RULES.items()} == {rule: [] for rule in RULES}


def test_the_picture_check_finds_missing_extra_and_forbidden_arrows(synthetic):
    real = real_arrows(synthetic)
    assert Arrow("beta", "alpha", "gRPC") in real and Arrow("alpha", "beta", "Celery") in real
    assert Arrow("beta", "common", "import") in real and Arrow("alpha", "simulation", "import") in real
    assert Arrow("gamma", "beta", "Celery") not in real  # a docstring sends nothing
    complete = textwrap.dedent("""\
        ```mermaid
        flowchart LR
          subgraph wings [Wings]
            alpha[alpha]
            beta
          end
          gamma
          wings --> common
          common --> alpha
          alpha --> simulation
          beta --> alpha
          gamma --> cli
          cli --> gamma
          simulation --> models
          models --> common
          models --> simulation
          beta -.->|gRPC| alpha
          alpha -.->|"Celery: beta.run"| beta
        ```
        """)
    problems = check_diagram(synthetic, complete)
    # the forbidden arrows are the rules' business: drawn, they are an error; missing, they are not
    assert sorted(problems) == sorted([
        "drawn, but the rules forbid it: common --import--> alpha (common --> alpha)",
        "drawn, but the rules forbid it: beta --import--> alpha (beta --> alpha)",
        "drawn, but the rules forbid it: gamma --import--> cli (gamma --> cli)"])
    allowed = "\n".join(line for line in complete.splitlines()
                        if line.strip() not in ("common --> alpha", "beta --> alpha", "gamma --> cli"))
    assert check_diagram(synthetic, allowed) == []

    wrong = (allowed.replace("  simulation --> models\n", "")
             .replace("Celery: beta.run", "Celery: beta.walk")
             .replace("  wings --> common", "  wings --> common\n  alpha --> models\n  alpha -. x .-> beta"))
    problems = check_diagram(synthetic, wrong)
    assert "drawn, but no such dependency in the code: alpha --import--> models (alpha --> models)" in problems
    assert any(p.startswith("in the code, but not drawn: simulation --import--> models "
                            "(services/simulation/clicker.py:1 imports") for p in problems)
    assert "alpha --Celery--> beta is labelled with tasks ['beta.walk'], the code sends ['beta.run']" in problems
    assert any(p.startswith("line not understood") for p in problems)
    assert len(problems) == 4, problems
