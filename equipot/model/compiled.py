"""Compiled calls: energy, forces (and stress) as one traced graph, compiled; the same
tracing serves training steps (``equipot.train.compiled_step``).

Forces are −∂E/∂r, so an inference call runs the model forward and then backward. Compiling
the forward alone (``torch.compile`` of the module) leaves the backward and every Python step
around it eager, and a graph that calls ``torch.autograd.grad`` inside cannot be compiled as it
is. So the whole call is first traced into one graph of aten operators, backward included
(``torch.fx.experimental.proxy_tensor.make_fx``, with symbolic numbers of atoms and edges), and
that graph is compiled (``torch.compile``, Inductor, dynamic shapes). On a 9-atom molecule this
removes most of a call's time, which is Python and operator dispatch.

A trace holds for the structures that meet the shape conditions it was traced under (sizes it
fixed, such as the number of structures in a batch, and the guards of its symbolic sizes, such
as at least two atoms and two edges); a call outside them runs eager. Traces are kept per
(stress or not, one structure or several). A model that cannot be traced (DimeNet++'s
triplets and Ewald's k-vectors are counted on the host) or compiled runs eager, and says why
once.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence

import torch
import torch._inductor.exc
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.experimental.proxy_tensor import make_fx
from torch.fx.experimental.symbolic_shapes import DimDynamic, ShapeEnv, StatelessSymbolicContext

from equipot import keys

# What a model reads from a batch.
INPUTS = (keys.ATOMIC_NUMBERS, keys.BATCH, keys.POSITIONS, keys.CELL, keys.PBC,
          keys.EDGE_INDEX, keys.SHIFTS, keys.TOTAL_CHARGE)
COUNTS = {keys.ATOM: "N", keys.EDGE: "E", keys.STRUCTURE: "G"}
# Inductor without vectorised CPU code, which torch 2.13 cannot generate for a scatter-add
# (the energies summed per structure) when it runs on more than one thread.
SCALAR_CODE = {"cpp.simdlen": 1}


def field_dims(name: str, tensor: torch.Tensor) -> tuple:
    """The dimensions of field ``name`` (``keys``; a ``group/`` prefix names another batch):
    a count of its batch's atoms, edges or structures ("N", "E", "G", with the prefix) and
    the fixed sizes of the rest."""
    group, _, field = name.rpartition("/")
    if field == keys.EDGE_INDEX:
        return (2, group + "E")
    return (group + COUNTS[keys.FIELDS[field].per], *tensor.shape[1:])


def traceable(fields: Mapping[str, torch.Tensor]) -> bool:
    """Whether a batch's sizes make a general trace: every count at least 2 (but for one
    structure, which is traced as fixed), and different counts of different sizes, none equal
    to a fixed size (a trace would take equal sizes for one symbol)."""
    counts, fixed = {}, set()
    for name, tensor in fields.items():
        for dim, size in zip(field_dims(name, tensor), tensor.shape):
            if isinstance(dim, str) and not (dim.endswith("G") and size == 1):
                counts.setdefault(dim, set()).add(size)
            else:
                fixed.add(size)
    sizes = [size for values in counts.values() for size in values]
    return (all(len(values) == 1 for values in counts.values()) and min(sizes) >= 2
            and len(set(sizes)) == len(sizes) and not set(sizes) & fixed)


class Trace:
    """``function(parameters, fields)`` (a dict of tensors) traced into one graph over
    symbolic counts of atoms, edges and structures (structures fixed where the traced batch
    has one), and compiled. ``parameters`` are inputs of the graph (a training step's, with
    gradients); ``fields`` a batch's tensors by name (``field_dims``). Raises where the
    function cannot be traced or compiled. ``graph``: the traced graph (inputs: the
    parameters, then the fields in ``names`` order; outputs in ``outputs`` order)."""

    def __init__(self, function: Callable, parameters: Sequence[torch.Tensor],
                 fields: Mapping[str, torch.Tensor], backend: str):
        self.names = sorted(fields)
        shape_env = ShapeEnv()
        fake_mode = FakeTensorMode(shape_env=shape_env, allow_non_fake_inputs=True)
        fakes = [fake_mode.from_tensor(parameter).requires_grad_(True)
                 for parameter in parameters]
        for name in self.names:
            dims = field_dims(name, fields[name])
            fakes.append(fake_mode.from_tensor(fields[name], symbolic_context=symbolic(
                dims, dynamic_graphs=fields[name].shape[0] > 1)))
        count = len(parameters)
        self.outputs: list = []  # the keys of the function's dict, in the graph's order

        def traced(*tensors):
            out = function(list(tensors[:count]), dict(zip(self.names, tensors[count:])))
            self.outputs = sorted(out)
            return tuple(out[key] for key in self.outputs)

        with torch.enable_grad():
            self.graph = graph = make_fx(traced, tracing_mode="symbolic")(*fakes)
        placeholders = [node.meta["val"] for node in graph.graph.nodes
                        if node.op == "placeholder"]
        self.fixed = [[(dim, size) for dim, size in enumerate(value.shape)
                       if isinstance(size, int)] for value in placeholders]
        guards = shape_env.produce_guards_expression(placeholders)  # Python source, or None
        self.guards = None if guards is None else compile(guards, "<trace guards>", "eval")
        self.shape_env = shape_env
        attempts = [None]  # the backend's defaults, and for Inductor a fallback:
        if backend == "inductor":
            attempts = [SCALAR_CODE] if torch.get_num_threads() > 1 else [{}, SCALAR_CODE]
        for options in attempts:
            self.compiled = torch.compile(graph, dynamic=True, backend=backend,
                                          options=options)
            try:
                self(parameters, fields)  # compile now, so that a failure shows here
                break
            except torch._inductor.exc.InductorError:
                if options is attempts[-1]:
                    raise

    def admits(self, parameters: Sequence[torch.Tensor], fields: Mapping[str, torch.Tensor]
               ) -> bool:
        """Whether these inputs meet the sizes the trace fixed and its shape guards."""
        if sorted(fields) != self.names:
            return False
        inputs = [*parameters, *(fields[name] for name in self.names)]
        if any(tensor.shape[dim] != size for tensor, fixed in zip(inputs, self.fixed)
               for dim, size in fixed):
            return False
        return self.guards is None or self.shape_env.evaluate_guards_expression(
            self.guards, inputs)

    def __call__(self, parameters: Sequence[torch.Tensor], fields: Mapping[str, torch.Tensor]
                 ) -> dict:
        values = self.compiled(*parameters, *(fields[name] for name in self.names))
        return dict(zip(self.outputs, values))


def symbolic(dims: tuple, dynamic_graphs: bool) -> StatelessSymbolicContext:
    """Counts symbolic (structures only with ``dynamic_graphs``), fixed sizes static."""
    dynamic = [DimDynamic.DYNAMIC if isinstance(dim, str)
               and (not dim.endswith("G") or dynamic_graphs) else DimDynamic.STATIC
               for dim in dims]
    return StatelessSymbolicContext(dynamic_sizes=dynamic, constraint_sizes=[None] * len(dims))


def trace_or_warn(function: Callable, parameters: Sequence[torch.Tensor],
                  fields: Mapping[str, torch.Tensor], backend: str, what: str
                  ) -> tuple[Trace | None, str | None]:
    """(the Trace, None), or (None, why) after warning once that ``what`` runs eager."""
    try:
        return Trace(function, parameters, fields, backend), None
    except Exception as error:  # noqa: BLE001 — any failure means: run eager, say why
        failure = f"{type(error).__name__}: {str(error).splitlines()[0]}"
        warnings.warn(f"equipot: {what} cannot be compiled ({failure}); it runs eager",
                      stacklevel=3)
        return None, failure


class CompiledPotential:
    """``model`` (a Potential or an Ensemble) called through compiled traces: the same
    outputs as ``model(batch, compute_forces=True, compute_stress=…)`` in eval mode, within
    roundoff (1e-5 relative in float32, 1e-10 in float64). Calls without forces run eager.
    ``backend``: torch.compile's (``"eager"`` runs the traced graph uncompiled, for tests)."""

    def __init__(self, model: torch.nn.Module, backend: str = "inductor"):
        self.model, self.backend = model, backend
        self.traces: dict[tuple[bool, bool], Trace] = {}
        self.failure: str | None = None  # why the model runs eager, once it is known

    def __call__(self, batch, compute_forces: bool = True, compute_stress: bool = False
                 ) -> dict[str, torch.Tensor]:
        fields = {name: batch[name] for name in INPUTS}
        if compute_forces and self.failure is None:
            key = (compute_stress, batch.num_graphs == 1)
            if key not in self.traces and traceable(fields):
                self._trace(key, fields)
            trace = self.traces.get(key)
            if trace is not None and trace.admits([], fields):
                return trace([], fields)
        return self.model(batch, compute_forces=compute_forces, compute_stress=compute_stress)

    def _trace(self, key: tuple[bool, bool], fields: dict[str, torch.Tensor]) -> None:
        def call(parameters, fields):
            return self.model(keys.GraphFields(fields), compute_forces=True,
                              compute_stress=key[0], create_graph=False)

        trace, self.failure = trace_or_warn(call, [], fields, self.backend, "this model")
        if trace is not None:
            self.traces[key] = trace
