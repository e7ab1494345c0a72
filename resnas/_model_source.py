"""An export's model.py: resnas's own source of what a network uses, its plan as a table, `Model`, `load()`.

model.py copies the definitions (`shared_source`, less the costs) of `Network`, of the classes the plan names
and of everything their code uses from resnas._blocks (and resnas._preprocess when it takes raw images): one
definition of every block, in resnas and in each export. `resnas._build.plan` writes the table, with every
block's survival probability, so model.py restates no rule of resnas's.
"""

from __future__ import annotations

import ast
import functools
import inspect
import sys
import textwrap
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any

from resnas import _blocks, _preprocess
from resnas._arch import Arch
from resnas._blocks import Network
from resnas._build import Plan, plan
from resnas._card import sentence
from resnas._contract import InputContract, Resize
from resnas._preprocess import Preprocess

# The modules model.py copies from, in the order it holds them.
_SOURCES: tuple[ModuleType, ...] = (_blocks, _preprocess)

# model.py's docstring says this: an export folder holding a model.py without it is not resnas's.
OURS = "Standalone: needs PyTorch only."
_HEADER = '''\
"""{title}

{description}.

{ours} `load()` builds the network and loads the weights.pt beside this
file; `Model()` builds it freshly initialised. State-dict keys are resnas's own.{usage}
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
'''

_LOAD = '''\
def load(folder: str | Path | None = None{param}) -> Model:
    """The trained network in eval mode, with the weights.pt in `folder` (default: beside this file).{doc}"""
    path = Path(folder if folder is not None else Path(__file__).parent) / "weights.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{{path}}: no weights here (an untrained export?); "
                                "Model() builds the network freshly initialised")
    model = Model({arg})
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()
'''

# model.py's docstring, and load()'s, on the input when the network preprocesses raw images.
_RAW_USAGE = """

It takes raw images: uint8 (0-255) or float (0-1) tensors N x C x H x W of any size, which `Preprocess`
resizes, scales and normalises as training did (the constants below; preprocess.json says the same).
`Model(normalized_input=True)` or `load(normalized_input=True)` skips that, for tensors already resized
to RESOLUTION and normalised. Output i is CLASS_NAMES[i]."""
_RAW_LOAD = """

    normalized_input: it takes tensors already resized and normalised instead of raw images.
    """


_TABLE = """\
# The network: Stem(in_channels, **STEM), a stage per row of STAGES (its class and arguments; cin is the
# channels it takes, survival_probs its blocks' stochastic-depth survival), Head(num_classes=.., **HEAD);
# init_weights zeroes the last BN of each ZERO_LAST_BN block (None: of none)."""

_MODEL = '''\
class Model(Network):
    """This network: `Network` built from the table above."""

    def __init__(self, num_classes: int = NUM_CLASSES, in_channels: int = IN_CHANNELS) -> None:
        super().__init__(STEM, STAGES, HEAD, ZERO_LAST_BN, num_classes, in_channels)
'''

_RAW_MODEL = '''\
class Model(Network):
    """Preprocess, then this network: `Network` built from the table above.

    It takes raw images, uint8 (0-255) or float (0-1), N x C x H x W of any size; with normalized_input=True,
    tensors already resized to RESOLUTION and normalised (the preprocessing skipped).
    """

    def __init__(self, num_classes: int = NUM_CLASSES, in_channels: int = IN_CHANNELS,
                 normalized_input: bool = False) -> None:
        super().__init__(STEM, STAGES, HEAD, ZERO_LAST_BN, num_classes, in_channels)
        # After the network's own modules: its state-dict keys keep resnas's order, preprocess.* come last.
        self.normalized_input = normalized_input
        self.preprocess = Preprocess(RESOLUTION, MEAN, STD, RESIZE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.normalized_input:
            x = self.preprocess(x)
        return super().forward(x)
'''


def shared_source(obj: type | Callable[..., Any]) -> str:
    """resnas's source of `obj` for model.py: as written, less a class's `cost` (which needs resnas)."""
    lines = inspect.getsource(obj).splitlines(keepends=True)
    node = ast.parse("".join(lines)).body[0]
    cut: set[int] = set()
    for item in node.body if isinstance(node, ast.ClassDef) else []:
        if isinstance(item, ast.FunctionDef) and item.name == "cost":
            first = (item.decorator_list[0] if item.decorator_list else item).lineno - 1
            if not lines[first - 1].strip():
                first -= 1  # the blank line before it
            cut.update(range(first, item.end_lineno or first))
    return "".join(line for i, line in enumerate(lines) if i not in cut)


class _Names(ast.NodeVisitor):
    """The names a definition's code uses; annotations left out (model.py never evaluates them)."""

    def __init__(self) -> None:
        self.names: set[str] = set()

    def visit_Name(self, node: ast.Name) -> None:
        self.names.add(node.id)

    def visit_arg(self, node: ast.arg) -> None:
        pass

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        defaults = [d for d in node.args.defaults + node.args.kw_defaults if d is not None]
        for child in node.decorator_list + defaults + node.body:
            self.visit(child)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self.visit(node.value)


@functools.cache
def _definitions(module: ModuleType) -> dict[str, tuple[int, str]]:
    """A module's top-level classes, functions and constants: (line, model.py's source of it) by name."""
    text = inspect.getsource(module)
    lines = text.splitlines(keepends=True)
    found = {}
    for node in ast.parse(text).body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            found[node.name] = (node.lineno, shared_source(getattr(module, node.name)))
        elif isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            first = node.lineno - 1
            while lines[first - 1].startswith("#"):  # the comment above it says why
                first -= 1
            found[node.targets[0].id] = (node.lineno, "".join(lines[first:node.end_lineno]))
    return found


def copied_sources(roots: Iterable[type | Callable[..., Any]]) -> list[str]:
    """model.py's copies of `roots` and of all they use of resnas._blocks and resnas._preprocess, in order."""
    todo = [(sys.modules[obj.__module__], obj.__name__) for obj in roots]
    done: dict[tuple[int, int], str] = {}
    while todo:
        module, name = todo.pop()
        line, source = _definitions(module)[name]
        key = (_SOURCES.index(module), line)
        if key not in done:
            done[key] = source
            visitor = _Names()
            visitor.visit(ast.parse(source))
            todo += [(module, n) for n in visitor.names if n in _definitions(module)]
    return [done[key] for key in sorted(done)]


def _literal(value: Any) -> str:
    """`value` as model.py writes it: classes by name, dicts as dict(...), runs of one number as (v,) * n."""
    if isinstance(value, type):
        return value.__name__
    if isinstance(value, dict):
        return "dict(" + ", ".join(f"{k}={_literal(v)}" for k, v in value.items()) + ")"
    if isinstance(value, tuple) and len(value) > 2 and len(set(value)) == 1:
        return f"({value[0]!r},) * {len(value)}"
    return repr(value)


def _table(p: Plan, num_classes: int, in_channels: int) -> str:
    """The plan as model.py's constants, a stage row per line group, within 100 columns."""
    rows = []
    for stage, kwargs in p.stages:
        # No argument holds a string, so every space lies between tokens inside the brackets.
        args = textwrap.wrap(_literal(kwargs)[5:-1], 92, break_long_words=False, break_on_hyphens=False)
        rows.append(f"    ({stage.__name__}, dict(\n" + "".join(f"        {a}\n" for a in args) + "    )),")
    return "\n".join([_TABLE, f"IN_CHANNELS = {in_channels}", f"NUM_CLASSES = {num_classes}",
                      f"STEM = {_literal(p.stem)}", "STAGES = [", *rows, "]", f"HEAD = {_literal(p.head)}",
                      f"ZERO_LAST_BN = {_literal(p.zero_last_bn)}"]) + "\n"


def _contract_constants(contract: InputContract) -> list[str]:
    """model.py's input contract: what `Preprocess` does to a raw image, and the outputs' names."""
    resize = ("the whole image stretched to a square" if contract.resize is Resize.STRETCH
              else "shorter side to RESOLUTION, then the centre crop")
    names = _tuple_lines("CLASS_NAMES", contract.class_names, "output i is CLASS_NAMES[i]")
    return ["# The input contract (preprocess.json): how raw images became the network's training input.",
            f"RESOLUTION = {contract.resolution}",
            f"RESIZE = {contract.resize.value!r}  # {resize}; bilinear, antialiased",
            f"MEAN = {contract.mean!r}  # per channel, of the training images scaled to [0, 1]",
            f"STD = {contract.std!r}"] + names


def _tuple_lines(name: str, values: tuple[str, ...], comment: str) -> list[str]:
    """`name = (...)`: the values' literals packed into lines of at most 100 columns."""
    rows, row = [], ""
    for item in (repr(v) + "," for v in values):
        if row and len(row) + len(item) + 5 > 100:
            rows.append(row)
            row = ""
        row = f"{row} {item}" if row else item
    return [f"{name} = (  # {comment}"] + [f"    {r}" for r in rows + [row]] + [")"]


def model_source(arch: Arch, *, num_classes: int, in_channels: int, title: str,
                 contract: InputContract | None = None) -> str:
    """model.py of `arch`: docstring, the input contract's constants (when given), the classes it uses as
    resnas defines them (`Preprocess` too, given a contract), its plan as a table, `Model`, `load()`."""
    the_plan = plan(arch)
    raw = contract is not None
    # The title comes from outside (a run folder's name): it must neither end the docstring nor escape.
    heading = " ".join(title.split()).replace("\\", "/").replace('"""', "'''")
    parts = [_HEADER.format(title=heading, description=textwrap.fill(sentence(arch), width=100), ours=OURS,
                            usage=_RAW_USAGE * raw)]
    if contract is not None:
        parts.append("\n".join(_contract_constants(contract)))
    # The classes the table names (stages, blocks, gates); what they use follows.
    named = [v for stage, kwargs in the_plan.stages for v in (stage, *kwargs.values()) if isinstance(v, type)]
    parts += copied_sources([Network, *named] + [Preprocess] * raw)
    parts += [_table(the_plan, num_classes, in_channels), _RAW_MODEL if raw else _MODEL,
              _LOAD.format(param=", normalized_input: bool = False" * raw, doc=_RAW_LOAD * raw,
                           arg="normalized_input=normalized_input" * raw)]
    return "\n\n".join(p.rstrip("\n") + "\n" for p in parts)
