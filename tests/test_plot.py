import matplotlib.pyplot as plt
import pytest

from continual import ContinualError
from continual.plot import plot_accuracy_curves, plot_accuracy_matrix, plot_per_experience, save_figures
from tests.test_results import fake


def test_plots_draw_into_a_given_axes(tmp_path):
    results = [fake("a", s, 0.6 + 0.1 * s) for s in range(3)] + [fake("b", 0, 0.3)]
    fig, axes = plt.subplots(1, 3)
    assert plot_accuracy_curves(results, ax=axes[0]) is fig
    assert len(axes[0].get_lines()) == 2
    assert "95% CI, n=3" in axes[0].get_title() and axes[0].get_legend().get_texts()[0].get_text() == "a (n=3)"
    assert plot_per_experience(results[:3], ax=axes[1]) is fig
    assert plot_accuracy_matrix(results[0].acc_matrix, ax=axes[2]) is fig
    plt.close(fig)
    with pytest.raises(ContinualError, match="band"):
        plot_accuracy_curves(results, band="iqr")
    paths = save_figures(results, tmp_path)
    assert {p.name for p in paths} >= {"curves_b_class.png", "matrix_b_class_a.png", "experiences_b_class_b.png"}
    assert all(p.stat().st_size > 1000 and p.read_bytes()[:4] == b"\x89PNG" for p in paths)


def test_seen_accuracy_curves(tmp_path):
    from continual.metrics import seen_accuracy_curve
    from continual.plot import plot_seen_accuracy_curves
    from tests.test_results import N3, NME, R3, sized

    results = [sized("replay", s, classifier="both", nme=NME) for s in range(2)] + [fake("finetune", 0, 0.8)]
    fig, ax = plt.subplots()
    assert plot_seen_accuracy_curves(results, ax=ax) is fig
    (line,) = ax.get_lines()  # the result without test sizes is left out; classifiers are not split here
    assert line.get_ydata() == pytest.approx(100 * seen_accuracy_curve(R3, N3))
    assert "all test samples seen" in ax.get_ylabel()
    plt.close(fig)
    with pytest.raises(ContinualError, match="test sizes"):
        plot_seen_accuracy_curves([fake("a", 0, 0.8)])
    paths = save_figures(results, tmp_path)
    names = {p.name for p in paths}
    assert {"seen_b_class.png", "curves_b_class.png", "matrix_b_class_replay__nme_.png",
            "experiences_b_class_replay__linear_.png", "matrix_b_class_finetune.png"} <= names
    assert all(p.stat().st_size > 1000 and p.read_bytes()[:4] == b"\x89PNG" for p in paths)
    assert "seen_b_class.png" not in {p.name for p in save_figures([fake("a", 0, 0.8)], tmp_path / "plain")}


def test_plot_bars_labels_each_bar_and_leaves_gaps(tmp_path):
    from continual.plot import plot_bars

    fig, ax = plt.subplots()
    assert plot_bars({"head only": 0.875, "from scratch": 0.514}, ax=ax, title="t", chance=0.5) is fig
    assert [round(p.get_height(), 6) for p in ax.patches] == [87.5, 51.4]
    assert [t.get_text() for t in ax.texts] == ["87.5", "51.4"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["chance (50%)"]
    assert ax.get_ylabel() == "test accuracy (%)" and ax.get_title() == "t"
    plt.close(fig)
    steps = {"finetune": {"old": 0.0, "new": 1.0}, "replay": {"old": 0.9, "new": None}}
    fig = plot_bars(steps)
    ax = fig.axes[0]
    assert len(ax.patches) == 3  # replay's missing "new" leaves a gap
    assert [t.get_text() for t in ax.get_xticklabels()] == ["finetune", "replay"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["old", "new"]
    fig.savefig(tmp_path / "bars.png")
    assert (tmp_path / "bars.png").read_bytes()[:4] == b"\x89PNG"
    plt.close(fig)
    for bad, match in [({}, "no values"), ({"a": {}}, "empty"), ({"a": 0.5, "b": {"old": 0.1}}, "mixes")]:
        with pytest.raises(ContinualError, match=match):
            plot_bars(bad)
