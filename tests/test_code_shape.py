"""The shape of python/ember that reviews keep asking for, checked: imports point one way, no
function past 70 lines, no module-level state that functions change, one module that renames."""

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "python" / "ember"


def _modules() -> dict[str, pathlib.Path]:
    """{dotted name: file} of every module of the package (a package is its __init__.py)."""
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return mods


def _imports(name: str, path: pathlib.Path, mods: dict) -> set[str]:
    """The ember modules `name` imports, lazily (inside functions) or not, without its own parent
    packages (which Python imports first anyway)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]) if node.level else ""
            full = ".".join(p for p in (base, node.module or "") if p)
            targets = [full] + [f"{full}.{a.name}" for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in mods:
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):
                found.add(target)
    return found


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in edges:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle():
    mods = _modules()
    edges = {name: _imports(name, path, mods) for name, path in mods.items()}
    assert not _cycles(edges), _cycles(edges)


def test_the_cycle_check_sees_a_lazy_cycle():
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]


LIMIT = 70


def _long_functions() -> set[str]:
    found = set()
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if node.end_lineno - node.lineno + 1 > LIMIT:
                    found.add(f"{name}.{node.name}")
    return found


def test_no_function_over_70_lines():
    assert not _long_functions(), _long_functions()


def _mutable_globals() -> set[str]:
    """Module-level names rebound with `global` inside a function, or mutated in place (a method
    call such as .add/.append/.update/.setdefault/[k] = v on a module-level name) from a function."""
    mutators = {"add", "append", "extend", "update", "setdefault", "pop", "clear", "discard", "remove", "insert"}
    found = set()
    for name, path in _modules().items():
        tree = ast.parse(path.read_text())
        top = {t.id for n in tree.body if isinstance(n, (ast.Assign, ast.AnnAssign)) for t in _targets(n)}
        for fn in (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))):
            local = {a.arg for a in fn.args.args + fn.args.kwonlyargs}
            for node in ast.walk(fn):
                if isinstance(node, ast.Global):
                    found.update(f"{name}.{g}" for g in node.names)
                elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                    owner = node.func.value
                    if isinstance(owner, ast.Name) and owner.id in top - local and node.func.attr in mutators:
                        found.add(f"{name}.{owner.id}")
                elif isinstance(node, (ast.Assign, ast.AugAssign)):
                    for t in node.targets if isinstance(node, ast.Assign) else [node.target]:
                        if isinstance(t, ast.Subscript) and isinstance(t.value, ast.Name) and t.value.id in top - local:
                            found.add(f"{name}.{t.value.id}")
    return found


def _targets(node) -> list:
    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
    return [t for t in targets if isinstance(t, ast.Name)]


def test_no_mutable_module_global():
    """State has an owner (an object, or functools.cache), never a module-level name that
    functions change."""
    assert not _mutable_globals(), _mutable_globals()


def test_one_module_renames_files_into_place():
    """Publishing goes through ember.atomic (temporary name, fsync, rename, fsync the folder):
    no other module renames."""
    found = []
    for name, path in _modules().items():
        if name == "ember.atomic":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                owner = node.func.value
                module = owner.id if isinstance(owner, ast.Name) else ""
                if (module, node.func.attr) in {("os", "replace"), ("os", "rename"), ("shutil", "move")} or (
                    node.func.attr == "rename"
                ):
                    found.append(f"{name}:{node.lineno}")
    assert not found, found
