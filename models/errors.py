"""Errors raised by the models layer. Every message names the offending value and what is valid."""

from __future__ import annotations


class ModelError(Exception):
    """Base class of every error the models layer raises on bad input."""


class UnknownModelError(ModelError):
    """A model spec names no built-in model, no folder and no reachable hub model."""


class CheckpointError(ModelError):
    """A checkpoint file is missing, corrupt, truncated, unsafe or does not match its config."""


class UnsupportedArchitectureError(ModelError):
    """A pretrained folder holds an architecture TransformerLens cannot hook."""


class InputError(ModelError):
    """An input is empty, too long for the model, or holds tokens outside its vocabulary."""


class TrainingError(ModelError):
    """Training did not reach what was asked of it, or was given invalid settings."""
