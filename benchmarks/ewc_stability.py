"""Which EWC strength keeps plain SGD stable: the measurement behind the default ``lam``.

For each bundled benchmark, strategy (EWC with every Fisher estimator, online EWC, and EWC
combined with MAS, SI and replay), epochs per experience and ``lam``, it runs seeds with the
benchmark's defaults (MLP, SGD lr 0.05, batch 32) and prints how many diverged (the loss became
NaN or inf), the final average accuracy of the others, and the largest ``lr * lam * max F`` (the
penalty's largest curvature times the learning rate; SGD on a quadratic diverges above 2) over
the consolidations a later experience trains against.

    OMP_NUM_THREADS=1 python benchmarks/ewc_stability.py --lams 50,100
    OMP_NUM_THREADS=1 python benchmarks/ewc_stability.py --benchmarks split-digits --lams 150,200,300,500 --epochs 1

Figures (2026-12-02, AMD EPYC, 2 cores shared with other jobs, torch 2.14.1+cpu, 1 thread;
seeds 0-2). A cell reads "lam: diverged seeds / peak lr*lam*F"; "chance" marks seeds that ended
near 10% (the model destroyed without a NaN). The first two commands above gave:

split-digits (class-incremental), 1 epoch per experience:

=========================  =========  =========  ======================  ==========================  ============
strategy (estimator)       50         100        150                     200                         300 / 500
=========================  =========  =========  ======================  ==========================  ============
ewc (empirical)            0 / 0.40   0 / 0.80   0 / 1.2                 0 / 1.6                     0 / 2.4; 3
ewc (exact)                0 / 0.76   0 / 1.5    0 / 2.3                 1, others at chance         chance; 3
ewc (sampled)              0 / 0.81   0 / 1.6    0 / 2.4                 0, all at chance            1; 3
ewc (batched)              0 / 0.04   0 / 0.08   0 / 0.13                0 / 0.17                    0 / 0.26; 0
online-ewc (empirical)     0 / 0.40   0 / 0.80   0 / 1.2                 0 / 1.6                     0 / 2.4; 3
ewc+mas (empirical)        0 / 0.40   0 / 0.80   0 / 1.2                 0 / 1.6                     0 / 2.4; 3
ewc+si (empirical)         0 / 0.40   0 / 0.80   0 / 1.2                 0 / 1.6                     chance; 3
ewc+replay (empirical)     0 / 0.62   0 / 1.3    0 / 1.9                 0 / 2.5                     2; 3
ewc+replay (exact)         0 / 1.1    0 / 2.2    0, 2 of 3 at chance     0, all at chance            chance; 2
=========================  =========  =========  ======================  ==========================  ============

With 10 epochs per experience every split-digits cell above is stable at 50 and 100 (peak
lr*lam*F 0.79 at most; the former default, 500, was stable there with the empirical Fisher: the demo).

permuted-digits and rotated-digits (domain-incremental), lam 50 and 100:

=========================  ========================================  ==============================================
strategy (estimator)       50 (1 epoch; 10 epochs)                   100 (1 epoch; 10 epochs)
=========================  ========================================  ==============================================
ewc (empirical)            0 / 1.5, 0 / 1.3; 0 / 0.35                0 / 2.4 (permuted: one seed 0.58 against 0.71); 0
ewc (exact)                0 / 1.9, 0 / 1.6; 0 / 0.88                permuted: 1; rotated: one seed at 0.25; 0
ewc (sampled)              0 / 1.8, 0 / 1.6; 0 / 0.90                rotated: one seed at chance, 1 and 10 epochs
ewc (batched)              0 / 0.07; 0 / 0.02                        0
online-ewc (empirical)     0 / 1.5, 0 / 1.3; 0 / 0.37                permuted: one seed at 0.45 (lr*lam*F 3.7)
ewc+mas (empirical)        0 / 1.4, 0 / 1.2; 0 / 0.51                one seed at 0.53 (permuted), 0.20 (rotated)
ewc+replay (emp., exact)   0 / 1.4, 0 / 1.3; 0 / 1.1                 rotated, exact, 10 epochs: 1
ewc+si (empirical)         0 with 1 epoch; 10 epochs: 2 of 3         permuted: 2; rotated: 1 (1 epoch)
                           (permuted), 3 of 3 (rotated)
=========================  ========================================  ==============================================

ewc+si with 10 epochs diverges on the domain streams at any lam, also at lam 0: SI alone, at
its default c=0.1, diverges on rotated-digits with 10 epochs (3 of 3 seeds), so that is SI's
strength, not EWC's. Measured the same way, the former default 500 diverged with ewc (empirical
and exact) on permuted- and rotated-digits in 3 of 3 seeds with 1 epoch and in 2 or 3 of 3 with
10, and on split-digits with 1 epoch (the table). Seeds 3-8 at lam 50, 1 epoch, on the tightest
cells (permuted and rotated, exact and sampled; online-ewc; ewc+mas): none diverged.

So the default is 50: stable in every cell of EWC alone or combined with MAS or replay, half the
smallest lam that failed on a bundled stream (100) and a third of the smallest on split-digits
(150, ewc+replay with the exact Fisher).
"""

from __future__ import annotations

import argparse
import json

import continual as cl
from continual.errors import ContinualError
from continual.regularizers import EWC

CONFIGS = [("ewc", "empirical"), ("ewc", "exact"), ("ewc", "sampled"), ("ewc", "batched"), ("online-ewc", "empirical"),
           ("ewc+mas", "empirical"), ("ewc+si", "empirical"), ("ewc+replay", "empirical"), ("ewc+replay", "exact")]


def measure(benchmark: str, strategy: str, estimator: str, epochs: int, lam: float, seed: int) -> dict:
    """One run: its final accuracy (or ``None`` when it diverged) and its curvature ratios."""
    ratios: list[float] = []
    consolidate = EWC.consolidate

    def recording(self, model, experience):
        consolidate(self, model, experience)
        peak = max(float(v.max()) for v in self.importances.values())
        ratios.append(2 * self.strength * self.scale * peak)  # the penalty's largest curvature

    EWC.consolidate = recording
    key = "ewc.lam" if strategy == "ewc+mas" else "lam"
    cfg = cl.RunConfig(benchmark=benchmark, strategy=strategy, epochs=epochs, seed=seed, device="cpu")
    cfg = cfg.override({key: lam, "estimator": estimator})
    try:
        result = cl.run(cfg)
        accuracy = result.metrics["final_average_accuracy"]
    except ContinualError:
        accuracy = None
    finally:
        EWC.consolidate = consolidate
    lr = cfg.resolve().lr
    return {"accuracy": accuracy, "lr_curvature": max((lr * r for r in ratios[:-1]), default=0.0)}  # the last is never trained against


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--benchmarks", default="split-digits,permuted-digits,rotated-digits")
    ap.add_argument("--lams", default="50,100")
    ap.add_argument("--epochs", default="1,10")
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    for benchmark in args.benchmarks.split(","):
        for strategy, estimator in CONFIGS:
            for epochs in (int(e) for e in args.epochs.split(",")):
                for lam in (float(x) for x in args.lams.split(",")):
                    runs = [measure(benchmark, strategy, estimator, epochs, lam, seed) for seed in range(args.seeds)]
                    print(json.dumps({
                        "benchmark": benchmark, "strategy": strategy, "estimator": estimator, "epochs": epochs, "lam": lam,
                        "diverged": sum(r["accuracy"] is None for r in runs),
                        "accuracy": [None if r["accuracy"] is None else round(r["accuracy"], 3) for r in runs],
                        "lr_lam_F": round(max(r["lr_curvature"] for r in runs), 3),
                    }), flush=True)


if __name__ == "__main__":
    main()
