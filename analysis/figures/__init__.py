"""Pure figure functions: ``result -> plotly Figure``, shared by the app, notebooks and reports."""

from analysis.figures.attention import (
    attention_pattern_figure,
    head_scores_figure,
    layer_grid_figure,
)
from analysis.figures.circuits import (
    circuit_delta_figure,
    circuit_graph_figure,
    circuit_map_figure,
)
from analysis.figures.circuits_matching import matching_figure
from analysis.figures.gating import (
    ablation_figure,
    contrastive_map_figure,
    gating_loss_figure,
    gating_map_figure,
)
from analysis.figures.lens import (
    kl_by_layer_figure,
    lens_curve_figure,
    lens_grid_figure,
    residual_figure,
)
from analysis.figures.probes import lens_accuracy_figure, linear_probe_figure

__all__ = [
    "ablation_figure",
    "attention_pattern_figure",
    "circuit_delta_figure",
    "circuit_graph_figure",
    "circuit_map_figure",
    "contrastive_map_figure",
    "gating_loss_figure",
    "gating_map_figure",
    "head_scores_figure",
    "kl_by_layer_figure",
    "layer_grid_figure",
    "lens_accuracy_figure",
    "lens_curve_figure",
    "lens_grid_figure",
    "linear_probe_figure",
    "matching_figure",
    "residual_figure",
]
