"""A-GEM: project the gradient so that the loss on the episodic memory does not increase (on average).

Reference:
    A. Chaudhry, M. Ranzato, M. Rohrbach, M. Elhoseiny, "Efficient Lifelong Learning with A-GEM",
    ICLR 2019. With g the gradient of the training loss and g_ref the gradient of the loss on a
    batch drawn from the episodic memory of the past experiences (both flattened over every
    parameter that trains): if ``g . g_ref < 0``, ``g <- g - (g . g_ref / g_ref . g_ref) g_ref``;
    otherwise g is left as it is. Official code: ``facebookresearch/agem`` (TensorFlow;
    ``model/model.py`` for the projection, ``fc_permute_mnist.py`` and ``conv_split_cifar.py``
    for the memory and its defaults).

Defaults (the official code's):
    - Reference batch: ``EPS_MEM_BATCH_SIZE = 256`` samples drawn uniformly without replacement
      from the whole memory (all of it while it holds fewer).
    - Memory: a fixed number per experience that stays for the rest of the stream (the memory
      grows with the experiences): ``SAMPLES_PER_CLASS = 25`` per class of each task in
      ``fc_permute_mnist.py``, i.e. 250 per 10-class experience; ``mem_per_experience=250``.
      (``conv_split_cifar.py`` keeps 13 per class, 65 per 5-class task.)

Deviations and choices:
    - The official code keeps, per class of each task, the last ``SAMPLES_PER_CLASS`` samples of
      the (shuffled) stream in a ring buffer; we keep a uniform random subset of each
      experience's training set, not stratified by class
      (:class:`~continual.replay.buffers.ExperienceBalancedBuffer` with a fixed number per
      experience), filled at the end of the experience. Both make the memory of an experience
      usable only from the next one on, as in the paper. Avalanche's ``AGEMPlugin`` also keeps a
      fixed ``patterns_per_experience``; Mammoth's ``models/agem.py`` keeps
      ``buffer_size // N_TASKS`` per task in one reservoir buffer. ``mem > 0`` gives a fixed total
      shared equally among the experiences seen instead (for equal-memory comparisons with ER).
    - g_ref is computed in :meth:`AGEM.before_step` with its own forward pass and
      ``torch.autograd.grad`` (the ``.grad`` of the training loss is untouched until the
      projection), in the model's training mode (as the official code, ``train_phase: True``,
      and Mammoth do: BatchNorm statistics see the memory batch) and with the training transform,
      augmentation included (Mammoth's ``get_data(transform=...)``), drawn with the buffer's
      generator. In the task scenario, its logits are masked to each stored sample's task, as
      the trainer masks the training batch's.
    - The test is ``dot < 0`` (the official ``tf.greater_equal(dotp, 0)`` keeps g). It runs on the
      device with ``torch.where`` (no host sync), so each step does the projection's arithmetic
      with a zero coefficient when it does not apply. Avalanche's (older) plugin projects each
      parameter tensor separately; we follow the paper (one dot product over all parameters).
    - The official code masks the logits of the memory's loss to the past tasks' classes; with
      the class-incremental head the logits of classes not seen yet are -inf, which leaves the
      cross-entropy over the classes seen so far (the current experience's included).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ContinualError
from ..models import forward
from ..strategies import Range, Strategy, register
from ..streams import Experience
from ..trainer import Plugin
from .buffers import Buffer, ExperienceBalancedBuffer

EPS_MEM_BATCH_SIZE = 256  # facebookresearch/agem: samples of the memory per reference gradient
MEM_PER_EXPERIENCE = 250  # facebookresearch/agem fc_permute_mnist.py: 25 per class x 10 classes per task


def project(grads: list[Tensor], ref: list[Tensor]) -> Tensor:
    """A-GEM's projection, in place: ``g <- g - (g . r / r . r) r`` where ``g . r < 0``, with ``g`` and
    ``r`` the concatenations of ``grads`` and ``ref`` (tensors paired by position).

    Returns the dot product ``g . r`` before the projection (a 0-dim tensor; no host sync).

    Example:
        >>> g, r = [torch.tensor([1.0, -2.0])], [torch.tensor([0.0, 1.0])]
        >>> project(g, r).item(), g[0].tolist()  # the component along r is removed
        (-2.0, [1.0, 0.0])
        >>> g = [torch.tensor([1.0, 2.0])]
        >>> project(g, r).item(), g[0].tolist()  # no conflict: unchanged
        (2.0, [1.0, 2.0])
    """
    dot = torch.stack([torch.dot(g.reshape(-1), r.reshape(-1)) for g, r in zip(grads, ref)]).sum()  # g . g_ref
    ref_sq = torch.stack([torch.dot(r.reshape(-1), r.reshape(-1)) for r in ref]).sum()  # g_ref . g_ref
    minus_coef = torch.where(dot < 0, -dot / ref_sq.clamp(min=torch.finfo(ref_sq.dtype).tiny), 0.0)  # 0 when no conflict
    for g, r in zip(grads, ref):
        g.addcmul_(r, minus_coef)  # g -= coef * r
    return dot


class AGEM(Plugin):
    """A-GEM (Chaudhry et al. 2019): project each step's gradient against the memory's gradient.

    At the end of each experience the buffer takes samples of it (``buffer.update``). From then
    on, :meth:`before_step` draws ``sample_size`` stored samples, computes the reference gradient
    of their mean cross-entropy with ``torch.autograd.grad`` over the parameters that require a
    gradient, and projects the ``.grad`` of the training loss with :func:`project`.

    Args:
        buffer: a buffer filled per experience (:class:`ExperienceBalancedBuffer`).
        sample_size: samples per reference gradient (all of the memory while it holds fewer).
        task_mask: ``(num_tasks, num_classes)`` bool, the classes each task id may predict, in the
            task scenario (``stream.task_class_mask()``); ``None`` otherwise. Not applied to a
            model that routes by task id itself (``takes_task_id``).

    The transform of the memory's inputs is the one of the experience given to
    :meth:`before_experience`.
    """

    name = "a-gem"

    def __init__(self, buffer: Buffer, *, sample_size: int = EPS_MEM_BATCH_SIZE, task_mask: Tensor | None = None) -> None:
        if buffer.per_batch:
            raise ContinualError(f"A-GEM's memory is filled at the end of each experience; got a {buffer.kind!r} buffer "
                                 "(use experience-balanced or class-balanced)")
        if not (isinstance(sample_size, int) and sample_size >= 1):
            raise ContinualError(f"sample_size={sample_size!r} must be a positive integer")
        self.buffer = buffer
        self.sample_size = sample_size
        self.task_mask = None if task_mask is None else task_mask.to(buffer.device)
        self._mask_tasks = task_mask is not None
        self._transform = None
        self._steps = torch.zeros((), dtype=torch.int64, device=buffer.device)  # steps with a reference gradient
        self._projected = torch.zeros((), dtype=torch.int64, device=buffer.device)  # ... where g . g_ref < 0

    def before_experience(self, model: nn.Module, experience: Experience) -> None:
        self._transform = experience.transform
        self._mask_tasks = self.task_mask is not None and not getattr(model, "takes_task_id", False)
        return None

    def reference_gradient(self, model: nn.Module, params: list[nn.Parameter]) -> list[Tensor] | None:
        """The gradient of the mean cross-entropy on a memory batch, one tensor per parameter
        (zeros where a parameter does not reach the loss); ``None`` while the memory is empty."""
        mem = self.buffer.sample(self.sample_size)
        if mem is None:
            return None
        if self._transform is None:
            raise ContinualError("A-GEM needs before_experience(model, experience) first (it takes the experience's transform)")
        x = self._transform(mem.x, train=True, generator=self.buffer.generator)
        out = forward(model, x, mem.t)  # (S, C)
        if self._mask_tasks:
            out = out.masked_fill(~self.task_mask[mem.t, : out.shape[1]], float("-inf"))
        loss = F.cross_entropy(out, mem.y)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]

    def before_step(self, model: nn.Module) -> None:
        params = [p for p in model.parameters() if p.requires_grad]
        ref = self.reference_gradient(model, params)
        if ref is None:
            return
        for p in params:
            if p.grad is None:  # a parameter the training loss did not reach: its gradient is 0
                p.grad = torch.zeros_like(p)
        with torch.no_grad():
            dot = project([p.grad for p in params], ref)
        self._steps += 1
        self._projected += dot < 0

    def after_experience(self, model: nn.Module, experience: Experience) -> None:
        self.buffer.update(experience, model=model)

    def state_dict(self) -> dict:
        return {"buffer": self.buffer.state_dict(), "steps": self._steps.clone(), "projected": self._projected.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.buffer.load_state_dict(state["buffer"])
        self._steps = state["steps"].to(self.buffer.device).clone()
        self._projected = state["projected"].to(self.buffer.device).clone()

    def memory_bytes(self) -> int:
        """Bytes held besides the buffer: two counters (the reference gradient is a per-step temporary)."""
        return self._steps.element_size() + self._projected.element_size()

    def report(self) -> dict:
        steps, projected = int(self._steps), int(self._projected)  # one host sync, when the results are written
        return {**self.buffer.report(), "sample_size": self.sample_size, "steps_with_memory": steps,
                "projected_steps": projected}


class EpisodicMemory(ExperienceBalancedBuffer):
    """A fixed number of samples per experience, chosen uniformly within it; the storage for
    ``num_experiences`` experiences is allocated ahead (A-GEM's per-task memory).

    Example:
        >>> mem = EpisodicMemory(250, 20)
        >>> mem.capacity, mem.per_group
        (5000, 250)
    """

    kind = "experience-balanced"

    def __init__(self, per_experience: int, num_experiences: int, *, device: torch.device | str = "cpu", seed: int = 0) -> None:
        if not (isinstance(per_experience, int) and per_experience >= 1 and num_experiences >= 1):
            raise ContinualError(f"mem_per_experience={per_experience!r} must be a positive integer (and the stream non-empty)")
        super().__init__(per_experience * num_experiences, device=device, seed=seed)
        self.per_group = per_experience

    def report(self) -> dict:
        return {**super().report(), "budget": f"{self.per_group} per experience"}


def _agem_plugins(params: dict, context) -> list:
    stream = context.stream
    if params["mem"]:
        buffer = ExperienceBalancedBuffer(params["mem"], device=context.device, seed=context.seed)
    else:
        buffer = EpisodicMemory(params["mem_per_experience"], len(stream), device=context.device, seed=context.seed)
    task_mask = stream.task_class_mask() if stream.scenario == "task" else None
    return [AGEM(buffer, sample_size=params["sample_size"], task_mask=task_mask)]


register(Strategy(
    "a-gem", "A-GEM (Chaudhry et al. 2019): project the gradient when it conflicts with the episodic memory's",
    defaults={
        "mem_per_experience": MEM_PER_EXPERIENCE,  # samples kept per experience (facebookresearch/agem: 25 per class x 10)
        "mem": 0,  # > 0: a fixed total shared equally among the experiences seen, instead of mem_per_experience
        "sample_size": EPS_MEM_BATCH_SIZE,  # memory samples per reference gradient (facebookresearch/agem: 256)
    },
    make_plugins=_agem_plugins,
    limits={"mem_per_experience": Range(1), "mem": Range(0), "sample_size": Range(1)},
    past_classes=True,
))
