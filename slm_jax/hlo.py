"""Reading XLA's HLO text: its computations and instructions, and the shapes (and bytes) their
types spell. Shared by slm_jax.profile (what each op costs) and slm_jax.collectives (what the
step sends).
"""

from __future__ import annotations

import math
import re

# Instructions that run no kernel of their own.
NO_KERNEL = ("parameter", "constant", "get-tuple-element", "tuple", "bitcast")
# Collective opcodes (run asynchronously as a "-start" and "-done" pair).
COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
# Bytes per element of the types that count; others (tokens, 4-bit, complex) span 0 bytes here.
DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "bf16": 2, "f16": 2, "s16": 2, "u16": 2, "f32": 4,
               "s32": 4, "u32": 4, "f64": 8, "s64": 8, "u64": 8}
# A shape such as `bf16[64,128]`, with its layout `{1,0}` where printed.
_SHAPE = re.compile(r"(?<![a-z0-9])(?P<dtype>[a-z][a-z0-9]*)\[(?P<dims>[\d,]*)\](?:\{[^}]*\})?")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%(?P<name>[\w.\-]+) = (?P<type>.*?) "
                          r"(?P<op>[a-z][\w\-]*)\((?P<operands>[^)]*)\)(?P<attrs>.*)$")
_COMMENT = re.compile(r"/\*.*?\*/")  # tuple index comments, `/*index=1*/`


def dtype_bytes(dtype: str) -> int | None:
  """Bytes per element; every 8-bit float (f8e4m3fn, f8e5m2, ...) is 1. None if not counted."""
  return DTYPE_BYTES.get(dtype) or (1 if dtype.startswith("f8") else None)


def shapes(text: str) -> list[tuple[str, list[int]]]:
  """(dtype, dims) of every shape of a counted dtype in `text`, in order."""
  return [(m["dtype"], [int(d) for d in m["dims"].split(",") if d])
          for m in _SHAPE.finditer(text) if dtype_bytes(m["dtype"])]


def nbytes(text: str) -> int:
  """Bytes the shapes in `text` span (a tuple's: all its elements')."""
  return sum(dtype_bytes(d) * math.prod(dims) for d, dims in shapes(text))


def tuple_elements(type_text: str) -> list[str]:
  """The top-level elements of a tuple type, as text (`[type_text]` if it is not a tuple)."""
  text = type_text.strip()
  if not text.startswith("("):
    return [text]
  out, depth, start = [], 0, 1
  for i, ch in enumerate(text):
    if ch in "([{":
      depth += 1
    elif ch in ")]}":
      depth -= 1
    if (ch == "," and depth == 1) or depth == 0:
      out.append(text[start:i].strip())
      start = i + 1
    if depth == 0:
      break
  return [e for e in out if e]


def async_result(opcode: str, type_text: str) -> tuple[str, str | None]:
  """(result type, operand type or None) of a collective. GPU compiles print an asynchronous
  collective's `-start` as `((operands), results[, scratch])`: its result is the second
  element, not the whole tuple (which would count the operands' bytes too)."""
  if opcode.endswith("-start") and type_text.lstrip().startswith("(("):
    elements = tuple_elements(type_text)
    if len(elements) >= 2:
      return elements[1], elements[0]
  return type_text, None


def element(type_text: str, index: int) -> str:
  """The `index`-th shape of a (flat) tuple type ("" if it has fewer)."""
  elements = [m[0] for m in _SHAPE.finditer(type_text)]
  return elements[index] if index < len(elements) else ""


def instruction(line: str) -> dict | None:
  """{name, type, op, operands, attrs} of an instruction line, None for any other line."""
  m = _INSTRUCTION.match(line)
  return m.groupdict() if m else None


def uncommented(line: str) -> str:
  return _COMMENT.sub("", line)


def computations(hlo_text: str) -> dict[str, list[dict]]:
  """{computation name ("ENTRY" for the entry): its instructions} of an HLO module."""
  comps, current = {}, None
  for line in hlo_text.splitlines():
    if re.match(r"^(ENTRY )?%[\w.\-]+ .*\{$", line):
      current = "ENTRY" if line.startswith("ENTRY") else line.split()[0][1:]
      comps[current] = []
    elif line.startswith("}"):
      current = None
    elif current and (instr := instruction(line)):
      comps[current].append(instr)
  return comps


def async_collective(op: str) -> tuple[str, str] | None:
  """(kind, "start" or "done") of an asynchronous collective's opcode, None for any other."""
  kind, _, phase = op.rpartition("-")
  return (kind, phase) if phase in ("start", "done") and kind in COLLECTIVES else None


def started(done: dict) -> str:
  """The name of the `-start` instruction a collective's `-done` waits for."""
  return operands(done)[0].partition("#")[0]


def operands(instr: dict) -> list[str]:
  """The names of an instruction's operands (`x#1` for a tuple's element, as newer XLA prints)."""
  return [o.strip().split()[-1].lstrip("%") for o in instr["operands"].split(",") if o.strip()]


def operand_type(name: str, types: dict[str, str]) -> str:
  """An operand's type, from {instruction name: type}; `x#1` is the second element of x's."""
  base, _, index = name.partition("#")
  text = types.get(base, "")
  return element(text, int(index)) if index else text
