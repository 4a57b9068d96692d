"""The package's shape, checked: dependencies point down, nothing imports in a circle, the core does no I/O and
type-checks strictly.

The layers, lowest first (a module may import its own room and any lower layer, never a higher one or a sibling
room of its own layer):

0. ``core``: events, Avro, rules and planning, PartiQL building, drift, shards — pure; stdlib, pydantic(-settings),
   PyYAML and fastavro only.
1. ``logs``, ``metrics``, ``loading`` (the config file and environment: not pure, so not core);
2. ``retry`` (logs and counts each retry), ``health``: the process's own plumbing.
3. ``adapters.redis``, ``adapters.kafka``, ``adapters.dynamodb``: one room per service; they do not know each other.
4. the stages ``capture``, ``snapshot``, ``apply``, and ``read`` (the application's read adapter); stages do not
   import each other (``pipeline`` wires the snapshot's scan into the listener's gap healing).
5. ``tools``: verify, plan, preflight, status, replay.
6. ``pipeline`` (wires stages from a config), 7. ``local`` (stack + demo), 8. ``cli``, 9. ``__main__``.

``adapters`` is a boundary, not only a folder: only ``adapters.<service>`` imports that service's client library
(redis, kafka/confluent_kafka, boto3/botocore); the rest names the clients' types and errors through the adapters
(``CLIENT_LIBRARY_USERS`` lists the few exceptions, each with its reason).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "replicator"

#: (module prefix, layer); the longest matching prefix wins. A room is the prefix itself.
LAYERS = [
    ("replicator.core", 0),
    ("replicator.logs", 1), ("replicator.metrics", 1), ("replicator.loading", 1),
    ("replicator.retry", 2), ("replicator.health", 2),
    ("replicator.adapters", 3),
    ("replicator.adapters.redis", 3), ("replicator.adapters.kafka", 3), ("replicator.adapters.dynamodb", 3),
    ("replicator.capture", 4), ("replicator.snapshot", 4), ("replicator.apply", 4), ("replicator.read", 4),
    ("replicator.dynamo_redis", 4),
    ("replicator.tools", 5), ("replicator.cutover", 5),
    ("replicator.pipeline", 6),
    ("replicator.local", 7),
    ("replicator.cli", 8),
    ("replicator.__main__", 9),
]

#: What the core may import besides itself: the standard library minus its I/O, and pure libraries (the config
#: uses pydantic-settings only to parse an environment mapping it is handed).
CORE_THIRD_PARTY = {"pydantic", "pydantic_settings", "yaml", "fastavro"}
IO_STDLIB = {"socket", "ssl", "http", "urllib.request", "subprocess", "selectors", "asyncio", "select", "ftplib",
             "smtplib", "multiprocessing", "signal"}

#: Function-local imports allowed, by module: optional heavy dependencies only, each with its reason. None today.
LOCAL_IMPORTS_ALLOWED: dict[str, set[str]] = {}


@dataclass(frozen=True)
class Import:
    importer: str
    target: str  # a replicator module, or a third-party/stdlib top-level dotted name
    line: int
    local: bool  # inside a function or class body
    typing_only: bool = False  # under ``if TYPE_CHECKING:`` (annotations only: no runtime dependency)


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = _modules()


def _imports() -> list[Import]:
    found = []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(), str(path))
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        top_level = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                # ``from pkg import mod`` imports the module pkg.mod; ``from mod import name`` imports mod.
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
            else:
                continue
            typing_only = _under_type_checking(tree, node)
            local = id(node) not in top_level and not typing_only
            found += [Import(name, target, node.lineno, local, typing_only) for target in dict.fromkeys(targets)]
    return found


def _under_type_checking(tree: ast.Module, node: ast.AST) -> bool:
    return any(isinstance(stmt, ast.If) and "TYPE_CHECKING" in ast.unparse(stmt.test)
               and any(child is node for child in ast.walk(stmt)) for stmt in tree.body)


IMPORTS = _imports()


def _room(module: str) -> tuple[str, int]:
    matches = [(prefix, layer) for prefix, layer in LAYERS if module == prefix or module.startswith(prefix + ".")]
    if not matches:
        return module, -1
    return max(matches, key=lambda match: len(match[0]))


def test_every_module_has_a_layer():
    unplaced = sorted(m for m in MODULES if m != "replicator" and _room(m)[1] < 0)
    assert not unplaced, f"modules outside every layer (add them to LAYERS, or move them): {unplaced}"


def test_dependencies_point_down():
    wrong = []
    for imp in IMPORTS:
        if imp.target not in MODULES or imp.target == "replicator":
            continue
        (room, layer), (target_room, target_layer) = _room(imp.importer), _room(imp.target)
        if room != target_room and layer <= target_layer:
            wrong.append(f"{imp.importer}:{imp.line} imports {imp.target} (layer {layer} -> {target_layer})")
    assert not wrong, "imports that point up or sideways:\n" + "\n".join(wrong)


def test_no_import_cycles():
    graph: dict[str, set[str]] = defaultdict(set)
    for imp in IMPORTS:  # an annotation-only import is no runtime dependency: the schema calls its checks
        if imp.target in MODULES and imp.target != imp.importer and imp.target != "replicator" and not imp.typing_only:
            graph[imp.importer].add(imp.target)
    cycles = [component for component in _strongly_connected(graph) if len(component) > 1]
    assert not cycles, f"import cycles (each group imports itself in a circle): {cycles}"


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iteratively (no recursion limit to think about)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for root in list(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
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
                components.append(sorted(component))
    return components


def test_the_core_does_no_io():
    allowed_stdlib = set(sys.stdlib_module_names)
    wrong = []
    for imp in IMPORTS:
        if not imp.importer.startswith("replicator.core") or imp.target.startswith("replicator"):
            continue
        top = imp.target.split(".")[0]
        io = top in IO_STDLIB or imp.target in IO_STDLIB or any(imp.target.startswith(m + ".") for m in IO_STDLIB)
        if io or (top not in allowed_stdlib and top not in CORE_THIRD_PARTY):
            wrong.append(f"{imp.importer}:{imp.line} imports {imp.target}")
    assert not wrong, "the core must stay pure (no I/O libraries):\n" + "\n".join(wrong)


def test_imports_are_at_module_level():
    wrong = []
    for imp in IMPORTS:
        if imp.local and imp.target.split(".")[0] not in LOCAL_IMPORTS_ALLOWED.get(imp.importer, set()):
            wrong.append(f"{imp.importer}:{imp.line} imports {imp.target} inside a function")
    assert not wrong, ("imports belong at the top of the module (a local import hides a cycle or a slow import; "
                       "optional heavy dependencies go in LOCAL_IMPORTS_ALLOWED with a reason):\n" + "\n".join(wrong))


#: Client libraries, by the adapter rooms that alone may import them.
CLIENT_LIBRARIES = {
    "redis": {"replicator.adapters.redis"},
    "kafka": {"replicator.adapters.kafka"},
    "confluent_kafka": {"replicator.adapters.kafka"},
    "aws_msk_iam_sasl_signer": {"replicator.adapters.kafka"},
    # Kafka's MSK IAM authentication finds its AWS region through boto3's credential chain.
    "boto3": {"replicator.adapters.dynamodb", "replicator.adapters.kafka"},
    "botocore": {"replicator.adapters.dynamodb"},
}
#: Besides its adapter room, who may import a client library, and why.
CLIENT_LIBRARY_USERS = {
    # The wiring makes the clients the adapters are handed; the local stack and the CLI make them for tools.
    "replicator.pipeline": set(CLIENT_LIBRARIES),
    "replicator.local": set(CLIENT_LIBRARIES),
    "replicator.cli": set(CLIENT_LIBRARIES),
    # The application's Redis clients *are* redis-py clients: they subclass its command mixin and raise its
    # exceptions, because the application catches those (the drop-in promise). They reach DynamoDB and Kafka only
    # through adapters.
    "replicator.dynamo_redis": {"redis"},
    "replicator.cutover": {"redis"},
}


def test_only_adapters_import_client_libraries():
    wrong = []
    for imp in IMPORTS:
        library = imp.target.split(".")[0]
        rooms = CLIENT_LIBRARIES.get(library)
        if rooms is None or any(imp.importer == r or imp.importer.startswith(r + ".") for r in rooms):
            continue
        allowed = next((libs for user, libs in CLIENT_LIBRARY_USERS.items()
                        if imp.importer == user or imp.importer.startswith(user + ".")), set())
        if library not in allowed:
            wrong.append(f"{imp.importer}:{imp.line} imports {imp.target}")
    assert not wrong, ("stages, tools and the core speak to services through replicator.adapters.<service> (its "
                       "types, errors and functions), never through the client library:\n" + "\n".join(wrong))


def test_the_checks_see_a_cycle_and_an_upward_import():
    """The checks above would pass vacuously if the import walk found nothing; make sure it does."""
    assert any(i.importer == "replicator.cli" and i.target == "replicator.pipeline" for i in IMPORTS)
    assert _strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"], ["d"]]
    assert _room("replicator.adapters.kafka.broker") == ("replicator.adapters.kafka", 3)
    assert any(i.importer == "replicator.adapters.kafka.consumer" and i.target.startswith("kafka") for i in IMPORTS)


def test_the_core_type_checks_strictly():
    result = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-error-summary", "replicator/core"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
