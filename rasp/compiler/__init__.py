"""Compiler from RASP to transformer weights: ``compile_program`` -> ``CompiledProgram``.

Why the weights reproduce ``evaluate`` exactly (up to softmax leakage ~exp(-50)):
every s-op subspace is zero at the BOS position (nothing is embedded there, MLPs are
switched off by a large negative ``tokens:BOS`` input, and BOS queries attend only to BOS,
whose value vectors are zero). At other positions each categorical s-op is an exact one-hot
(or all zero for ``None``) and each numerical one its exact value, by induction over layers:
lookup MLPs are exact on one-hot inputs, discretising MLPs are flat within a quarter gap of
every grid value, and hard attention puts weight ~1 on the selected keys (or on BOS when
none is selected). See ``rasp.compiler.blocks`` for the logit scheme.
"""

from rasp.compiler.assemble import compile_program
from rasp.compiler.graph import MAX_CATEGORICAL, MAX_NUMERICAL
from rasp.compiler.program import CompiledProgram

__all__ = ["MAX_CATEGORICAL", "MAX_NUMERICAL", "CompiledProgram", "compile_program"]
