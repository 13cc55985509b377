"""Transformer Programs (Friedman, Wettig, Chen 2023): train a discrete transformer, read it as code.

``fit_program(task, FitConfig(...))`` trains the constrained model of ``model`` on any task
with the small ``ProgramTask`` protocol.

Example:
    >>> from rasp.programs import ProgramArchitecture
    >>> ProgramArchitecture(n_layers=2, n_heads_cat=1).n_layers
    2
"""

from rasp.programs.config import FitConfig, ProgramArchitecture
from rasp.programs.data import ProgramData, ProgramTask, ProgramVocab, make_data
from rasp.programs.fit import FittedProgram, fit_program, program_accuracy
from rasp.programs.model import ProgramModel

__all__ = [
    "FitConfig",
    "FittedProgram",
    "ProgramArchitecture",
    "ProgramData",
    "ProgramModel",
    "ProgramTask",
    "ProgramVocab",
    "fit_program",
    "make_data",
    "program_accuracy",
]
