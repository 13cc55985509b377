"""RASP: language, interpreter, library and a compiler to transformer weights.

This package knows nothing of TransformerLens: the compiler returns numpy weights named like
TransformerLens' state dict (``models.compiled`` turns them into a model). ``rasp.programs``
trains Transformer Programs with torch and decompiles them to Python, RASP and weights.

Example:
    >>> from rasp import compile_program, evaluate, library
    >>> program = library.make_reverse()
    >>> evaluate(program, [3, 1, 2, 2])
    [2, 2, 1, 3]
    >>> compile_program(program, [1, 2, 3], 5).sizes()["layers"]
    4
"""

from rasp import library
from rasp.compiler import CompiledProgram, compile_program
from rasp.errors import (
    CompileError,
    EvaluationError,
    RaspError,
    RaspParseError,
    RaspTypeError,
    UnsupportedProgramError,
)
from rasp.interpreter import evaluate
from rasp.language import (
    Aggregate,
    Comparison,
    ConstantSOp,
    Full,
    LinearSequenceMap,
    Map,
    RASPExpr,
    Select,
    Selector,
    SelectorAnd,
    SelectorNot,
    SelectorOr,
    SelectorWidth,
    SequenceMap,
    SOp,
    categorical,
    indices,
    length,
    numerical,
    tokens,
)
from rasp.library import LIBRARY, LibraryProgram
from rasp.parser import PROGRAM_EXAMPLES, parse_program
from rasp.sizes import library_size_table

__all__ = [
    "LIBRARY",
    "PROGRAM_EXAMPLES",
    "Aggregate",
    "Comparison",
    "CompileError",
    "CompiledProgram",
    "ConstantSOp",
    "EvaluationError",
    "Full",
    "LibraryProgram",
    "LinearSequenceMap",
    "Map",
    "RASPExpr",
    "RaspError",
    "RaspParseError",
    "RaspTypeError",
    "SOp",
    "Select",
    "Selector",
    "SelectorAnd",
    "SelectorNot",
    "SelectorOr",
    "SelectorWidth",
    "SequenceMap",
    "UnsupportedProgramError",
    "categorical",
    "compile_program",
    "evaluate",
    "indices",
    "length",
    "library",
    "library_size_table",
    "numerical",
    "parse_program",
    "tokens",
]
