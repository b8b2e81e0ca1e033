"""Per-sample gradient statistics without a Python loop over samples, and the Fisher estimators.

The diagonal Fisher information of a classifier p(c|x; theta) over N samples (always the mean
over samples, never the sum) is estimated in one of four ways (van de Ven 2025, "On the
computation of the Fisher information in continual learning", ICLR blog post):

- ``exact``: per sample, ``sum_c p(c|x) (grad log p(c|x))^2``;
- ``sampled``: per sample, ``(grad log p(c~|x))^2`` with one label ``c~`` drawn from ``p(.|x)``
  (a seeded generator);
- ``empirical``: per sample, ``(grad log p(y|x))^2`` at the true label ``y``;
- ``batched``: the squared gradient of each mini-batch's mean loss, averaged over batches (what
  Avalanche computes; cheap but biased: it squares averaged gradients, so it is about
  ``1/batch_size`` of the others in scale and needs a larger lambda).

Per-sample quantities are computed without a loop over samples:

- for an ``nn.Linear`` called once on ``(B, in)`` inputs, the per-sample weight gradient is the
  outer product ``g_n a_n^T`` of the output gradient and the input, so
  ``sum_n (g_n a_n^T)^2 = (g^2)^T (a^2)`` and ``sum_n |g_n a_n^T| = |g|^T |a|`` (bias:
  ``sum_n g_n^2``, ``sum_n |g_n|``): one batched backward (the identity BackPACK uses). The
  inputs and outputs are caught with forward hooks; output gradients for several per-sample
  objectives at once (``exact`` has one per class) come from one ``is_grads_batched`` backward;
- every other parameter (convolutions, BatchNorm, ...) gets per-sample gradients from
  ``torch.func.vmap`` over ``torch.func.grad`` (``jacrev`` for several objectives), in chunks.

The model runs in eval mode (BatchNorm uses its running statistics, dropout is off), so samples
are independent; its mode is restored afterwards. The logits are masked as in training: to each
sample's task in the task scenario, and to the current experience's classes with a
``mask_past`` head (:func:`allowed_logits`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, jacrev, vmap

from ..models import forward, training_mask
from .base import check_choice, trainable

Estimator = Literal["empirical", "exact", "sampled", "batched"]
ESTIMATORS: tuple[str, ...] = get_args(Estimator)
Power = Literal["square", "abs"]

# prepare(out, keep) -> (aux, weights): per-sample extras for the objective, computed once on the
# detached logits (targets drawn or given; class weights), shapes (B, ...) and (B, K) or None.
Prepare = Callable[[Tensor, Tensor], tuple[Tensor | None, Tensor | None]]
# objective(out, keep, aux) -> (B, K): the per-sample scalars whose gradients are taken.
Objective = Callable[[Tensor, Tensor, Tensor | None], Tensor]


def _pow(g: Tensor, power: Power) -> Tensor:
    return g.square() if power == "square" else g.abs()


@torch.enable_grad()
def grad_stats(
    model: nn.Module,
    x: Tensor,
    *,
    objective: Objective,
    prepare: Prepare | None = None,
    t: Tensor | None = None,
    keep: Tensor | None = None,
    power: Power = "square",
    vmap_chunk: int = 64,
) -> dict[str, Tensor]:
    """``sum_n sum_k w[n, k] * power(grad_theta s[n, k])`` for each trainable parameter, on one batch.

    ``s = objective(logits, keep, aux)`` is ``(B, K)``: K per-sample scalars (K=1 for the empirical
    Fisher and MAS, K=C for the exact Fisher); ``aux, w = prepare(logits.detach(), keep)`` (``w``
    defaults to ones). Linear layers use the outer-product identity, other layers vmap (see the
    module docstring). The model should be in eval mode.

    Args:
        model: the network; called as :func:`continual.models.forward` ``(model, x, t)``.
        x: model inputs ``(B, ...)``.
        objective: see above; must treat samples independently.
        prepare: see above.
        t: per-sample task ids ``(B,)`` (zeros if ``None``).
        keep: boolean ``(B, C)``, the logits each sample may use (all if ``None``).
        power: ``"square"`` (Fisher) or ``"abs"`` (MAS).
        vmap_chunk: samples per vmap chunk (divided by K for several objectives).

    Returns:
        Sums over the batch (not means), by parameter name.
    """
    params = trainable(model)
    B = len(x)
    if t is None:
        t = torch.zeros(B, dtype=torch.long, device=x.device)
    calls: dict[nn.Module, list[tuple[Tensor, Tensor]]] = {}  # (input, output) per call

    def hook(module, inputs, output):
        calls.setdefault(module, []).append((inputs[0], output))
        # What follows the layer may modify its output in place (nn.ReLU(inplace=True), common in
        # user models and torchvision): hand on a copy, so the gradient is taken at the layer's
        # own output, not at the activation written over it. (Its input cannot be modified in
        # place afterwards: autograd keeps it for the weight's gradient and would refuse.)
        return output.clone()

    linears = [m for m in model.modules() if isinstance(m, nn.Linear) and any(p.requires_grad for p in m.parameters())]
    handles = [m.register_forward_hook(hook) for m in linears]
    try:
        out = forward(model, x, t)  # (B, C)
    finally:
        for h in handles:
            h.remove()
    if keep is None:
        keep = torch.ones_like(out, dtype=torch.bool)
    aux, w = prepare(out.detach(), keep) if prepare is not None else (None, None)
    s = objective(out, keep, aux)  # (B, K)
    K = s.shape[1]
    if w is None:
        w = torch.ones_like(s)
    w = w.detach()

    # Linear layers called once on flat inputs: the outer-product identity.
    by_param = {id(p): name for name, p in params.items()}
    ok = [m for m in linears if len(calls.get(m, [])) == 1 and calls[m][0][0].dim() == 2 and calls[m][0][1].requires_grad]
    stats: dict[str, Tensor] = {}
    if ok:
        zs = [calls[m][0][1] for m in ok]
        if K == 1:
            deltas = torch.autograd.grad(s[:, 0].sum(), zs, allow_unused=True)
            deltas = [None if d is None else d.unsqueeze(0) for d in deltas]  # (1, B, out)
        else:
            eye = torch.eye(K, dtype=s.dtype, device=s.device).unsqueeze(1).expand(K, B, K)  # (K, B, K)
            deltas = torch.autograd.grad(s, zs, grad_outputs=eye, is_grads_batched=True, allow_unused=True)
        for m, delta in zip(ok, deltas):
            a = calls[m][0][0].detach()  # (B, in)
            if delta is None:
                d = torch.zeros(B, m.out_features, device=x.device, dtype=a.dtype)
            else:
                d = torch.einsum("kbo,bk->bo", _pow(delta.detach(), power), w)  # (B, out)
            if m.weight.requires_grad:
                stats[by_param[id(m.weight)]] = d.T @ _pow(a, power)  # (out, in)
            if m.bias is not None and m.bias.requires_grad:
                stats[by_param[id(m.bias)]] = d.sum(0)
    del calls, s, out

    # Everything else: per-sample gradients with torch.func.
    rest = [name for name in params if name not in stats]
    if rest:
        frozen = {name: p.detach() for name, p in model.named_parameters()}
        frozen.update({name: b for name, b in model.named_buffers()})
        takes_t = getattr(model, "takes_task_id", False)
        aux_b = aux if aux is not None else torch.zeros(B, device=x.device)

        def scalars(sub: dict[str, Tensor], xn: Tensor, tn: Tensor, kn: Tensor, an: Tensor) -> Tensor:
            args = (xn[None], tn[None]) if takes_t else (xn[None],)
            logits = functional_call(model, {**frozen, **sub}, args)  # (1, C)
            return objective(logits, kn[None], an[None] if aux is not None else None)[0]  # (K,)

        def one(sub: dict[str, Tensor], xn, tn, kn, an, wn) -> dict[str, Tensor]:
            if K == 1:
                g = grad(lambda p: scalars(p, xn, tn, kn, an)[0])(sub)
                return {k: wn[0] * _pow(v, power) for k, v in g.items()}
            jac = jacrev(lambda p: scalars(p, xn, tn, kn, an))(sub)  # each (K, *shape)
            return {k: torch.tensordot(wn, _pow(v, power), dims=1) for k, v in jac.items()}

        sub = {name: params[name].detach() for name in rest}
        per = vmap(one, in_dims=(None, 0, 0, 0, 0, 0), chunk_size=max(1, vmap_chunk // K))(sub, x, t, keep, aux_b, w)
        for name in rest:
            stats[name] = per[name].sum(0)
    return stats


def allowed_logits(model: nn.Module, x: Tensor, t: Tensor, mask: Callable[[Tensor, Tensor], Tensor] | None) -> Tensor | None:
    """The logits each sample of ``x`` trains on, boolean ``(B, C)``; ``None`` when all of them.

    Two masks meet here: ``mask(logits, t)`` sets the logits outside a sample's task to -inf (the
    task scenario, ``experience.mask_logits``), and a ``mask_past`` head masks past classes in
    training (:func:`continual.models.training_mask`), which eval mode, where importances are
    estimated, does not do by itself.
    """
    past = training_mask(model)
    if mask is None and past is None:
        return None
    with torch.no_grad():
        c = forward(model, x[:1], t[:1]).shape[1]
    keep = torch.ones(len(x), c, dtype=torch.bool, device=x.device)
    if mask is not None:
        keep = mask(torch.zeros(len(x), c, device=x.device), t).isfinite()
    if past is not None:
        keep = keep & past.to(x.device)[:c]
    return keep


def log_probs(out: Tensor, keep: Tensor) -> Tensor:
    """Log-softmax over each sample's allowed logits; 0 (no gradient) at the others. ``(B, C)``."""
    return F.log_softmax(out.masked_fill(~keep, float("-inf")), dim=1).masked_fill(~keep, 0.0)


def _at_label(out: Tensor, keep: Tensor, y: Tensor | None) -> Tensor:
    return log_probs(out, keep).gather(1, y[:, None])  # (B, 1)


def fisher_diagonal(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    t: Tensor | None = None,
    estimator: Estimator = "empirical",
    transform: Callable[[Tensor], Tensor] | None = None,
    mask: Callable[[Tensor, Tensor], Tensor] | None = None,
    chunk_size: int = 512,
    batch_size: int = 32,
    seed: int = 0,
) -> dict[str, Tensor]:
    """The diagonal Fisher information of ``model`` on ``(x, y)``, averaged over samples.

    Args:
        model: a classifier returning logits.
        x: inputs, ``(N, ...)``: model inputs, or stored inputs when ``transform`` is given.
        y: labels ``(N,)`` (used by ``empirical`` and ``batched``).
        t: per-sample task ids ``(N,)`` (zeros if ``None``).
        estimator: ``"empirical"``, ``"exact"``, ``"sampled"`` or ``"batched"`` (module docstring).
        transform: applied to each chunk of ``x`` (e.g. ``experience.transform``).
        mask: ``mask(logits, t)`` sets logits a sample may not use to -inf
            (``experience.mask_logits``, for the task scenario).
        chunk_size: samples per batched pass of the per-sample estimators (memory, not result).
        batch_size: the mini-batch size of the ``batched`` estimator (changes the result).
        seed: seeds the labels drawn by ``sampled``.

    Returns:
        A tensor per trainable parameter (by name), the mean over the N samples (``batched``:
        over the mini-batches).

    Raises:
        ContinualError: for an unknown estimator (naming the accepted ones).
    """
    check_choice("Fisher estimator", estimator, ESTIMATORS)
    N = len(x)
    if t is None:
        t = torch.zeros(N, dtype=torch.long, device=x.device)
    params = trainable(model)
    was_training = model.training
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    total: dict[str, Tensor] = {name: torch.zeros_like(p) for name, p in params.items()}
    step = batch_size if estimator == "batched" else chunk_size
    try:
        for s in range(0, N, step):
            xb = x[s : s + step]
            xb = transform(xb) if transform is not None else xb
            yb, tb = y[s : s + step], t[s : s + step]
            keep = allowed_logits(model, xb, tb, mask)
            if estimator == "batched":
                with torch.enable_grad():
                    out = forward(model, xb, tb)
                    if keep is not None:
                        out = out.masked_fill(~keep, float("-inf"))
                    loss = F.cross_entropy(out, yb)
                    names = list(params)
                    grads = torch.autograd.grad(loss, [params[n] for n in names], allow_unused=True)
                for n, g in zip(names, grads):
                    if g is not None:
                        total[n] += g.detach().square()
                continue
            if estimator == "empirical":
                stats = grad_stats(model, xb, t=tb, keep=keep, objective=_at_label, prepare=lambda out, k, yb=yb: (yb, None))
            elif estimator == "sampled":
                def draw(out: Tensor, k: Tensor) -> tuple[Tensor, None]:
                    p = torch.softmax(out.masked_fill(~k, float("-inf")), dim=1)
                    return torch.multinomial(p.cpu(), 1, generator=generator).squeeze(1).to(out.device), None
                stats = grad_stats(model, xb, t=tb, keep=keep, objective=_at_label, prepare=draw)
            else:  # exact
                stats = grad_stats(model, xb, t=tb, keep=keep, objective=lambda out, k, aux: log_probs(out, k),
                                   prepare=lambda out, k: (None, torch.softmax(out.masked_fill(~k, float("-inf")), dim=1)))
            for n, v in stats.items():
                total[n] += v
    finally:
        model.train(was_training)
    count = -(-N // batch_size) if estimator == "batched" else N
    return {n: v / max(count, 1) for n, v in total.items()}
