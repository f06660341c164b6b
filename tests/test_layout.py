"""The package's layout rules, read from its own source: imports run one way through the layers
(foundation -> data -> masks -> models -> losses -> engines -> CLI), ``engine/`` holds one command per
file, and functions stay short enough to read."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ssl_inpaint"

# Lowest first; a module may import its own layer and the layers before it, never a later one.
LAYERS = [
    ("foundation", ["errors", "storage", "environment", "config", "registry", "checkpoint", "distributed", "runtime"]),
    ("data", ["data"]),
    ("masks", ["masks"]),
    ("models", ["models"]),
    ("losses", ["losses", "metrics"]),
    ("engines", ["runs", "probe", "gan_step", "completion", "pretext_validation", "transfer_result", "transfer_scoring", "options", "engine"]),
    ("cli", ["cli", "plugins", "__main__", "__init__"]),
]
LAYER_OF = {top: rank for rank, (_, tops) in enumerate(LAYERS) for top in tops}
MAX_FUNCTION_LINES = 80


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def layer(path_or_name: str) -> int:
    """The layer of ``ssl_inpaint/<top>...`` from its first component below the package."""
    top = path_or_name.split(".")[0]
    if top not in LAYER_OF:
        raise AssertionError(f"ssl_inpaint.{top} has no layer in tests/test_layout.py: give it one")
    return LAYER_OF[top]


def package_imports(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, module below ssl_inpaint) for every import of the package, at any depth."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ssl_inpaint"):
            rest = node.module[len("ssl_inpaint"):].lstrip(".")
            names = [rest] if rest else [alias.name for alias in node.names]
            found += [(node.lineno, name) for name in names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name[len("ssl_inpaint."):]) for a in node.names if a.name.startswith("ssl_inpaint.")]
    return found


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_a_higher_layer(path):
    own = layer(".".join(path.relative_to(PACKAGE).with_suffix("").parts))
    upward = [
        f"line {line}: ssl_inpaint.{name} ({LAYERS[layer(name)][0]})"
        for line, name in package_imports(ast.parse(path.read_text()))
        if layer(name) > own
    ]
    assert not upward, f"{path.relative_to(PACKAGE)} ({LAYERS[own][0]}) imports upward: {upward}"


def test_the_layer_check_catches_an_upward_import():
    tree = ast.parse("from ssl_inpaint.engine.pretrain import PretrainConfig\nimport ssl_inpaint.models.unet\n")
    assert [layer(name) for _, name in package_imports(tree)] == [LAYER_OF["engine"], LAYER_OF["models"]]
    assert layer("engine.pretrain") > layer("models.factory") > layer("masks") > layer("data.sources")


def test_each_engine_file_is_one_command():
    """engine/<command>.py defines run_<command>, the function the CLI calls, and no other command's."""
    files = sorted(p for p in (PACKAGE / "engine").glob("*.py") if p.name != "__init__.py")
    entry_points = {f"run_{p.stem}" for p in files}
    for path in files:
        tree = ast.parse(path.read_text())
        defined = [n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in entry_points]
        assert defined == [f"run_{path.stem}"], f"{path.name} defines {defined}"


def test_no_function_is_longer_than_the_limit():
    long = []
    for path in modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} ({length} lines)")
    assert not long, f"functions longer than {MAX_FUNCTION_LINES} lines: " + "; ".join(long)
