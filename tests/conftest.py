"""Shared test settings: one torch thread (tests run beside other work on 2 cores)."""

from __future__ import annotations

import torch

torch.set_num_threads(1)
