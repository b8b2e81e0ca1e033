"""Validation splits: a seeded, class-stratified hold-out of each experience's training data.

Choosing hyperparameters (a learning rate, EWC's lambda, a buffer size) by their test accuracy
lets the test set take part in model selection: the accuracy then reported for the chosen
configuration is an optimistic, biased estimate of its accuracy on unseen data. A run with
``RunConfig(validation=F)`` (``continual run --validation F``) holds out a fraction ``F`` of each
experience's *training* split, never trains on it, and records a second accuracy matrix on it
beside the test matrix; sweeps then rank configurations by validation accuracy
(``continual compare DIR --rank-by validation``) and the test matrix of the chosen one is the
number to report.

The hold-out (:func:`holdout_indices`): for each experience and each class ``c`` among its
training labels, with ``n_c`` training samples,

    ``k_c = min(n_c - 1, max(1, floor(F * n_c + 1/2)))`` samples are held out when ``n_c >= 2``,
    none when ``n_c == 1``:

``F * n_c`` rounded half up, at least one sample per class, and at least one left to train on.
Which samples is drawn from NumPy's generator seeded with ``[SALT, seed]`` (the run's seed and a
fixed salt, so the draw is not the batch order's random stream), experience by experience, class
by class in increasing label order; the same seed gives the same split on every device. The
kept training samples stay in their original order.

What the run does with it (:func:`split_stream`, :class:`ValidationMatrix`): the training
experiences lose the held-out samples, so everything that trains sees only the rest (the
cumulative and joint schedules concatenate the reduced experiences; replay buffers, importance
estimates and first-session adaptation never see a validation sample). The held-out samples of
experience ``j`` form a validation experience whose *test* split they are (its training split is
empty), so :meth:`continual.trainer.Trainer.evaluate` measures them unchanged, with the run's
evaluation classifier; ``V[i][j]`` is the accuracy on experience ``j``'s validation samples after
training on experience ``i`` (``T`` equal rows for the joint schedule, as the test matrix). With
cached features of a frozen backbone the validation inputs go through the same cache.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence

import numpy as np
import torch

from .errors import ContinualError
from .metrics import AccuracyMatrix
from .streams import Stream

SALT = 0x76616C  # "val": the split's generator is seeded with [SALT, seed], apart from the run's other draws
RANK_BY = ("test", "validation")  # what `continual compare --rank-by` ranks configurations by


def check_fraction(value: object, label: str = "validation") -> float:
    """``value`` as a hold-out fraction: 0 (off) or a number strictly between 0 and 1.

    >>> check_fraction(0.2), check_fraction(0)
    (0.2, 0.0)

    Raises:
        ContinualError: one line naming the value and what is accepted.
    """
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and (value == 0 or 0 < value < 1)
    if not ok:
        raise ContinualError(f"{label}={value!r} is out of range: expected 0 (no validation split) or a fraction "
                             "0 < F < 1 of each experience's training data to hold out, e.g. 0.1")
    return float(value)


def held_out_count(n: int, fraction: float) -> int:
    """How many of a class's ``n`` training samples are held out (see the module docstring).

    >>> [held_out_count(n, 0.2) for n in (1, 2, 5, 7, 8, 100)]
    [0, 1, 1, 1, 2, 20]
    >>> held_out_count(2, 0.9), held_out_count(10, 0.25)
    (1, 3)
    """
    if n < 2:
        return 0
    return min(n - 1, max(1, math.floor(fraction * n + 0.5)))


def holdout_indices(y: torch.Tensor, fraction: float, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Split the sample indices of labels ``y`` into ``(train, validation)``, class-stratified.

    Each class ``c`` gives :func:`held_out_count` of its samples, drawn without replacement from
    ``rng``, classes taken in increasing label order. Both index tensors are sorted (the kept
    samples stay in their order), int64, on ``y``'s device; together they are ``0..len(y)-1``,
    each index exactly once.

    >>> train, val = holdout_indices(torch.tensor([0, 0, 0, 0, 0, 1, 1]), 0.2, np.random.default_rng(0))
    >>> len(train), len(val), sorted(torch.cat([train, val]).tolist()) == list(range(7))
    (5, 2, True)
    """
    labels = y.detach().cpu().numpy()
    held = []
    for c in np.unique(labels):  # increasing label order
        members = np.flatnonzero(labels == c)
        k = held_out_count(len(members), fraction)
        if k:
            held.append(rng.permutation(members)[:k])
    val = np.sort(np.concatenate(held)) if held else np.zeros(0, dtype=np.int64)
    keep = np.ones(len(labels), dtype=bool)
    keep[val] = False
    as_tensor = lambda a: torch.as_tensor(a.astype(np.int64), device=y.device)  # noqa: E731
    return as_tensor(np.flatnonzero(keep)), as_tensor(val)


def split_stream(stream: Stream, fraction: float, *, seed: int) -> tuple[Stream, Stream]:
    """``(training stream, validation stream)``: each experience's training split cut in two.

    The training stream's experiences keep their test splits and lose the held-out training
    samples; the validation stream has one experience per experience (same index, classes, task
    id, transform), whose test split is the held-out samples and whose training split is empty.

    Args:
        stream: the run's stream.
        fraction: ``F``, 0 < F < 1 (see :func:`held_out_count`).
        seed: the run's seed (the split's generator is seeded with ``[SALT, seed]``).

    Raises:
        ContinualError: for a fraction out of range, or an experience of which nothing can be
            held out (every class with a single training sample).
    """
    fraction = check_fraction(fraction)
    if fraction == 0:
        raise ContinualError("validation=0 holds nothing out; give a fraction 0 < F < 1")
    rng = np.random.default_rng([SALT, int(seed)])
    train, validation = [], []
    for e in stream:
        keep, held = holdout_indices(e.y_train, fraction, rng)
        if len(held) == 0:
            raise ContinualError(f"validation={fraction}: experience {e.index} has {e.num_train} training samples, no class with "
                                 "two or more, so nothing can be held out; run it without validation")
        train.append(dataclasses.replace(e, x_train=e.x_train[keep], y_train=e.y_train[keep], t_train=e.t_train[keep]))
        validation.append(dataclasses.replace(
            e, x_train=e.x_train[:0], y_train=e.y_train[:0], t_train=e.t_train[:0],
            x_test=e.x_train[held], y_test=e.y_train[held], t_test=e.t_train[held]))
    return stream.derive(train), stream.derive(validation)


class ValidationMatrix:
    """The accuracy matrix on a run's validation experiences, filled as the trainer proceeds.

    A read-only trainer callback (:meth:`observe`) records the random-init row where the trainer
    records its own (at the first experience's start, when the task scenario's logit mask is
    set), and :meth:`after_experience`, called from the run's ``on_experience_end``, the row after
    each experience (all ``T`` rows at once for the joint schedule).

    Args:
        validation: the validation stream (:func:`split_stream`; cached features where the run
            trains on them).
        trainer: the run's :class:`~continual.trainer.Trainer`.
        fraction: the held-out fraction (recorded in the result).
        schedule: the strategy's schedule (``"joint"`` fills every row after its one experience).
    """

    def __init__(self, validation: Stream, trainer, *, fraction: float, schedule: str) -> None:
        self.stream = validation
        self.trainer = trainer
        self.fraction = fraction
        self.schedule = schedule
        self.sizes = [e.num_test for e in validation]
        self.matrix = AccuracyMatrix(len(validation), test_sizes=self.sizes)
        self.seconds = 0.0  # evaluating the validation experiences, in this process (the run's timings)

    def observe(self, event: str, info: dict) -> None:
        """Trainer callback: the random-init row, once, at the start of the first experience trained."""
        if event == "experience_start" and self.matrix.random_init is None:
            start = time.perf_counter()
            self.matrix.set_random_init(self.trainer.evaluate(self.stream))  # the model's argmax, as the trainer's
            self.seconds += time.perf_counter() - start

    def after_experience(self, index: int) -> None:
        """The row after experience ``index`` (every row for the joint schedule), with the run's classifier."""
        start = time.perf_counter()
        row = self.trainer.evaluate(self.stream, classifier=self.trainer.classifier)  # ends with a host copy: timed whole
        self.seconds += time.perf_counter() - start
        for i in range(len(self.stream)) if self.schedule == "joint" else (index,):
            self.matrix.set_row(i, row)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """What a checkpoint stores: the matrix so far and its random-init row."""
        init = self.matrix.random_init if self.matrix.random_init is not None else np.full(len(self.stream), np.nan)
        return {"validation_acc_matrix": torch.from_numpy(self.matrix.values.copy()),
                "validation_random_init": torch.from_numpy(np.asarray(init, dtype=float).copy())}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`'s entries from a checkpoint (checked by :func:`checkpoint_problem`)."""
        self.matrix.values[:] = state["validation_acc_matrix"].numpy()
        self.matrix.set_random_init(state["validation_random_init"].numpy())

    def record(self) -> dict[str, object]:
        """The result's ``validation`` entry: ``fraction``, ``sizes`` (validation samples per
        experience) and :func:`continual.results.classifier_record`'s matrix, random-init row,
        metrics (sample-weighted by ``sizes``) and ``by_step`` curves."""
        from .results import classifier_record

        return {"fraction": self.fraction, "sizes": list(self.sizes), **classifier_record(self.matrix, self.sizes)}


def checkpoint_problem(state: dict) -> str | None:
    """What is missing from a checkpoint of a run with validation, or ``None``: the validation
    matrix, of the test matrix's shape and with the same rows filled, and its random-init row."""
    acc, V, init = state.get("acc_matrix"), state.get("validation_acc_matrix"), state.get("validation_random_init")
    if not (isinstance(V, torch.Tensor) and isinstance(acc, torch.Tensor) and V.shape == acc.shape and V.is_floating_point()):
        return "no 'validation_acc_matrix' of the accuracy matrix's shape"
    if not (isinstance(init, torch.Tensor) and init.dim() == 1 and init.shape[0] == V.shape[0]):
        return "no 'validation_random_init' of one entry per experience"
    if not torch.equal(torch.isnan(V).all(1), torch.isnan(acc).all(1)):
        return "a 'validation_acc_matrix' whose filled rows are not the accuracy matrix's"
    return None


def rank_rows(rows: Sequence[dict], by: str = "test") -> list[dict]:
    """:func:`continual.results.summarize` rows, best first by mean final average accuracy on the
    test split (``"test"``) or on the validation split (``"validation"``); ties (and rows without
    a value, last) keep their order.

    >>> rows = [{"strategy": "a", "final_average_accuracy": (0.5, 0.0)}, {"strategy": "b", "final_average_accuracy": (0.7, 0.0)}]
    >>> [r["strategy"] for r in rank_rows(rows)]
    ['b', 'a']

    Raises:
        ContinualError: for ``by`` not in :data:`RANK_BY`, or ``"validation"`` when a row has no
            validation accuracy (naming those rows).
    """
    if by not in RANK_BY:
        raise ContinualError(f"--rank-by {by!r} is not accepted; expected one of {', '.join(RANK_BY)}")
    key = "final_average_accuracy" if by == "test" else "validation_accuracy"
    if by == "validation":
        missing = [f"{r['benchmark']}/{r['scenario']} {r['strategy']}" for r in rows if math.isnan(r.get(key, (math.nan,))[0])]
        if missing:
            raise ContinualError(f"--rank-by validation: no validation accuracy for {', '.join(missing)} (every seed needs a run "
                                 "with --validation F); run them with --validation or rank by test")

    def score(row: dict) -> float:
        m = row.get(key, (math.nan,))[0]
        return -math.inf if math.isnan(m) else m

    return sorted(rows, key=score, reverse=True)


__all__ = ["RANK_BY", "SALT", "ValidationMatrix", "check_fraction", "checkpoint_problem", "held_out_count", "holdout_indices",
           "rank_rows", "split_stream"]
