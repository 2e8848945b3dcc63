"""Which transformers causal LMs ember can patch, read from the installed transformers' own code.

A class qualifies when its forward takes `logits_to_keep` and `labels`, calls one Linear head
`self.<head>(hidden)` and computes its loss with the shared `self.loss_function` (labels shifted
inside) or a plain CrossEntropyLoss (labels already shifted). Between the head and the loss the
forward may only rescale the logits and soft-cap them (`a·tanh(b·z)`), possibly under an `if` on
a config value, and a mixture-of-experts model may add `coef · aux_loss` to the loss: those are
recorded in a Plan and evaluated on the instance at run time. Anything else done to the logits or
the loss (a z-loss, a vocabulary slice, a second head, image tokens) refuses the class, with the
line that caused it as the reason. Nothing here imports a model module until asked.
"""

from __future__ import annotations

import ast
import functools
import inspect
import textwrap
from dataclasses import dataclass, field


class Refused(Exception):
    """A class ember cannot patch safely; the message says why."""


@dataclass(frozen=True)
class Plan:
    head: str  # attribute name of the Linear head
    ops: tuple = ()  # (kind, expr, condition): kind mul | div | tanh
    aux_coef: ast.expr | None = None  # coef of `loss += coef * aux_loss`
    shifted_labels: bool = False  # the model's labels are already shifted (no
    #                                               shift, no num_items_in_batch: mean over tokens)
    notes: tuple = field(default=())  # what differs from Llama, for the change log


_TANH = {"torch.tanh", "nn.functional.tanh", "torch.nn.functional.tanh", "F.tanh"}
_NO_OPS = {"float", "contiguous"}  # dtype/layout only: the fused loss computes in fp32 anyway


def _src(node) -> str:
    return ast.unparse(node)


def _names(node) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _is_self_attr(node) -> bool:
    while isinstance(node, ast.Attribute):
        node = node.value
    return isinstance(node, ast.Name) and node.id == "self"


def _head_call(node) -> str | None:
    """`self.<head>(x)` (with `.float()` & co. after it allowed by the caller) -> head name."""
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "self"
        and len(node.args) == 1
        and not node.keywords
    ):
        return node.func.attr
    return None


def _ops_of(node, var: str | None, head_ok: bool):
    """The logit transform `node` applies to `var` (or to the head's output when head_ok), as
    (head_name | None, [ops]); None when `node` is not such a chain."""
    if var is not None and isinstance(node, ast.Name) and node.id == var:
        return None, []
    if head_ok and _head_call(node):
        return _head_call(node), []
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and not node.args and not node.keywords:
        if node.func.attr in _NO_OPS:
            return _ops_of(node.func.value, var, head_ok)
        if node.func.attr == "tanh":
            inner = _ops_of(node.func.value, var, head_ok)
            return None if inner is None else (inner[0], inner[1] + [("tanh", None)])
    if isinstance(node, ast.Call) and _src(node.func) in _TANH and len(node.args) == 1 and not node.keywords:
        inner = _ops_of(node.args[0], var, head_ok)
        return None if inner is None else (inner[0], inner[1] + [("tanh", None)])
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mult, ast.Div)):
        kind = "mul" if isinstance(node.op, ast.Mult) else "div"
        for chain, factor in ((node.left, node.right), (node.right, node.left) if kind == "mul" else (None, None)):
            if chain is None or not _constant_expr(factor):
                continue
            inner = _ops_of(chain, var, head_ok)
            if inner is not None:
                return inner[0], inner[1] + [(kind, factor)]
    return None


def _constant_expr(node) -> bool:
    """A factor the plan can evaluate on the instance: numbers, `self.a.b`, `self.config.x`."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return True
    return _is_self_attr(node)


def _condition_ok(node) -> bool:
    if (
        isinstance(node, ast.Compare)
        and len(node.ops) == 1
        and isinstance(node.ops[0], (ast.Is, ast.IsNot, ast.Gt, ast.NotEq))
    ):
        return _constant_expr(node.left) and (
            _constant_expr(node.comparators[0])
            or (isinstance(node.comparators[0], ast.Constant) and node.comparators[0].value is None)
        )
    return _is_self_attr(node)


def _labels_test(node) -> bool:
    return _src(node) == "labels is not None"


def _forward_tree(cls) -> ast.FunctionDef:
    fn = inspect.unwrap(cls.forward)
    tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    return tree.body[0]


def _check_signature(cls) -> None:
    """A text-only causal LM's forward: it takes `labels` and `logits_to_keep`, and no images."""
    name = cls.__name__
    try:
        params = inspect.signature(cls.forward).parameters
    except (TypeError, ValueError) as exc:
        raise Refused(f"{name}.forward has no readable signature ({exc})") from None
    for p in ("labels", "logits_to_keep"):
        if p not in params:
            raise Refused(f"{name}.forward takes no `{p}`")
    config_cls = getattr(cls, "config_class", None)
    subs = sorted(getattr(config_cls, "sub_configs", None) or {})
    if (
        name.endswith("ForConditionalGeneration")
        or any("vision" in s or "audio" in s for s in subs)
        or "pixel_values" in params
        or "image_patches" in params
    ):
        raise Refused(
            f"{name} is multimodal ({', '.join(subs) or 'a conditional-generation model'}): only text-only causal LMs are patched"
        )


class _ForwardReader:
    """Walks a forward's statements: the head call and what is done to its logits, then the loss."""

    def __init__(self, name: str):
        self.name = name
        self.var = self.head = self.aux = self.loss = None  # logits variable, head name, aux coef, loss kind
        self.ops = []
        self.shifted = False

    def refuse(self, stmt, why):
        raise Refused(f"{self.name}.forward: {why}: `{_src(stmt).splitlines()[0].strip()}`")

    def visit(self, stmts, cond, in_labels):
        for stmt in stmts:
            if isinstance(stmt, ast.If):
                if _labels_test(stmt.test):
                    self.visit(stmt.body, cond, True)
                    if stmt.orelse:
                        self.visit(stmt.orelse, cond, in_labels)
                    continue
                touches = self.var is not None and self.var in _names(stmt)
                if touches and not in_labels:
                    # ops recorded under a test it cannot evaluate refuse the class; plain uses
                    # (`if not return_dict: return (logits,) + ...`) are fine
                    ok = _condition_ok(stmt.test) and not stmt.orelse and cond is None
                    self.visit(stmt.body, stmt.test if ok else stmt, in_labels)
                    self.visit(stmt.orelse, stmt, in_labels)
                    continue
                self.visit(stmt.body, cond, in_labels)
                self.visit(stmt.orelse, cond, in_labels)
                continue
            if in_labels:
                self.labels_stmt(stmt)
                continue
            var = self.var
            if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
                target = stmt.targets[0].id
                chain = _ops_of(stmt.value, var if target == var else None, head_ok=self.head is None)
                if chain is not None and ((chain[0] is not None and "logits" in target) or target == var):
                    if chain[0] is not None:
                        if self.head is not None:
                            self.refuse(stmt, "a second head call")
                        self.head, self.var = chain[0], target
                    if chain[1] and isinstance(cond, ast.If):
                        self.refuse(cond, "a condition on the logits it cannot evaluate")
                    self.ops += [(k, e, cond) for k, e in chain[1]]
                    continue
                if target == "loss" and _src(stmt.value) == "None":
                    continue
            if var is not None and var in _names(stmt) and not _harmless_use(stmt, var):
                self.refuse(stmt, "an unrecognized use of the logits")
            if var is None and any(_head_call(n) and n.func.attr == "lm_head" for n in ast.walk(stmt)):
                self.refuse(stmt, "the head is called in a form it does not recognize")

    def labels_stmt(self, stmt):
        var = self.var
        src = _src(stmt)
        if isinstance(stmt, ast.If):  # nested condition inside the loss block
            self.refuse(stmt, "a conditional change to the loss")
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            target, value = stmt.targets[0].id, stmt.value
            if target == "labels":
                if src.startswith("labels = labels.to(") and len(value.args) == 1:
                    return
                self.refuse(stmt, "labels changed before the loss")
            if target == "loss_fct" and src in ("loss_fct = CrossEntropyLoss()", "loss_fct = nn.CrossEntropyLoss()"):
                self.shifted = True
                return
            if target == "loss" and isinstance(value, ast.Call) and self.loss is None:
                f = _src(value.func)
                args = [_src(a) for a in value.args[:2]]
                kw = {k.arg: _src(k.value) for k in value.keywords}
                if (
                    f == "self.loss_function"
                    and (args or [kw.get("logits")])[0] == var
                    and (args[1:] or [kw.get("labels")])[0] == "labels"
                ):
                    self.loss = "causal"
                    return
                if (
                    f == "loss_fct"
                    and self.shifted
                    and len(args) == 2
                    and not kw
                    and args[0] in (f"{var}.view(-1, self.config.vocab_size)", f"{var}.view(-1, {var}.size(-1))")
                    and args[1] in ("labels.view(-1)", "labels.reshape(-1)")
                ):
                    self.loss = "shifted"
                    return
        if (
            isinstance(stmt, ast.AugAssign)
            and isinstance(stmt.op, ast.Add)
            and isinstance(stmt.target, ast.Name)
            and stmt.target.id == "loss"
            and self.loss is not None
            and self.aux is None
        ):
            v = stmt.value
            if (
                isinstance(v, ast.BinOp)
                and isinstance(v.op, ast.Mult)
                and _constant_expr(v.left)
                and "aux_loss" in _names(v.right)
                and _names(v.right) <= {"aux_loss", "loss"}
            ):
                self.aux = v.left
                return
        if "loss" not in _names(stmt) and (var is None or var not in _names(stmt)):
            return  # e.g. moving labels, nothing the loss depends on
        self.refuse(stmt, "a loss it does not recognize")


def analyze(cls) -> Plan:
    """The Plan for one class, or Refused with the reason."""
    name = cls.__name__
    _check_signature(cls)
    try:
        fn = _forward_tree(cls)
    except (OSError, TypeError, SyntaxError) as exc:
        raise Refused(f"{name}.forward has no readable source ({exc})") from None
    reader = _ForwardReader(name)
    reader.visit(fn.body, None, False)
    if reader.head is None:
        raise Refused(f"{name}.forward: no `self.<head>(hidden_states)` call found")
    if reader.loss is None:
        raise Refused(f"{name}.forward: no loss through self.loss_function or CrossEntropyLoss found")
    _check_ops(name, reader.ops)
    _check_head_is_linear(cls, reader.head)
    notes = []
    if any(k == "tanh" for k, _, _ in reader.ops):
        notes.append("soft-capped logits")
    elif reader.ops:
        notes.append("scaled logits")
    if reader.aux is not None:
        notes.append("MoE aux loss")
    if reader.loss == "shifted":
        notes.append("labels already shifted")
    return Plan(reader.head, tuple(reader.ops), reader.aux, reader.loss == "shifted", tuple(notes))


def _harmless_use(stmt, var: str) -> bool:
    """Uses of the logits that do not change the loss: building the output, returning it."""
    if isinstance(stmt, ast.Return):
        return True
    if (
        isinstance(stmt, ast.Assign)
        and len(stmt.targets) == 1
        and isinstance(stmt.targets[0], ast.Name)
        and stmt.targets[0].id in ("output", "outputs")
    ):
        return True
    value = getattr(stmt, "value", None)  # `out = CausalLMOutputWithPast(loss=loss, logits=logits, ...)`
    return isinstance(stmt, ast.Assign) and isinstance(value, ast.Call) and "Output" in _src(value.func).split(".")[-1]


def _check_head_is_linear(cls, head: str) -> None:
    """The head is built as `nn.Linear(...)` in __init__ (a head with its own layers, like an MLM
    head, is no plain projection the fused loss could take over)."""
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(init)))
        except (OSError, TypeError, SyntaxError):
            break
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and any(_src(t) == f"self.{head}" for t in node.targets):
                if isinstance(node.value, ast.Call) and _src(node.value.func) in (
                    "nn.Linear",
                    "torch.nn.Linear",
                    "Linear",
                ):
                    return
                raise Refused(f"{cls.__name__}.{head} is not an nn.Linear (`{_src(node).strip()}`)")
    raise Refused(f"{cls.__name__}: no `self.{head} = nn.Linear(...)` found in __init__")


def _check_ops(name: str, ops) -> None:
    """At most one tanh: c·tanh(s·z / c) is the one nonlinear form the fused loss reproduces
    (each scale before or after it may sit under its own condition: logit_map evaluates them)."""
    if sum(k == "tanh" for k, _, _ in ops) > 1:
        raise Refused(f"{name}.forward: more than one tanh on the logits")


# ---- run time ------------------------------------------------------------------------------------------
def _eval(node, model):
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name) and node.id == "self":
        return model
    if isinstance(node, ast.Attribute):
        return getattr(_eval(node.value, model), node.attr)
    if isinstance(node, ast.Compare):
        left, right = _eval(node.left, model), _eval(node.comparators[0], model)
        op = node.ops[0]
        return (
            left is right
            if isinstance(op, ast.Is)
            else left is not right
            if isinstance(op, ast.IsNot)
            else left > right
            if isinstance(op, ast.Gt)
            else left != right
        )
    raise Refused(f"cannot evaluate `{_src(node)}`")  # analyze() admits only the forms above


def logit_map(plan: Plan, model) -> tuple[object, float | None, float]:
    """(scale, softcap, aux_coef) on this instance: the head's logits z become
    softcap·tanh(scale·z/softcap) (softcap None: scale·z), as the original forward computes."""
    pre, post, cap_seen = 1.0, 1.0, False
    for kind, expr, cond in plan.ops:
        if cond is not None and not _eval(cond, model):
            continue
        if kind == "tanh":
            cap_seen = True
            continue
        v = _eval(expr, model)
        f = v if kind == "mul" else 1.0 / v
        if cap_seen:
            post = post * f
        else:
            pre = pre * f
    aux = 0.0 if plan.aux_coef is None else _eval(plan.aux_coef, model)
    if not cap_seen:
        return pre, None, aux
    if not float(post) > 0:  # c·tanh(y/c) is even in c: a negative post-scale is another function
        raise ValueError(f"ember.patch: {type(model).__name__}: the logits' soft-cap is {float(post)}, not positive")
    # post·tanh(pre·z) = c·tanh((c·pre·z)/c) with c = post
    return pre * post, float(post), aux


@functools.lru_cache(maxsize=None)
def plan_for(cls) -> Plan:
    return analyze(cls)


@functools.lru_cache(maxsize=1)
def scan() -> tuple[dict[str, str], dict[str, str]]:
    """({model_type: class name} supported, {model_type: reason} refused) for every entry of the
    installed transformers' causal-LM auto mapping. Imports each model module once (seconds)."""
    import transformers
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    ok, refused = {}, {}
    for model_type, cls_name in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.items():
        try:
            cls = getattr(transformers, cls_name)
        except Exception as exc:  # an optional dependency missing, a broken module
            refused[model_type] = f"{cls_name} does not import ({type(exc).__name__}: {str(exc)[:80]})"
            continue
        try:
            plan_for(cls)
            ok[model_type] = cls_name
        except Refused as exc:
            refused[model_type] = str(exc)
    return ok, refused
