"""Online (task-free) continual learning: blurry-boundary streams and the run's anytime log.

An online run (``Trainer(online=True)``, ``continual run --online``) passes once over the stream
in its stored order (a run draws that order with its seed, :func:`shuffled`, or takes the blurry
protocol's), in small batches (10 by default), with ``train_passes`` updates per incoming
batch, and evaluates every ``eval_every`` samples on the classes seen so far. The methods are not
told where one experience ends and the next begins (unless ``boundaries=True``); the evaluator
is, so the accuracy matrix at the end of each experience is still recorded. This module builds
the blurry streams of the online literature and reads the anytime log the trainer writes.

References:
    - i-Blurry-N-M: H. Koh, D. Kim, J.-W. Ha, J. Choi, "Online Continual Learning on Class
      Incremental Blurry Task Configuration with Anytime Inference", ICLR 2022 (N% of the
      classes are disjoint: each appears in one experience only; the others are blurry: M% of
      their samples appear in other experiences). Code: ``naver-ai/i-Blurry`` (the streams are
      shipped as ``collections/<dataset>/<dataset>_split<T>_n<N>_m<M>_rand<seed>_task<i>.json``;
      ``main.py`` evaluates every ``eval_period`` samples and reports A_auc, the mean of those
      accuracies).
    - Si-Blurry: J.-Y. Moon, K.-H. Park, J. U. Kim, G.-M. Park, "Online Class Incremental Learning
      on Stochastic Blurry Task Boundary via Mask and Visual Prompt Tuning", ICCV 2023. Code:
      ``KHU-AGI/Si-Blurry:utils/online_sampler.py`` (``OnlineSampler``, ``varing_NM=True``):
      the disjoint and the blurry classes are cut into experiences at random points (random
      class counts per experience), and the blurry samples moved are cut at random points too
      (a random blurry ratio per experience).

Our construction, and where it differs from the reference code (``KHU-AGI/Si-Blurry:
utils/online_sampler.py``, whose fixed-N-M branch is the i-Blurry sampler):
    - The classes are permuted with ``seed``; the first ``floor(C * N / 100)`` are disjoint, the
      rest blurry. Each group is shared out over the T experiences as evenly as possible,
      earlier experiences taking the remainder (the reference rounds both groups down to a
      multiple of T and leaves the classes over out of the stream; we keep every class).
    - i-Blurry: ``floor(n_c * M / 100)`` samples of every blurry class ``c`` (``n_c`` its
      training samples), chosen at random, leave the class's home experience, each for one of
      the other experiences drawn uniformly (the reference pools the first M% of each home
      experience's blurry samples and deals them out again evenly over all experiences, its own
      included, leaving out the remainder of the division). Every training sample appears exactly
      once in the stream.
    - Si-Blurry: ``floor(B * M / 100)`` samples in all (``B`` the blurry classes' training
      samples) are cut at ``T - 1`` sorted uniform points into one quota per home experience
      (capped at what it holds); each experience gives its quota of randomly chosen blurry
      samples to the other experiences, as above. Draws that leave an experience without
      training samples are drawn again.
    - Each experience's training samples are shuffled (both codes shuffle each experience's
      indices). Labels are renumbered by first appearance in the stream, as i-Blurry's
      ``exposed_classes`` list does, so a class-incremental head grown to the largest label seen
      holds exactly the classes seen. ``Experience.classes`` lists the classes present in the
      experience's training data; its test split holds the test samples of its home classes
      (the classes whose majority it holds), so the test splits partition the test set.

The anytime log (:func:`empty_log`) is a dict of lists, one entry per evaluation point:
``samples`` (training samples seen), ``experience`` (the experience being trained),
``seen_acc`` (accuracy on the test samples of the classes seen so far; in the domain scenario,
where every class comes at once, on the experiences reached), ``stream_acc``
(accuracy on the test splits of the experiences reached so far), ``per_experience`` (the
accuracy on each experience's test split), ``num_seen`` (classes seen); and ``boundaries``, the
samples seen at the end of each experience. :mod:`continual.metrics` computes A_AUC, AAA and
WC-Acc from it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import torch

from .data import Dataset
from .errors import ContinualError
from .streams import Experience, Stream, split

PROTOCOLS = ("i-blurry-N-M", "si-blurry", "si-blurry-N-M")
"""The blurry protocols :func:`make_blurry` accepts (N, M: percentages, e.g. ``i-blurry-50-10``)."""
SI_BLURRY_DEFAULT = (50, 10)  # Si-Blurry's N and M when not given (KHU-AGI/Si-Blurry scripts: --n 50 --m 10)
DEFAULT_BATCH_SIZE = 10  # the online literature's stream batch (i-Blurry, ER-ACE's AML main.py: 10)
LOG_KEYS = ("samples", "experience", "seen_acc", "stream_acc", "per_experience", "num_seen")

_PROTOCOL = re.compile(r"^(i-blurry|si-blurry)(?:-(\d+)-(\d+))?$")


def parse_protocol(text: str) -> tuple[str, int, int]:
    """``"i-blurry-50-10"`` -> ``("i-blurry", 50, 10)``; ``"si-blurry"`` takes N=50, M=10.

    Raises:
        ContinualError: for a name that is not one of :data:`PROTOCOLS` or a percentage out of 0..100.

    >>> parse_protocol("i-blurry-50-10"), parse_protocol("si-blurry")
    (('i-blurry', 50, 10), ('si-blurry', 50, 10))
    """
    m = _PROTOCOL.match(str(text).strip().lower())
    if m is None or (m.group(1) == "i-blurry" and m.group(2) is None):
        raise ContinualError(f"blurry={text!r} is not accepted; expected one of {', '.join(PROTOCOLS)} "
                             "(N% disjoint classes, M% blurry samples), e.g. i-blurry-50-10")
    n, mm = (int(m.group(2)), int(m.group(3))) if m.group(2) is not None else SI_BLURRY_DEFAULT
    if not (0 <= n <= 100 and 0 <= mm <= 100):
        raise ContinualError(f"blurry={text!r}: N={n} and M={mm} must be percentages in 0..100")
    return m.group(1), n, mm


def _as_stream(source: Stream | Dataset, num_experiences: int | None) -> Stream:
    if isinstance(source, Dataset):
        if num_experiences is None:
            raise ContinualError("a blurry stream from a dataset needs num_experiences")
        return split(source, num_experiences)
    if not isinstance(source, Stream):
        raise ContinualError(f"a blurry stream is built from a Stream or a Dataset; got {type(source).__name__}")
    if source.scenario != "class":
        raise ContinualError(f"blurry streams are class-incremental; stream {source.name!r} is {source.scenario!r}")
    if num_experiences is not None and num_experiences != len(source):
        raise ContinualError(f"num_experiences={num_experiences} does not match the stream's {len(source)} experiences; leave it out")
    if len(source) == 0:
        raise ContinualError(f"stream {source.name!r} is empty")
    return source


def _deal(num: int, parts: int) -> list[int]:
    """``num`` items shared out over ``parts``, earlier parts taking the remainder."""
    return [num // parts + (1 if i < num % parts else 0) for i in range(parts)]


def _cuts(num: int, parts: int, g: torch.Generator) -> list[int]:
    """``num`` items cut at ``parts - 1`` sorted uniform points in ``0..num`` (Si-Blurry's slices)."""
    points = sorted(torch.randint(0, num + 1, (parts - 1,), generator=g).tolist()) if parts > 1 else []
    edges = [0, *points, num]
    return [edges[i + 1] - edges[i] for i in range(parts)]


def _build(stream: Stream, *, protocol: str, disjoint: int, blurry: int, seed: int) -> Stream:
    T = len(stream)
    x_tr = torch.cat([e.x_train for e in stream])
    y_tr = torch.cat([e.y_train for e in stream])
    x_te = torch.cat([e.x_test for e in stream])
    y_te = torch.cat([e.y_test for e in stream])
    device = x_tr.device
    y_host = y_tr.cpu()
    classes = sorted({c for e in stream for c in e.classes})
    C = len(classes)
    if blurry > 0 and disjoint < 100 and T < 2:
        raise ContinualError(f"{protocol} with M={blurry} needs at least 2 experiences to move blurry samples to; got {T}")
    g = torch.Generator().manual_seed(seed)
    for _ in range(1000):
        perm = [classes[i] for i in torch.randperm(C, generator=g).tolist()]
        num_disjoint = C * disjoint // 100
        dis, blu = perm[:num_disjoint], perm[num_disjoint:]
        sizes_d = _deal(len(dis), T) if protocol == "i-blurry" else _cuts(len(dis), T, g)
        sizes_b = _deal(len(blu), T) if protocol == "i-blurry" else _cuts(len(blu), T, g)
        home: dict[int, int] = {}
        for group, sizes in ((dis, sizes_d), (blu, sizes_b)):
            start = 0
            for i, k in enumerate(sizes):
                home.update({c: i for c in group[start : start + k]})
                start += k
        # which samples leave their home experience
        by_class = {c: (y_host == c).nonzero().flatten() for c in classes}
        moved: list[torch.Tensor] = []
        if protocol == "i-blurry":
            for c in blu:
                idx = by_class[c]
                moved.append(idx[torch.randperm(len(idx), generator=g)[: len(idx) * blurry // 100]])
        else:
            pools = [torch.cat([by_class[c] for c in blu if home[c] == i] or [torch.zeros(0, dtype=torch.long)]) for i in range(T)]
            total = sum(len(p) for p in pools) * blurry // 100
            for i, quota in enumerate(_cuts(total, T, g)):
                pool = pools[i]
                moved.append(pool[torch.randperm(len(pool), generator=g)[: min(quota, len(pool))]])
        moved_idx = torch.cat(moved) if moved else torch.zeros(0, dtype=torch.long)
        home_of_sample = torch.tensor([home.get(c, 0) for c in range(max(classes) + 1)], dtype=torch.long)
        dest = home_of_sample[y_host].clone() if len(y_host) else torch.zeros(0, dtype=torch.long)
        if len(moved_idx):
            # a destination among the other T - 1 experiences, uniform: draw 0..T-2, skip the home
            draw = torch.randint(0, T - 1, (len(moved_idx),), generator=g)
            h = dest[moved_idx]
            dest[moved_idx] = draw + (draw >= h).long()
        counts = torch.bincount(dest, minlength=T)
        if bool((counts > 0).all()) and len(set(home.values())) == T:  # samples to train on, classes to test on
            break
    else:
        raise ContinualError(f"{protocol}-{disjoint}-{blurry}: could not draw a stream in which each of the {T} "
                             f"experiences has training samples and a home class ({C} classes); use fewer experiences")
    orders = [(dest == i).nonzero().flatten() for i in range(T)]
    orders = [o[torch.randperm(len(o), generator=g)] for o in orders]
    full = torch.cat(orders)
    # labels renumbered by first appearance in the stream (i-Blurry's exposed_classes)
    first_seen: list[int] = list(dict.fromkeys(y_host[full].tolist()))
    relabel = torch.full((max(classes) + 1,), -1, dtype=torch.long)
    relabel[torch.tensor(first_seen, dtype=torch.long)] = torch.arange(len(first_seen))
    y_te_host = y_te.cpu()
    experiences = []
    for i, order in enumerate(orders):
        yi = relabel[y_host[order]]
        homes = torch.tensor(sorted(c for c in classes if home[c] == i), dtype=torch.long)
        te = torch.isin(y_te_host, homes).nonzero().flatten()
        experiences.append(Experience(
            index=i, classes=tuple(sorted(set(yi.tolist()))), task_id=0,
            x_train=x_tr[order.to(device)], y_train=yi.to(device),
            t_train=torch.zeros(len(order), dtype=torch.long, device=device),
            x_test=x_te[te.to(device)], y_test=relabel[y_te_host[te]].to(device),
            t_test=torch.zeros(len(te), dtype=torch.long, device=device),
            transform=stream[0].transform, scenario="class",
        ))
    original = [stream.class_order[c] for c in first_seen]
    return stream.derive(experiences, name=f"{stream.name}-{protocol}-{disjoint}-{blurry}", scenario="class",
                         num_classes=len(first_seen), class_order=original)


def blurry(source: Stream | Dataset, *, disjoint: int, blurry: int, num_experiences: int | None = None, seed: int = 0) -> Stream:
    """An i-Blurry-N-M stream (Koh et al., ICLR 2022): ``disjoint`` % of the classes in one
    experience each, ``blurry`` % of every other class's samples moved out of its home experience.

    Args:
        source: a class-incremental stream (its experiences' data are pooled and cut again) or a
            dataset (cut into ``num_experiences`` first).
        disjoint: N, the percentage of disjoint classes.
        blurry: M, the percentage of each blurry class's training samples moved.
        num_experiences: T (a dataset needs it; a stream gives it).
        seed: seeds the class split, the samples moved and their destinations, the orders.

    Returns:
        A class-incremental stream (see the module docstring for its labels and test splits).

    Example:
        >>> from continual import split, synthetic
        >>> s = blurry(split(synthetic(num_features=4), 5), disjoint=50, blurry=10, seed=0)
        >>> len(s), sum(e.num_train for e in s) == sum(e.num_train for e in split(synthetic(num_features=4), 5))
        (5, True)
    """
    parse_protocol(f"i-blurry-{disjoint}-{blurry}")
    return _build(_as_stream(source, num_experiences), protocol="i-blurry", disjoint=int(disjoint), blurry=int(blurry), seed=seed)


def si_blurry(source: Stream | Dataset, *, disjoint: int = SI_BLURRY_DEFAULT[0], blurry: int = SI_BLURRY_DEFAULT[1],
              num_experiences: int | None = None, seed: int = 0) -> Stream:
    """A Si-Blurry stream (Moon et al., ICCV 2023): as :func:`blurry`, with random class counts per
    experience and a random share of the moved samples per experience (see the module docstring).

    Args: as :func:`blurry`; ``blurry`` is M over all blurry samples together.
    """
    parse_protocol(f"si-blurry-{disjoint}-{blurry}")
    return _build(_as_stream(source, num_experiences), protocol="si-blurry", disjoint=int(disjoint), blurry=int(blurry), seed=seed)


def shuffled(stream: Stream, *, seed: int = 0) -> Stream:
    """The stream with each experience's training samples in one seeded random order: the order
    an online run passes through them once (a stream's stored order may be sorted by class).

    >>> from continual import split, synthetic
    >>> s = split(synthetic(num_features=4), 2)
    >>> t = shuffled(s, seed=0)
    >>> sorted(t[0].y_train.tolist()) == sorted(s[0].y_train.tolist()), t[0].y_train.tolist() != s[0].y_train.tolist()
    (True, True)
    """
    from dataclasses import replace

    g = torch.Generator().manual_seed(seed)
    experiences = []
    for e in stream:
        order = torch.randperm(e.num_train, generator=g).to(e.device)
        experiences.append(replace(e, x_train=e.x_train[order], y_train=e.y_train[order], t_train=e.t_train[order]))
    return stream.derive(experiences)


def make_blurry(stream: Stream, protocol: str, *, seed: int = 0) -> Stream:
    """The stream cut again by a protocol name (``"i-blurry-50-10"``, ``"si-blurry"``; :func:`parse_protocol`)."""
    kind, n, m = parse_protocol(protocol)
    return (blurry if kind == "i-blurry" else si_blurry)(stream, disjoint=n, blurry=m, seed=seed)


# ------------------------------------------------------------------ the anytime log
def empty_log(num_experiences: int) -> dict:
    """A new anytime log for a stream of ``num_experiences`` (see the module docstring)."""
    return {"num_experiences": int(num_experiences), "boundaries": [], **{k: [] for k in LOG_KEYS}}


def check_log(log: object) -> dict:
    """``log`` if it is a well-formed anytime log, else a one-line :class:`ContinualError`."""
    if not isinstance(log, dict) or any(k not in log for k in (*LOG_KEYS, "boundaries")):
        raise ContinualError(f"not an anytime log: expected a dict with {', '.join((*LOG_KEYS, 'boundaries'))}")
    n = len(log["samples"])
    if any(len(log[k]) != n for k in LOG_KEYS):
        raise ContinualError(f"anytime log: every entry needs one value per evaluation point ({n})")
    if n == 0:
        raise ContinualError("anytime log: no evaluation point")
    if any(b < a for a, b in zip(log["samples"], log["samples"][1:])):
        raise ContinualError("anytime log: 'samples' must not decrease")
    return log


def log_point(log: dict, *, samples: int, experience: int, seen_acc: float, stream_acc: float,
              per_experience: Sequence[float], num_seen: int) -> None:
    """Append one evaluation point to ``log``."""
    log["samples"].append(int(samples))
    log["experience"].append(int(experience))
    log["seen_acc"].append(float(seen_acc))
    log["stream_acc"].append(float(stream_acc))
    log["per_experience"].append([float(a) for a in per_experience])
    log["num_seen"].append(int(num_seen))


def arrivals(y: torch.Tensor, seen: set[int], batch_size: int) -> dict[int, list[int]]:
    """Classes first seen in each batch of ``y`` taken in order: ``{batch start: [classes]}``
    (only batches that bring a class not in ``seen``). One host transfer of ``y``.

    >>> arrivals(torch.tensor([0, 0, 1, 0, 2, 1]), {0}, 2)
    {2: [1], 4: [2]}
    """
    labels = np.asarray(y.cpu())
    found: dict[int, list[int]] = {}
    if len(labels) == 0:
        return found
    classes, first = np.unique(labels, return_index=True)
    for c, i in sorted(zip(classes.tolist(), first.tolist()), key=lambda p: p[1]):
        if c not in seen:
            found.setdefault(int(i) // batch_size * batch_size, []).append(int(c))
    return found
