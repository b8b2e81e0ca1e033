"""van de Ven & Tolias 2019, "Three scenarios for continual learning" (arXiv 1904.07734v1), the split
MNIST table: None, Offline, EWC, Online EWC, SI, LwF (and iCaRL in Class-IL) in the Task-IL and
Class-IL scenarios, average test accuracy over the 5 tasks after the last one, 20 seeds.

    python papers/vandeven2019-three-scenarios/run.py [--check] [--write-readme] [--smoke] [--download]

Every setting and where it comes from. GMvandeVen/continual-learning is the authors' code: @86802a8
(86802a807f178e949cb6f3b0cfea637b4376c9ca, 2019-04-17, two days after v1) for the protocol, @f0b1461
(f0b1461e666fa2842283de288c6b328234a1d5c2, 2019-12-19) ``param_values.py`` for the per-scenario
hyperparameters (the code's own defaults, lambda 5000 and c 0.1, are not the paper's):

- data: MNIST, 5 tasks of 2 classes; the labels are permuted at random per seed
  (@86802a8:data.py, ``np.random.permutation(list(range(10)))`` after ``np.random.seed(seed)`` in
  main.py; seed 0 alone keeps the natural order, the paper's runs use seeds 1..20) ->
  ``class_order="random"`` (a random order per seed, drawn by our own generator: the same
  distribution, not the same 20 orders); pixels by ``ToTensor()`` only (@86802a8:data.py
  ``AVAILABLE_TRANSFORMS['mnist28']``) -> ``normalise=False``;
- model: MLP 784-400-400-10, ReLU, no dropout, no batch norm (@86802a8:_compare.py ``--fc-layers 3``,
  ``--fc-units 400``, ``--fc-nl relu``) -> ``hidden=[400, 400]``;
- output layer: one 10-unit layer; Task-IL trains and tests each task on its own 2 units (the
  "multi-headed" option: ``--singlehead`` off; @86802a8:train.py ``active_classes``), which is our
  task scenario with a fixed head masked to the sample's task (``head="fixed"``, the default: the
  same as one 2-way head per task); Class-IL uses the units of every class seen so far
  (``active_classes = range(2 * task)``) -> ``head="incremental"``, the default;
- optimiser: Adam, lr 1e-3, betas (0.9, 0.999), kept across tasks (``--optimizer adam``, not
  ``adam_reset``; @86802a8:main.py L210-214), batch 128 (``--batch``);
- length: 2000 iterations per task (``--iters``), i.e. 256,000 samples; our trainer counts epochs:
  ``epochs=21`` (a task has about 12,000 training images: 21 x 12,000 / 128 = about 1,970 steps);
- EWC: penalty ``lambda/2 sum F (theta - theta*)^2`` (@86802a8:continual_learner.py ``ewc_loss``,
  ``(1./2)*sum(losses)``) -> ``convention="paper"``; one term per task (offline EWC); Fisher on every
  training sample of the task (``--fisher-n`` None) on the active classes' logits, with the model's
  *predicted* label (``emp_FI`` False: ``label = output.max(1)[1]``) -> ``estimator="empirical"``
  (true labels: see the deviations); lambda 1e7 (Task-IL), 1e8 (Class-IL) (@f0b1461:param_values.py);
- Online EWC: lambda 1e8 / 1e9 and gamma 0.8 / 0.8 (Task-IL / Class-IL, param_values.py). Their
  running Fisher is ``F <- F_new + gamma F`` (as ours) but the penalty uses ``gamma F``
  (``fisher = self.gamma*fisher if self.online``), so their lambda is ours / gamma: ``lam`` =
  0.8e8 and 0.8e9;
- SI: c 50 (Task-IL), 0.5 (Class-IL) (param_values.py), damping epsilon 0.1 (``--epsilon``) ->
  ``xi=0.1``; penalty ``c sum Omega (theta - theta*)^2``, no 1/2, as ours;
- LwF: ``--replay=current --distill``, temperature 2 (``--temp``). Their loss is
  ``(1/t) CE + (1 - 1/t) KD`` with KD the soft cross-entropy averaged over the batch *and the
  logits* and multiplied by T^2 (@86802a8:utils.py ``loss_fn_kd``, encoder.py ``train_a_batch``,
  ``rnt = 1/task``); with Adam only the ratio of the two terms matters. Task-IL: the average over
  past tasks of 2 x KD_sum per task, i.e. exactly ours with ``alpha=2`` (a sum over past tasks);
  Class-IL: ``2(t-1)/t`` x KD_sum (1, 1.33, 1.5, 1.6 at tasks 2..5): ``alpha=1.5``;
- iCaRL (Class-IL): budget 2000, herding, normalised exemplar means, nearest-mean classification,
  sigmoid BCE with BCE distillation (@86802a8:_compare.py iCaRL block) -> ``mem=2000``,
  ``selection="herding"``, ``loss="bce"``;
- Offline (upper bound): at each task the authors train on all tasks so far for 2000 iterations
  (``--replay offline``; 10,000 iterations in all) -> ``joint``: 21 epochs over the 5 tasks at once
  (about 10,000 iterations, every one on all the data);
- seeds: 20 (paper: "mean (± SEM) over 20 repetitions"); the metric is the average test accuracy
  over the 5 tasks after the last (@86802a8:main.py L425, the full test sets).

Domain-IL (the paper's third column) is left out: our split-mnist has the class and task scenarios
only (``continual list``).

Published numbers: only the EWC row (Task-IL 98.64 ± 0.22, Class-IL 20.01 ± 0.06) and iCaRL (94.57 ±
0.11) were read in the text of v1 here (arXiv 1904.07734v1, 15 Apr 2019, quoted in a stored
transcription); the other rows' numbers were not verified and carry ``published=None``. The
spreads are standard errors of the mean over 20 runs; the bands use the standard deviation
(SEM x sqrt(20)): the published mean +- max(2 points, 2 standard deviations), stated before running.
"""

import math
import sys
from pathlib import Path

from continual.papers import Row, default_band, main

FOLDER = Path(__file__).resolve().parent
SEEDS = 20  # v1, Table 4: "mean (± SEM) over 20 repetitions"
RUNS = 20  # the paper's runs behind each SEM
TITLE = "van de Ven & Tolias 2019 (arXiv 1904.07734v1), split MNIST: average accuracy over 5 tasks (%)"
BASE = dict(benchmark="split-mnist", model="mlp", hidden=[400, 400], normalise=False, class_order="random",
            optimizer="adam", lr=1e-3, batch_size=128, epochs=21)
TASK = dict(BASE, scenario="task", head="fixed")  # one 10-unit layer, masked to the sample's task
CLASS = dict(BASE, scenario="class", head="incremental")  # the units of every class seen so far
NOT_VERIFIED = "published number not verified here"


def band_from_sem(published: float, sem: float) -> tuple[float, float]:
    """``default_band`` with the standard deviation of 20 runs, ``SEM * sqrt(20)``."""
    return default_band(published, sem * math.sqrt(RUNS))


def ewc(lam: float) -> dict:
    return {"lam": lam, "estimator": "empirical", "convention": "paper"}


def online_ewc(lam: float, gamma: float) -> dict:
    return {"lam": lam * gamma, "gamma": gamma, "estimator": "empirical", "convention": "paper"}


FISHER_NOTE = "Fisher at the true labels (the authors': at the predicted labels)"

ROWS = [
    # ---- Task-IL
    Row("Task-IL: None", dict(TASK, strategy="finetune"), published=None, note=NOT_VERIFIED),
    Row("Task-IL: Offline", dict(TASK, strategy="joint"), published=None,
        note=f"{NOT_VERIFIED}; joint training, not the authors' task-by-task offline replay"),
    Row("Task-IL: EWC", dict(TASK, strategy="ewc", params=ewc(1e7)),
        published=98.64, spread=0.22, spread_kind="se", band=band_from_sem(98.64, 0.22),
        note=f"lambda from the code of Dec 2019 (param_values.py); {FISHER_NOTE}"),
    Row("Task-IL: Online EWC", dict(TASK, strategy="online-ewc", params=online_ewc(1e8, 0.8)), published=None,
        note=f"{NOT_VERIFIED}; {FISHER_NOTE}"),
    Row("Task-IL: SI", dict(TASK, strategy="si", params={"c": 50.0, "xi": 0.1}), published=None, note=NOT_VERIFIED),
    Row("Task-IL: LwF", dict(TASK, strategy="lwf", params={"alpha": 2.0, "temperature": 2.0}), published=None,
        note=NOT_VERIFIED),
    # ---- Class-IL
    Row("Class-IL: None", dict(CLASS, strategy="finetune"), published=None, note=NOT_VERIFIED),
    Row("Class-IL: Offline", dict(CLASS, strategy="joint"), published=None,
        note=f"{NOT_VERIFIED}; joint training, not the authors' task-by-task offline replay"),
    Row("Class-IL: EWC", dict(CLASS, strategy="ewc", params=ewc(1e8)),
        published=20.01, spread=0.06, spread_kind="se", band=band_from_sem(20.01, 0.06),
        note=f"lambda from the code of Dec 2019 (param_values.py); {FISHER_NOTE}"),
    Row("Class-IL: Online EWC", dict(CLASS, strategy="online-ewc", params=online_ewc(1e9, 0.8)), published=None,
        note=f"{NOT_VERIFIED}; {FISHER_NOTE}"),
    Row("Class-IL: SI", dict(CLASS, strategy="si", params={"c": 0.5, "xi": 0.1}), published=None, note=NOT_VERIFIED),
    Row("Class-IL: LwF", dict(CLASS, strategy="lwf", params={"alpha": 1.5, "temperature": 2.0}), published=None,
        note=f"{NOT_VERIFIED}; distils over the old classes' logits only (the authors': over all active ones)"),
    Row("Class-IL: iCaRL", dict(CLASS, strategy="icarl", params={"mem": 2000, "selection": "herding", "loss": "bce"}),
        published=94.57, spread=0.11, spread_kind="se", band=band_from_sem(94.57, 0.11),
        note="v1's code did not yet train on the exemplars (fixed in @d326f96, 10 days later); ours does; "
             "BCE distillation targets without temperature"),
]

if __name__ == "__main__":
    sys.exit(main(ROWS, title=TITLE, folder=FOLDER, seeds=SEEDS))
