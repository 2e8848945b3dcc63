"""APOLLO and APOLLO-Mini (Zhu et al., "APOLLO: SGD-like Memory, AdamW-level Performance").

Each 2-D weight in a group with a ``rank`` keeps its Adam moments in a rank-r random projection
of its gradient and uses them only to scale the raw gradient per channel (or per tensor for
APOLLO-Mini); the rule is written out in include/ember/apollo.h. The projection P is
regenerated every step from a Philox stream keyed by (seed, parameter index, refresh count), so
the state is the two r×max(m, n) moments and one norm per matrix, and a checkpoint holds no P.
All matrices of a group go through one fused native step (ember.ops.apollo_step_).

Everything else (groups with ``rank=None``, parameters that are not 2-D) follows
torch.optim.AdamW exactly, through torch's fused AdamW kernel.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Iterable

import torch
from torch import nn
from torch.distributed.tensor import DTensor

from .. import ops
from . import apollo_sharded

_LOWRANK_KEYS = ("exp_avg", "exp_avg_sq", "norm_prev")


class Apollo(torch.optim.Optimizer):
    """APOLLO: AdamW-quality updates with SGD-like optimizer memory.

    Args:
        params: parameters or param groups (``apollo_param_groups(model)`` builds the usual ones).
            In a group whose ``rank`` is an int, 2-D parameters get the low-rank rule; with
            ``rank=None`` a group (and any non-2-D parameter) gets AdamW.
        lr, betas, eps, weight_decay: as in AdamW (decoupled decay, applied after the update).
        rank: rows of the random projection.
        scale: the update is multiplied by √scale (APOLLO-Mini: 128).
        scale_type: "channel" (one factor per row of the longer side) or "tensor".
        update_proj_gap: steps between projection refreshes (P is drawn at step 1 and every
            ``update_proj_gap`` steps after; the moments are kept).
        norm_growth_limit: from the second step on, the update's norm grows at most by this factor
            per step (not from an update of norm 0: a zero gradient).
        seed: keys every projection; runs with the same seed and parameter order draw the same P.
        stochastic_rounding: bf16 weights round the updated value stochastically (deterministic:
            the random bits are keyed by seed, parameter and step).
    """

    def __init__(
        self,
        params: Iterable,
        lr: float = 1e-2,
        rank: int | None = 256,
        scale: float = 1.0,
        scale_type: str = "channel",
        update_proj_gap: int = 200,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        norm_growth_limit: float = 1.01,
        seed: int = 0,
        stochastic_rounding: bool = True,
    ):
        defaults = dict(
            lr=lr,
            rank=rank,
            scale=scale,
            scale_type=scale_type,
            update_proj_gap=update_proj_gap,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            norm_growth_limit=norm_growth_limit,
            seed=seed,
            stochastic_rounding=stochastic_rounding,
        )
        _check_hyperparameters(type(self).__name__, defaults)
        super().__init__(params, defaults)

    # ---- groups ----------------------------------------------------------------------------------
    def add_param_group(self, param_group: dict) -> None:
        # Checked before torch adds it: a refused group leaves the optimizer as it was.
        if isinstance(param_group, dict):
            params = param_group.get("params")
            params = [params] if isinstance(params, torch.Tensor) else params
            if params is not None and not isinstance(params, set):  # torch names the other cases
                param_group = {**param_group, "params": list(params)}  # a generator is read once
                group = {**self.defaults, **param_group}
                _check_hyperparameters(type(self).__name__, group)
                for p in param_group["params"]:
                    self._check_param(p, group)
        super().add_param_group(param_group)

    def _check_param(self, p: torch.Tensor, group: dict) -> None:
        name = type(self).__name__
        if not isinstance(p, torch.Tensor):
            return  # torch's add_param_group names it
        if p.is_complex():
            raise ValueError(
                f"ember.optim.{name}: complex parameters are not supported (got a {p.dtype} parameter of shape {tuple(p.shape)})"
            )
        if self._lowrank(p, group) and p.dtype not in (torch.float32, torch.bfloat16):
            raise ValueError(
                f"ember.optim.{name}: low-rank parameters must be float32 or "
                f"bfloat16, got {p.dtype} for a parameter of shape {tuple(p.shape)}"
            )

    @staticmethod
    def _lowrank(p: torch.Tensor, group: dict) -> bool:
        return group["rank"] is not None and p.dim() == 2

    def _stream_of(self) -> dict:
        """Each parameter's index over all groups: it keys the parameter's projection stream."""
        return {p: i for i, p in enumerate(p for g in self.param_groups for p in g["params"])}

    # ---- the step ------------------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        # Every group is checked and sorted before any parameter changes: a refusal changes nothing.
        # (A hyperparameter set in param_groups since the group was added is checked here too.)
        for group in self.param_groups:
            _check_hyperparameters(type(self).__name__, group)
        streams = self._stream_of()
        plans = [(group, *self._sort(group, streams)) for group in self.param_groups]
        for group, lowrank, sharded, adamw, copies in plans:
            for lists in lowrank.values():
                _no_limit_after_a_zero_update(lists["norm_prev"])
                _apollo_step(group, lists)
            if sharded:
                _no_limit_after_a_zero_update([state["norm_prev"] for state in sharded["states"]])
                apollo_sharded.step(group, sharded["params"], sharded["states"], sharded["streams"])
                for state in sharded["states"]:
                    state["step"].add_(1)
            for lists in adamw.values():
                _adamw_step(group, lists)
            for p, work in copies:
                p.copy_(work)
        return loss

    def _sort(self, group: dict, streams: dict) -> tuple[dict, dict, dict, list]:
        """The group's parameters with gradients, their states made or checked, in lists for the
        native low-rank step (by device), apollo_sharded (FSDP2's DTensors) and fused AdamW (by
        device and dtype); and (parameter, contiguous copy) for the parameters stepped as a copy."""
        lowrank = defaultdict(lambda: defaultdict(list))
        sharded = defaultdict(list)
        adamw = defaultdict(lambda: defaultdict(list))
        copies = []
        for p in group["params"]:
            if p.grad is None:
                continue
            grad = p.grad
            if grad.is_sparse:
                raise RuntimeError(
                    f"ember.optim.{type(self).__name__}: sparse gradients are not supported (parameter of shape {tuple(p.shape)})"
                )
            if grad.dtype != p.dtype:  # only with p.grad_dtype changed; fused AdamW named no parameter
                raise RuntimeError(
                    f"ember.optim.{type(self).__name__}: the gradient of a {p.dtype} parameter of shape "
                    f"{tuple(p.shape)} is {grad.dtype}; gradients must have their parameter's dtype"
                )
            state = self.state[p]
            # Both steps pair the elements of a parameter, its gradient and moments by memory
            # order (fused AdamW silently so): a parameter of another layout (a .t() weight) is
            # stepped as a contiguous copy and written back; gradients and moments are contiguous.
            work = p
            if not isinstance(p, DTensor) and not p.is_contiguous():
                work = p.contiguous()
                copies.append((p, work))
            grad = grad if grad.is_contiguous() else grad.contiguous()
            if not self._lowrank(p, group):
                self._adamw_state(p, state)
                lists = adamw[(p.device, p.dtype)]
                for key, value in (("params", work), ("grads", grad), ("steps", state["step"])):
                    lists[key].append(value)
                for key in ("exp_avg", "exp_avg_sq"):
                    lists[key].append(state[key])
                continue
            self._lowrank_state(p, state, group)
            if isinstance(p, DTensor):
                for key, value in (("params", p), ("states", state), ("streams", streams[p])):
                    sharded[key].append(value)
                continue
            lists = lowrank[p.device]
            lists["params"].append(work)
            lists["grads"].append(grad)
            for key in _LOWRANK_KEYS:
                lists[key].append(state[key])
            lists["steps"].append(int(state["step"]) + 1)  # the step being taken
            lists["step_counts"].append(state["step"])
            lists["streams"].append(streams[p])
        return lowrank, sharded, adamw, copies

    def _lowrank_state(self, p: torch.Tensor, state: dict, group: dict) -> None:
        """The low-rank state of p: new zeros on the first step; else checked against p and the
        group, and moved to p's device if p moved (the moments stay float32)."""
        name = type(self).__name__
        self._check_param(p, group)  # p may have changed dtype since it was added
        is_dtensor = isinstance(p, DTensor)
        device = p.to_local().device if is_dtensor else p.device
        if not state:
            long_dim = max(p.shape)
            zeros = (
                (lambda: apollo_sharded.new_state(p, group["rank"]))
                if is_dtensor
                else (lambda: torch.zeros(long_dim, group["rank"], device=p.device))
            )
            state["step"] = torch.tensor(0.0)  # on the host: reading it never syncs
            state["exp_avg"], state["exp_avg_sq"] = zeros(), zeros()
            state["norm_prev"] = torch.zeros((), device=device)
            return
        if state["exp_avg"].shape[1] != group["rank"]:
            raise RuntimeError(
                f"ember.optim.{name}: the state of a parameter of shape {tuple(p.shape)} has rank "
                f"{state['exp_avg'].shape[1]}, the group asks for rank {group['rank']}"
            )
        if not is_dtensor and tuple(state["exp_avg"].shape) != (max(p.shape), group["rank"]):
            raise RuntimeError(
                f"ember.optim.{name}: a parameter of shape {tuple(p.shape)} has a low-rank state of shape "
                f"{tuple(state['exp_avg'].shape)} (a state dict whose parameters came in another order?)"
            )
        if not is_dtensor and state["exp_avg"].device != device:  # the model moved
            for key in _LOWRANK_KEYS:
                state[key] = state[key].to(device)

    @staticmethod
    def _adamw_state(p: torch.Tensor, state: dict) -> None:
        """AdamW's state of p (as torch keeps it: moments in p's dtype, on p's device; contiguous,
        as the fused step pairs them with p by memory order): zeros on the first step, else moved,
        cast or made contiguous to follow p (a model moved to another dtype or device)."""
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.contiguous_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.contiguous_format)
            return
        if state["exp_avg"].shape != p.shape:
            raise RuntimeError(
                f"ember.optim.Apollo: a parameter of shape {tuple(p.shape)} has an AdamW state of shape "
                f"{tuple(state['exp_avg'].shape)} (a state dict whose parameters came in another order?)"
            )
        for key in ("exp_avg", "exp_avg_sq"):
            if state[key].device != p.device or state[key].dtype != p.dtype:
                state[key] = state[key].to(p.device, p.dtype)
            if not isinstance(state[key], DTensor) and not state[key].is_contiguous():
                state[key] = state[key].contiguous()
        if state["step"].device != p.device:  # loaded from a checkpoint: fused wants it here
            state["step"] = state["step"].to(p.device)

    # ---- checkpoints ---------------------------------------------------------------------------------
    def load_state_dict(self, state_dict: dict) -> None:
        # torch casts every floating state tensor to its parameter's dtype; the low-rank moments
        # stay float32 whatever the weights are.
        saved = {
            k: {name: st[name] for name in _LOWRANK_KEYS}
            for k, st in state_dict["state"].items()
            if all(name in st for name in _LOWRANK_KEYS)
        }
        # Saved keys (indices, or names from torch.distributed.checkpoint) pair with the
        # parameters in group order, as torch pairs them.
        keys = [k for g in state_dict["param_groups"] for k in g["params"]]
        params = dict(zip(keys, (p for g in self.param_groups for p in g["params"])))
        # Hyperparameters the saved groups lack (another optimizer's state dict) are this one's
        # defaults; all are checked before anything is loaded.
        groups = [{**self.defaults, **g} for g in state_dict["param_groups"]]
        for group in groups:
            _check_hyperparameters(type(self).__name__, group)
        super().load_state_dict({**state_dict, "param_groups": groups})
        for k, st in saved.items():
            p = params[k]
            for name, value in st.items():
                self.state[p][name] = value.to(device=p.device, dtype=torch.float32, copy=True)
            self.state[p]["step"] = self.state[p]["step"].cpu()


def _no_limit_after_a_zero_update(norms: list[torch.Tensor]) -> None:
    """A previous update of norm 0 (a zero gradient: a layer behind a zero-initialized one at step
    1) limits nothing: growth from 0 is unbounded, and ‖U‖ ≤ γ·1e-8 would leave the matrix stalled
    for good (1 % of growth a step from 1e-8). An infinite previous norm makes the limiter 1."""
    for n in norms:
        n.masked_fill_(n == 0, math.inf)


def _apollo_step(group: dict, lists: dict) -> None:
    """One native step of a group's low-rank matrices on one device."""
    beta1, beta2 = group["betas"]
    ops.apollo_step_(
        lists["params"],
        lists["grads"],
        lists["exp_avg"],
        lists["exp_avg_sq"],
        lists["norm_prev"],
        lists["steps"],
        lists["streams"],
        lr=float(group["lr"]),
        beta1=beta1,
        beta2=beta2,
        eps=group["eps"],
        weight_decay=group["weight_decay"],
        scale=group["scale"],
        tensor_scale=group["scale_type"] == "tensor",
        norm_growth_limit=group["norm_growth_limit"],
        rank=group["rank"],
        update_proj_gap=group["update_proj_gap"],
        seed=group["seed"],
        stochastic_rounding=group["stochastic_rounding"],
    )
    for count in lists["step_counts"]:  # only once the step was taken: an error changes nothing
        count.add_(1)


def _adamw_step(group: dict, lists: dict) -> None:
    """torch's fused AdamW on a group's other parameters of one device and dtype."""
    beta1, beta2 = group["betas"]
    torch._foreach_add_(lists["steps"], 1)
    torch._fused_adamw_(
        lists["params"],
        lists["grads"],
        lists["exp_avg"],
        lists["exp_avg_sq"],
        [],
        lists["steps"],
        amsgrad=False,
        lr=float(group["lr"]),
        beta1=beta1,
        beta2=beta2,
        weight_decay=group["weight_decay"],
        eps=group["eps"],
        maximize=False,
        grad_scale=None,
        found_inf=None,
    )


class ApolloMini(Apollo):
    """APOLLO-Mini: rank 1, one scaling factor per tensor, scale 128 (optimizer state ~0)."""

    def __init__(
        self,
        params: Iterable,
        lr: float = 1e-2,
        rank: int | None = 1,
        scale: float = 128.0,
        scale_type: str = "tensor",
        **kwargs: Any,
    ):
        super().__init__(params, lr=lr, rank=rank, scale=scale, scale_type=scale_type, **kwargs)


def apollo_param_groups(model: nn.Module, **apollo_kwargs: Any) -> list[dict]:
    """Two param groups for an Apollo optimizer: the 2-D weights of the model's Linear layers
    (low-rank rule), and everything else — embeddings, the output head (a Linear that shares its
    weight with an embedding or is named lm_head/output; failing those, the last Linear that
    produces one of the embeddings' vocabularies), norms, biases — with ``rank=None`` (AdamW with
    the same betas/eps). ``apollo_kwargs`` go to both groups (``rank`` only to the first). Frozen
    parameters are left out."""
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear) and m.weight.dim() == 2]
    heads = _heads(model, linears)
    lowrank_ids = {id(m.weight) for _, m in linears if id(m.weight) not in heads}
    lowrank, rest = [], []
    for _, p in model.named_parameters():  # shared parameters once
        if p.requires_grad:
            (lowrank if id(p) in lowrank_ids else rest).append(p)
    rest_kwargs = {k: v for k, v in apollo_kwargs.items() if k != "rank"}
    groups = [dict(params=lowrank, **apollo_kwargs)]
    if rest:
        groups.append(dict(params=rest, **rest_kwargs, rank=None))
    return groups


def _heads(model: nn.Module, linears: list) -> set[int]:
    """ids of the output heads' weights among the Linear layers. Producing a vocabulary alone is a
    weak sign (a layer of a model whose width is its vocabulary size does too), so it marks only
    the last such layer, and only when no layer is tied to an embedding or named as a head."""
    embeddings = [m for m in model.modules() if isinstance(m, nn.Embedding)]
    tied = {id(m.weight) for m in embeddings}
    heads = {id(m.weight) for n, m in linears if id(m.weight) in tied or n.rsplit(".", 1)[-1] in ("lm_head", "output")}
    vocab = [m for _, m in linears if m.out_features in {e.num_embeddings for e in embeddings}]
    return heads or ({id(vocab[-1].weight)} if vocab else set())


def _check_hyperparameters(name: str, h: dict) -> None:
    def bad(key, want):
        raise ValueError(f"ember.optim.{name}: {key} must be {want}, got {h[key]!r}")

    rank = h.get("rank")
    if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 1):
        bad("rank", "a positive int (or None for the AdamW rule)")
    lr = h.get("lr")
    if isinstance(lr, torch.Tensor):
        if lr.numel() != 1:
            bad("lr", "a float")
    elif not isinstance(lr, (int, float)) or not 0 <= lr < math.inf:
        bad("lr", "a finite float >= 0")
    betas = h.get("betas")
    if not (
        isinstance(betas, (tuple, list))
        and len(betas) == 2
        and all(isinstance(b, (int, float)) and 0 <= b < 1 for b in betas)
    ):
        bad("betas", "two floats in [0, 1)")
    if not isinstance(h.get("eps"), (int, float)) or not 0 < h["eps"] < math.inf:
        bad("eps", "a finite float > 0")
    if not isinstance(h.get("weight_decay"), (int, float)) or not 0 <= h["weight_decay"] < math.inf:
        bad("weight_decay", "a finite float >= 0")
    if not isinstance(h.get("scale"), (int, float)) or not (h["scale"] > 0 and math.isfinite(h["scale"])):
        bad("scale", "a finite float > 0")
    if h.get("scale_type") not in ("channel", "tensor"):
        bad("scale_type", '"channel" or "tensor"')
    gap = h.get("update_proj_gap")
    if isinstance(gap, bool) or not isinstance(gap, int) or gap < 1:
        bad("update_proj_gap", "a positive int")
    if not isinstance(h.get("norm_growth_limit"), (int, float)) or not 1 <= h["norm_growth_limit"] < math.inf:
        bad("norm_growth_limit", "a finite float >= 1")
    seed = h.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        bad("seed", "an int in [0, 2^63)")
    if not isinstance(h.get("stochastic_rounding"), bool):
        bad("stochastic_rounding", "a bool")
    for key in ("maximize", "amsgrad", "capturable", "differentiable"):  # torch optimizers' flags it lacks
        if h.get(key):
            bad(key, f"False ({name} does not implement it)")
