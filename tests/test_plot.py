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
