"""One look everywhere: colours, fonts and axis labels shared by every figure."""

from __future__ import annotations

import math

import plotly.graph_objects as go
import torch

SEQUENTIAL = "Blues"
DIVERGING = "RdBu"
FONT = dict(family="Inter, Helvetica, Arial, sans-serif", size=12)

#: Largest side drawn cell by cell; longer axes are max-pooled into blocks for drawing only.
MAX_DRAWN_SIDE = 256


def base_layout(fig: go.Figure, title: str, height: int = 480) -> go.Figure:
    """Apply the house layout to a figure."""
    fig.update_layout(
        title=dict(text=title, x=0.01, xanchor="left"),
        font=FONT,
        height=height,
        margin=dict(l=60, r=20, t=50, b=50),
        template="plotly_white",
    )
    return fig


def position_labels(tokens: list[str]) -> list[str]:
    """Unique axis labels ``"3: the"``: plotly merges repeated category labels otherwise."""
    return [f"{i}: {_visible(t)}" for i, t in enumerate(tokens)]


def _visible(token: str) -> str:
    return token.replace("\n", "⏎").replace(" ", "·") if token.strip() != token else token


def pool_for_drawing(matrix: torch.Tensor, labels_q: list[str], labels_k: list[str]):
    """Max-pool a ``[q, k]`` matrix into at most ``MAX_DRAWN_SIDE`` blocks per side.

    Max (not mean) keeps a sharp attention stripe visible after pooling. Returns the drawn
    matrix, its row and column labels (``"10–19"`` for a block) and the pooling factors.
    """
    fq = max(1, math.ceil(matrix.shape[0] / MAX_DRAWN_SIDE))
    fk = max(1, math.ceil(matrix.shape[1] / MAX_DRAWN_SIDE))
    if fq == fk == 1:
        return matrix, labels_q, labels_k, (1, 1)
    pooled = torch.nn.functional.max_pool2d(
        matrix[None, None], kernel_size=(fq, fk), stride=(fq, fk), ceil_mode=True
    )[0, 0]
    rows = [_block(i, fq, matrix.shape[0]) for i in range(pooled.shape[0])]
    cols = [_block(j, fk, matrix.shape[1]) for j in range(pooled.shape[1])]
    return pooled, rows, cols, (fq, fk)


def _block(i: int, factor: int, n: int) -> str:
    start, end = i * factor, min((i + 1) * factor, n) - 1
    return f"{start}–{end}" if end > start else str(start)
