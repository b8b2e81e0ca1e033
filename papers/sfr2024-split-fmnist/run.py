"""Scannell, Mereu et al., ICLR 2024, "Function-space Parameterization of Neural Networks for Sequential
Learning" (SFR), Table 3, column "S-FMNIST (SH) 200 pts./task": Online-EWC, SI and DER on Split
Fashion-MNIST, single head (class-incremental), final accuracy, 5 seeds.

    python papers/sfr2024-split-fmnist/run.py [--check] [--write-readme] [--smoke]

Every setting and where it comes from (AaltoML/sfr-experiments@83cc4a7 is the authors' code; its
experiments/cl/README.md section "S-FMNIST 200pts./task" gives the exact command of each row):

- data: Fashion-MNIST, 5 experiences of 2 classes (0/1, 2/3, ...), natural order; pixels by
  ``ToTensor()`` only, no normalisation (experiments/cl/datasets/seq_fmnist.py) -> ``normalise=False``;
- model: MLP 784-256-256-10 with ReLU, one 10-way head from the start (seq_fmnist.py get_backbone,
  backbone/MNISTMLP.py; paper Appendix D.2: "a two-layer MLP with 256 hidden units") -> ``hidden=[256, 256]``,
  ``head="fixed"``;
- optimiser: SGD without momentum (Mammoth's default; README ``--optimizer=sgd``), batch 10;
- Online-EWC: lr 0.03, 1 epoch, e_lambda 90, gamma 1.0 (README). Mammoth's penalty is
  ``e_lambda * sum F (theta - theta*)^2`` without 1/2 -> ``convention="avalanche"``, ``lam=90``;
- SI: lr 0.1, 1 epoch, c 1.0, xi 0.9 (README);
- DER: lr 0.03, 5 epochs, alpha 0.3, reservoir of 1000, replay batch 10 (README; the paper's appendix
  says alpha 0.2 and a buffer of 200, but also "T x M" = 5 x 200 = 1000 points: the README's values
  are taken) -> ``der++`` with ``beta=0`` (DER++ without its label term is DER);
- seeds: 5 ("repeating the runs five times with different seeds", Appendix D.2); the metric is the
  final average accuracy over the 5 experiences' test sets.

Bands: the published mean +- max(2 points, 2 published standard deviations), stated before running.
"""

import sys
from pathlib import Path

from continual.papers import Row, default_band, main

FOLDER = Path(__file__).resolve().parent
SEEDS = 5  # Appendix D.2: "repeating the runs five times with different seeds"
TITLE = "SFR (ICLR 2024) Table 3, S-FMNIST (SH) 200 pts./task: final accuracy (%)"
BASE = dict(benchmark="split-fmnist", scenario="class", model="mlp", hidden=[256, 256], head="fixed", normalise=False,
            optimizer="sgd", batch_size=10)

ROWS = [
    Row("Online-EWC", dict(BASE, strategy="online-ewc", lr=0.03, epochs=1,
                           params={"lam": 90.0, "gamma": 1.0, "convention": "avalanche", "estimator": "empirical"}),
        published=19.48, spread=0.01, band=default_band(19.48, 0.01),
        note="Mammoth weights each sample's squared gradient by its probability of the true label; ours is the plain empirical Fisher"),
    Row("SI", dict(BASE, strategy="si", lr=0.1, epochs=1, params={"c": 1.0, "xi": 0.9}),
        published=19.80, spread=0.21, band=default_band(19.80, 0.21)),
    Row("DER", dict(BASE, strategy="der++", lr=0.03, epochs=5, params={"mem": 1000, "alpha": 0.3, "beta": 0.0, "replay_batch": 10}),
        published=82.03, spread=0.57, band=default_band(82.03, 0.57)),
]

if __name__ == "__main__":
    sys.exit(main(ROWS, title=TITLE, folder=FOLDER, seeds=SEEDS))
