"""torch-pruning is reached only through edgeprune/prune/tp_adapter.py, and the internals the adapter relies on
still behave as it expects on the installed release (a release that changes one fails here, by name)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from torch import nn

from edgeprune.prune import tp_adapter as tpa
from edgeprune.prune.importance import FilterL1Importance

PACKAGE = Path(__file__).resolve().parents[2] / "edgeprune"
ADAPTER = PACKAGE / "prune" / "tp_adapter.py"
# torch-pruning's internal names the adapter wraps (see its docstring)
INTERNALS = {"_module2name", "_get_channel_groups", "check_pruning_group", "_normalize", "OPTYPE"}


def _imports_torch_pruning(tree: ast.AST) -> list[int]:
    """Lines importing torch_pruning: import statements, and __import__/import_module of a literal name."""

    def is_tp(name: str | None) -> bool:
        return bool(name) and (name == "torch_pruning" or name.startswith("torch_pruning."))

    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(is_tp(alias.name) for alias in node.names):
            lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and not node.level and is_tp(node.module):
            lines.append(node.lineno)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if func in ("__import__", "import_module") and is_tp(str(node.args[0].value)):
                lines.append(node.lineno)
    return lines


def _elsewhere() -> list[tuple[Path, ast.AST]]:
    return [(p, ast.parse(p.read_text())) for p in sorted(PACKAGE.rglob("*.py")) if p != ADAPTER]


def test_only_the_adapter_imports_torch_pruning():
    found = [
        f"{p.relative_to(PACKAGE.parent)}:{line}" for p, tree in _elsewhere() for line in _imports_torch_pruning(tree)
    ]
    assert not found, f"import torch-pruning's names from edgeprune/prune/tp_adapter.py, not directly: {found}"
    assert _imports_torch_pruning(ast.parse(ADAPTER.read_text()))


def test_only_the_adapter_touches_torch_pruning_internals():
    found = [
        f"{p.relative_to(PACKAGE.parent)}:{node.lineno} .{node.attr}"
        for p, tree in _elsewhere()
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr in INTERNALS
    ]
    assert not found, f"wrap these torch-pruning internals in edgeprune/prune/tp_adapter.py: {found}"


def _changed(internal: str, consequence: str) -> str:
    return (
        f"torch-pruning {tpa.VERSION} changed {internal}, which edgeprune/prune/tp_adapter.py relies on "
        f"(pinned to 1.6.* in pyproject.toml): {consequence}. Adapt the adapter before widening the pin."
    )


def _conv_bn(cin: int, cout: int, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, groups=groups, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


def _grouped() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(*_conv_bn(3, 8), *_conv_bn(8, 8, groups=4), nn.Conv2d(8, 4, 1)).eval()


class _Concat(nn.Module):
    """A residual add over a concatenation: the stem's group holds `a` (2 channels) and `b` (6 channels), and
    removing the stem group's 4 lowest-scored channels empties `a`."""

    def __init__(self):
        super().__init__()
        self.stem, self.a, self.b = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 2, 1), nn.Conv2d(8, 6, 1)
        self.head = nn.Conv2d(8, 4, 1)
        with torch.no_grad():
            self.stem.weight.copy_(torch.arange(1.0, 9.0).view(8, 1, 1, 1).expand(8, 3, 1, 1))
            self.a.weight.fill_(0.01)
            self.b.weight.fill_(1.0)

    def forward(self, x):
        x = self.stem(x)
        return self.head(torch.cat([self.a(x), self.b(x)], 1) + x)


class _Chunk(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.left, self.right = nn.Conv2d(3, 8, 1), nn.Conv2d(4, 2, 1), nn.Conv2d(4, 2, 1)

    def forward(self, x):
        a, b = torch.chunk(self.conv(x), 2, dim=1)
        return self.left(a) + self.right(b)


def _pruner(model: nn.Module, **options) -> tpa.BasePruner:
    with torch.enable_grad():
        return tpa.BasePruner(model, torch.zeros(1, 3, 8, 8), FilterL1Importance(), pruning_ratio=0.5, **options)


def _graph(model: nn.Module) -> tpa.DependencyGraph:
    with torch.enable_grad():
        return tpa.build_dependency_graph(model, torch.zeros(1, 3, 8, 8))


def test_module_names_name_every_module_as_named_modules_does():
    model = _grouped()
    names = tpa.module_names(_graph(model))
    wrong = {name: names.get(module) for name, module in model.named_modules() if names.get(module) != name}
    assert not wrong, _changed("DependencyGraph._module2name", f"layers are named {wrong}; plans key groups by name")


def test_channel_groups_count_the_groups_of_a_grouped_convolution():
    model = _grouped()
    pruner = _pruner(model)
    names = tpa.module_names(pruner.DG)
    found = {names[g[0].dep.target.module]: tpa.channel_groups(pruner, g) for g in pruner.DG.get_all_groups()}
    assert found == {"0": 4, "3": 4, "6": 1}, _changed(
        "BasePruner._get_channel_groups", f"groups per channel index {found}, expected 4 for a groups=4 conv"
    )


def test_a_group_that_would_empty_a_layer_is_yielded_only_once_allowed():
    def yielded(allow: bool) -> list:
        model = _Concat().eval()
        pruner = _pruner(model, ignored_layers=[model.head])
        if allow:
            tpa.allow_emptying_groups(pruner.DG)
        return [(pruner.DG, group) for group in pruner.step(interactive=True)]

    assert yielded(allow=False) == [], _changed(
        "BasePruner.step / DependencyGraph.check_pruning_group", "a group emptying a layer is no longer skipped"
    )
    groups = yielded(allow=True)
    assert len(groups) == 1, _changed(
        "DependencyGraph.check_pruning_group", "overriding it on a pruner's graph no longer lets step yield the group"
    )
    graph, group = groups[0]
    assert not tpa.keeps_every_layer(graph, group), _changed(
        "DependencyGraph.check_pruning_group", "the class's own check no longer sees a layer emptied"
    )
    some = graph.get_pruning_group(group[0].dep.target.module, group[0].dep.handler, [7])
    assert tpa.keeps_every_layer(graph, some), _changed("DependencyGraph.check_pruning_group", "it refuses any pruning")


@pytest.mark.parametrize("normalizer", ["mean", "callable"])
def test_normalized_applies_the_importance_normalizer(normalizer):
    scores = torch.tensor([1.0, 2.0, 3.0, 6.0])
    importance = tpa.GroupMagnitudeImportance(p=1, normalizer=normalizer if normalizer == "mean" else lambda s: s / 2)
    expected = scores / 3.0 if normalizer == "mean" else scores / 2
    assert torch.equal(tpa.normalized(importance, scores), expected), _changed(
        "GroupMagnitudeImportance._normalize", f"the {normalizer} normaliser gives other scores"
    )


def test_is_split_finds_a_chunk_and_nothing_else():
    splits = [n for n in _graph(_Chunk().eval()).module2node.values() if tpa.is_split(n)]
    assert len(splits) == 1, _changed("ops.OPTYPE.SPLIT", f"{len(splits)} split nodes in a model with one chunk")
    assert not [n for n in _graph(_grouped()).module2node.values() if tpa.is_split(n)]


def test_ops_and_params_are_counted_per_layer():
    conv = nn.Conv2d(3, 8, 3, padding=1, bias=False).eval()
    assert tpa.count_ops_and_params(conv, torch.zeros(1, 3, 8, 8)) == (8 * 8 * 8 * 3 * 9, 8 * 3 * 9)
