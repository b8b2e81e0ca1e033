"""Zhou, Wang, Qi, Ye, Zhan & Liu, TPAMI 2024, "Class-Incremental Learning: A Survey" (arXiv 2302.03648),
Table 2, CIFAR-100 B0 Inc10: Finetune, Replay, iCaRL, BiC, WA and DER on ResNet-32 with 2000
exemplars, last accuracy (A_B) and average incremental accuracy (A-bar), one run.

    python papers/zhou2024-cil-survey/run.py --download --device cuda [--check] [--write-readme]
    python papers/zhou2024-cil-survey/run.py --smoke

The survey's numbers come from PyCIL (the authors' toolbox). Every setting and where it comes from
(G-U-N/PyCIL@87cc411 below; zhoudw-zdw/CIL_Survey@197fa86, the survey's own code, has the same
``exps/<method>.json`` and the same constants in ``models/<method>.py`` for these six methods):

- data: CIFAR-100, B0 Inc10: 10 experiences of 10 classes (``exps/*.json``: ``init_cls 10``,
  ``increment 10``), classes shuffled by ``np.random.seed(1993); np.random.permutation(100)``
  (``shuffle: true``, ``seed: [1993]``; ``utils/data_manager.py::_setup_data``) ->
  ``class_order="icarl"`` (the same permutation); class-incremental, one growing head;
- augmentation: ``RandomCrop(32, padding=4)``, ``RandomHorizontalFlip()`` (``utils/data.py::iCIFAR100``;
  the library's CIFAR loader does both); normalised by CIFAR-100's mean and std;
- model: ResNet-32 (``exps/*.json``: ``convnet_type resnet32``; ``convs/cifar_resnet.py``) -> ``model="resnet32"``;
- optimiser: SGD, momentum 0.9, lr 0.1, ``MultiStepLR`` with decay 0.1, batch 128 (every
  ``models/<method>.py``: ``optim.SGD(..., momentum=0.9)``, ``lrate``, ``lrate_decay``, ``batch_size``);
- memory: 2000 exemplars in total shared among the classes seen (``memory_size 2000``,
  ``fixed_memory false``), chosen by herding (``models/base.py::build_rehearsal_memory``) ->
  ``buffer="class-balanced"``, ``selection="herding"``, ``mem=2000`` (``icarl`` and ``der`` keep
  such a memory themselves);
- Finetune (``models/finetune.py``): 80 epochs, milestones 40/70, weight decay 2e-4, no memory;
- Replay (``models/replay.py``): 70 epochs, milestones 30/50, weight decay 2e-4, cross-entropy on
  new data and exemplars;
- iCaRL (``models/icarl.py``): 170 epochs, milestones 80/120, weight decay 2e-4; cross-entropy plus
  distillation of the old logits at T=2 (``loss_clf + loss_kd``) -> ``icarl`` with ``loss="softmax-kd"``;
- BiC (``models/bic.py``): 170 epochs, milestones 60/100/140, weight decay 2e-4, the same schedule in
  every experience (no ``init_*`` constants); distillation at T=2 (``distill_loss * lamda +
  clf_loss * (1 - lamda)``); stage 2 on a validation set (``split_ratio 0.1``) with SGD lr 0.1,
  170 epochs -> ``replay+bic+lwf`` (``bic``'s defaults are PyCIL's stage 2; ``val_per_class=20``
  is ``int(0.1 * 2000 / 10)`` at the second experience);
- WA (``models/wa.py``): 170 epochs, milestones 60/100/140, weight decay 2e-4; distillation at T=2
  (``(1 - kd_lambda) * loss_clf + kd_lambda * loss_kd``), weight aligning after each experience,
  no clipping -> ``replay+wa+lwf``;
- DER (``models/der.py``): 170 epochs, milestones 80/120/150, weight decay 2e-4; one extractor per
  experience, auxiliary head with weight 1, weight aligning, no pruning -> ``der`` (its defaults
  are PyCIL's);
- metrics: PyCIL's "CNN" top-1 curve (``trainer.py``: accuracy over all classes seen, after each
  experience): A_B is its last point -> ``last_accuracy``; A-bar its mean ->
  ``average_incremental_accuracy`` (with 100 test images per class, the sample-weighted mean is
  the plain one). Every row is evaluated with the linear head (``classifier="linear"``), PyCIL's
  logged "CNN" accuracy, iCaRL's too (its paper's classifier, NME, is the library's default for
  ``icarl``; the survey does not say which of PyCIL's two iCaRL curves Table 2 reports);
- seeds: 1. The class order's seed is 1993 (``class_order="icarl"``); PyCIL fixes
  ``torch.manual_seed(1)`` for the run (``trainer.py::_set_random``); ours is the run's seed 0.

Deviations (also in the README):

- First experience. PyCIL trains the first experience with its own schedule (``init_epoch 200``,
  ``init_lr 0.1``, ``init_milestones [60, 120, 170]``, ``init_weight_decay 5e-4``) for every method
  but BiC; the library's trainer has one schedule for all experiences, so each row's first
  experience uses the row's later schedule. The survey goes further: every method starts from one
  shared first-stage checkpoint (section 4.1.3, "to make the methods share the same starting
  point"; CIL_Survey's ``--skip`` loads it, e.g. ``models/icarl.py`` L69), which is not available
  here; each row trains its own first experience.
- Epochs. The paper's prose (section 4.1.3) says 170 epochs, milestones 80 and 120, for all
  methods; PyCIL's (and CIL_Survey's) per-method constants differ (80 for Finetune, 70 for Replay,
  170 with other milestones for BiC, WA and DER). The code is followed: it is what was run to make
  the table, and the paper's single schedule matches only iCaRL's constants.
- Replay joins each batch of 128 new samples with a replay batch of 128 exemplars (ER); PyCIL
  appends the exemplars to the experience's data and draws batches of 128 from the union.
- Distillation weight. PyCIL's BiC and WA weigh ``(1 - l) * CE + l * KD`` with
  ``l = known / total`` (0.5 at the second experience, 0.9 at the last); the library's LwF adds
  ``alpha * KD`` with a fixed alpha, here 1 (PyCIL's ratio at the second experience, and iCaRL's).
- BiC's validation set: 20 samples per class held out of each class's training data once, when
  new (PyCIL: ``int(0.1 * 2000 / known)`` per class drawn again each experience, from the
  exemplars for old classes); see ``continual/classifiers/bic.py``.
- Augmentation: no ``ColorJitter(brightness=63/255)``; the normalisation's mean and std differ in
  the fourth decimal (0.4865/0.4409 vs 0.4867/0.4408).

Bands: the published number +- max(2 points, 2 x spread); the table has one run and no spread,
so +- 2 points, stated before running.
"""

import sys
from pathlib import Path

from continual.papers import Row, default_band, main

FOLDER = Path(__file__).resolve().parent
SEEDS = 1  # one run (exps/*.json: "seed": [1993], the class order's seed; the table has no +-)
TITLE = "Zhou et al. (TPAMI 2024) CIL survey, Table 2, CIFAR-100 B0 Inc10, ResNet-32, 2000 exemplars (%)"
BASE = dict(benchmark="split-cifar100", scenario="class", split="B0-Inc10", class_order="icarl", model="resnet32",
            classifier="linear", optimizer="sgd", momentum=0.9, lr=0.1, batch_size=128, lr_schedule="step", lr_decay=0.1)
MEMORY = {"buffer": "class-balanced", "selection": "herding", "mem": 2000}
OWN = "own first experience (the survey's is a shared checkpoint)"
FIRST = "first experience on the later schedule (PyCIL's: 200 epochs, wd 5e-4); " + OWN
KD = "KD weight 1 (PyCIL's: known/total)"

# (name, config, published A-bar, published A_B, note): Table 2, "B0 Inc10" columns
METHODS = [
    ("Finetune", dict(BASE, strategy="finetune", epochs=80, milestones=[40, 70], weight_decay=2e-4), 26.25, 9.09, FIRST),
    ("Replay", dict(BASE, strategy="replay", epochs=70, milestones=[30, 50], weight_decay=2e-4, params=dict(MEMORY)),
     59.31, 41.01, FIRST + "; ER batches (128 new + 128 exemplars)"),
    ("iCaRL", dict(BASE, strategy="icarl", epochs=170, milestones=[80, 120], weight_decay=2e-4,
                   params={"mem": 2000, "selection": "herding", "loss": "softmax-kd", "temperature": 2.0}),
     64.42, 49.52, FIRST + "; linear head"),
    ("BiC", dict(BASE, strategy="replay+bic+lwf", epochs=170, milestones=[60, 100, 140], weight_decay=2e-4,
                 params={**MEMORY, "val_per_class": 20, "alpha": 1.0, "temperature": 2.0}),
     65.08, 50.79, OWN + "; " + KD + "; validation held out once"),
    ("WA", dict(BASE, strategy="replay+wa+lwf", epochs=170, milestones=[60, 100, 140], weight_decay=2e-4,
                params={**MEMORY, "wa_clip": False, "alpha": 1.0, "temperature": 2.0}),
     67.09, 52.30, FIRST + "; " + KD),
    ("DER", dict(BASE, strategy="der", epochs=170, milestones=[80, 120, 150], weight_decay=2e-4,
                 params={"mem": 2000, "aux_weight": 1.0, "weight_align": True}),
     69.74, 58.59, FIRST),
]

ROWS = []
for name, config, avg_inc, last, note in METHODS:
    ROWS.append(Row(f"{name} (last)", config, published=last, band=default_band(last, None), metric="last_accuracy", note=note))
    ROWS.append(Row(f"{name} (avg inc)", config, published=avg_inc, band=default_band(avg_inc, None),
                    metric="average_incremental_accuracy", note=note))

if __name__ == "__main__":
    sys.exit(main(ROWS, title=TITLE, folder=FOLDER, seeds=SEEDS))
