"""The code of each idea: the lines of ``model.py`` that each milestone's config switch turns on, read from the source.

An excerpt is found by the switch's name, never by line numbers, so it follows the code wherever it moves:

1. the statements that mention the switch (``config.residual``, ``cfg.sees_input``, ``self.n_head``...), with
   the body of one that opens a block (an ``if``'s own branch, not its ``else``);
2. where what those build in an ``__init__`` is used, in the same class (or, for a local, the same
   function): ``self.mlp = FeedForward(config) if config.feed_forward else None`` brings in ``if self.mlp is
   not None: ...``.

``GPTConfig`` is left out: it declares and checks the switches, it is not what they turn on.
"""

from __future__ import annotations

import ast
import inspect
import itertools
import textwrap
from dataclasses import dataclass

from . import model
from .milestones import LADDER, Ladder, Milestone

# Where a rung's first change is not the switch its code hangs on: the bigram turns sees_input on, which
# leaves it the table branch of ``has_attention``; milestone 3 also sets sizes, but blocks are what it adds.
SWITCH_OF = {2: "has_attention", 3: "n_layer"}
DECLARES = "GPTConfig"


@dataclass(frozen=True)
class Piece:
    """Consecutive lines of model.py, in one class or function."""
    scope: str                   # e.g. "Block.after_attention"
    first: int                   # the first line's number in model.py, from 1
    lines: tuple[str, ...]       # verbatim


@dataclass(frozen=True)
class Excerpt:
    """What one milestone's switch turns on in model.py."""
    milestone: Milestone
    switch: str
    pieces: tuple[Piece, ...]

    @property
    def code(self) -> str:
        """The pieces as Python to show, by class or function: a comment saying where, the lines dedented, ``...``
        where lines are skipped."""
        shown = []
        for scope, group in itertools.groupby(self.pieces, key=lambda piece: piece.scope):
            group = list(group)
            indent = min(len(line) - len(line.lstrip()) for piece in group for line in piece.lines)
            lines = [line for i, piece in enumerate(group) for line in ([" " * indent + "..."] if i else [])
                     + list(piece.lines)]
            shown.append(f"# {scope}, model.py line {group[0].first}\n" + textwrap.dedent("\n".join(lines)))
        return "\n".join(shown)


def switch_of(milestone: Milestone, ladder: Ladder = LADDER) -> str:
    """The config switch whose lines show what ``milestone`` of ``ladder`` adds (for the ablation, what it takes
    out)."""
    rung = ladder.ablation_rung if milestone.is_ablation else ladder.rungs[milestone.number - 1]
    return SWITCH_OF.get(milestone.key) or next(iter(rung.changes))


def _scopes(tree: ast.Module) -> list[tuple[str, ast.stmt]]:
    """Every statement of the module with the name of the function or class it is in (GPTConfig's left out)."""
    found = []

    def visit(statements: list[ast.stmt], scope: str) -> None:
        for statement in statements:
            if isinstance(statement, ast.ClassDef) and statement.name == DECLARES:
                continue
            inner = scope
            if isinstance(statement, (ast.ClassDef, ast.FunctionDef)):
                inner = f"{scope}.{statement.name}".lstrip(".")
            else:
                found.append((scope, statement))
            for field in ("body", "orelse", "finalbody"):
                visit(getattr(statement, field, []), inner)

    visit(tree.body, "")
    return found


def _own(statement: ast.stmt) -> list[ast.AST]:
    """The expressions a statement holds itself: an ``if``'s test, not its branches."""
    if isinstance(statement, (ast.If, ast.While)):
        return [statement.test]
    if isinstance(statement, ast.For):
        return [statement.target, statement.iter]
    if isinstance(statement, ast.With):
        return list(statement.items)
    return [statement]


def _mentions(statement: ast.stmt, names: set[str]) -> bool:
    return any((isinstance(node, ast.Attribute) and node.attr in names) or (isinstance(node, ast.Name)
                                                                            and node.id in names)
               for expression in _own(statement) for node in ast.walk(expression))


def _lines(statement: ast.stmt) -> range:
    """The statement's own lines: with its body if it opens a block (an ``if``'s own branch only)."""
    body = getattr(statement, "body", None)
    return range(statement.lineno, (body[-1] if body else statement).end_lineno + 1)


def _assigned(statement: ast.stmt, scope: str) -> list[tuple[str, str]]:
    """What the statement (with its own branch) assigns, each with where it can be used: ``self.x`` in the class,
    ``x`` in the function."""
    own = [*_own(statement), *getattr(statement, "body", [])]
    targets = [t for part in own for node in ast.walk(part) if isinstance(node, (ast.Assign, ast.AnnAssign))
               for t in (node.targets if isinstance(node, ast.Assign) else [node.target])]
    return [(t.attr, scope.split(".")[0]) if isinstance(t, ast.Attribute) else (t.id, scope)
            for t in targets if isinstance(t, (ast.Attribute, ast.Name))]


def excerpt(milestone: Milestone, source: str, ladder: Ladder = LADDER) -> Excerpt:
    """The lines of ``source`` (model.py's text) that ``milestone``'s switch turns on."""
    switch = switch_of(milestone, ladder)
    statements = _scopes(ast.parse(source))
    first = [(scope, s) for scope, s in statements if _mentions(s, {switch})]
    taken = {n: scope for scope, s in first for n in _lines(s)}
    built = {a for scope, s in first if scope.endswith(".__init__") for a in _assigned(s, scope) if a[0] != switch}
    for name, owner in built:
        for scope, statement in statements:  # where what the switched lines assign is used
            if (scope == owner or scope.startswith(owner + ".")) and _mentions(statement, {name}):
                taken.update({n: scope for n in _lines(statement) if n not in taken})
    text = source.splitlines()
    pieces: list[Piece] = []
    for n in sorted(taken):
        if pieces and pieces[-1].first + len(pieces[-1].lines) == n and pieces[-1].scope == taken[n]:
            pieces[-1] = Piece(pieces[-1].scope, pieces[-1].first, (*pieces[-1].lines, text[n - 1]))
        else:
            pieces.append(Piece(taken[n], n, (text[n - 1],)))
    return Excerpt(milestone, switch, tuple(pieces))


def read(ladder: Ladder = LADDER) -> list[Excerpt]:
    """Every model of ``ladder``'s excerpt, the ablation's last, from model.py as it is now."""
    source = inspect.getsource(model)
    return [excerpt(m, source, ladder) for m in ladder.models]
