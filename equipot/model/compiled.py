"""Compiled inference: energy, forces (and stress) as one traced first-order graph, compiled.

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
(stress or not, one structure or several). A model that cannot be traced (long-range terms that
size their k-vectors on the host) or compiled runs eager, and says why once.
"""

from __future__ import annotations

import warnings

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.experimental.proxy_tensor import make_fx
from torch.fx.experimental.symbolic_shapes import DimDynamic, ShapeEnv, StatelessSymbolicContext

from equipot import keys

# What a model reads from a batch, in the order the traced graph takes it; per input, which
# dimensions are counts of structures (G), atoms (N) or edges (E), the others fixed (2, 3).
INPUTS = {
    keys.ATOMIC_NUMBERS: ("N",),
    keys.BATCH: ("N",),
    keys.POSITIONS: ("N", 3),
    keys.CELL: ("G", 3, 3),
    keys.PBC: ("G", 3),
    keys.EDGE_INDEX: (2, "E"),
    keys.SHIFTS: ("E", 3),
    keys.TOTAL_CHARGE: ("G",),
}


class Trace:
    """One compiled graph: the shape conditions it holds under, and the names of its
    outputs."""

    def __init__(self, graph: torch.fx.GraphModule, shape_env: ShapeEnv,
                 output_names: list[str], backend: str):
        placeholders = [node.meta["val"] for node in graph.graph.nodes
                        if node.op == "placeholder"]
        self.fixed = [[(dim, size) for dim, size in enumerate(value.shape)
                       if isinstance(size, int)] for value in placeholders]
        guards = shape_env.produce_guards_expression(placeholders)  # Python source, or None
        self.guards = None if guards is None else compile(guards, "<trace guards>", "eval")
        self.shape_env = shape_env
        self.output_names = output_names
        self.compiled = torch.compile(graph, dynamic=True, backend=backend)

    def admits(self, inputs: list[torch.Tensor]) -> bool:
        if any(tensor.shape[dim] != size for tensor, fixed in zip(inputs, self.fixed)
               for dim, size in fixed):
            return False
        return self.guards is None or self.shape_env.evaluate_guards_expression(
            self.guards, inputs)

    def __call__(self, inputs: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        return dict(zip(self.output_names, self.compiled(*inputs)))


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
        inputs = [batch[name] for name in INPUTS]
        if compute_forces and self.failure is None:
            key = (compute_stress, batch.num_graphs == 1)
            if key not in self.traces and traceable_sizes(inputs):
                self._trace(key, inputs)
            trace = self.traces.get(key)
            if trace is not None and trace.admits(inputs):
                return trace(inputs)
        return self.model(batch, compute_forces=compute_forces, compute_stress=compute_stress)

    def _trace(self, key: tuple[bool, bool], inputs: list[torch.Tensor]) -> None:
        compute_stress, single = key
        names: list[str] = []

        def call(*tensors):
            out = self.model(keys.GraphFields(zip(INPUTS, tensors)), compute_forces=True,
                             compute_stress=compute_stress, create_graph=False)
            names[:] = sorted(out)
            return tuple(out[name] for name in names)

        try:
            shape_env = ShapeEnv()
            fake_mode = FakeTensorMode(shape_env=shape_env, allow_non_fake_inputs=True)
            fakes = [fake_mode.from_tensor(tensor, symbolic_context=symbolic_sizes(
                dims, dynamic_graphs=not single)) for tensor, dims in zip(inputs, INPUTS.values())]
            with torch.enable_grad():
                graph = make_fx(call, tracing_mode="symbolic")(*fakes)
            trace = Trace(graph, shape_env, names, self.backend)
            trace(inputs)  # compile now, so that a failure shows here
        except Exception as error:  # noqa: BLE001 — any failure means: run eager, say why
            self.failure = f"{type(error).__name__}: {str(error).splitlines()[0]}"
            warnings.warn(f"equipot: this model cannot be compiled ({self.failure}); it runs "
                          f"eager", stacklevel=3)
            return
        self.traces[key] = trace


def symbolic_sizes(dims: tuple, dynamic_graphs: bool) -> StatelessSymbolicContext:
    """Atom and edge counts (and structure counts with ``dynamic_graphs``) symbolic, the rest
    fixed."""
    dynamic = [DimDynamic.DYNAMIC if dim in ("N", "E") or (dim == "G" and dynamic_graphs)
               else DimDynamic.STATIC for dim in dims]
    return StatelessSymbolicContext(dynamic_sizes=dynamic, constraint_sizes=[None] * len(dims))


def traceable_sizes(inputs: list[torch.Tensor]) -> bool:
    """Whether a batch's sizes make a general trace: at least two atoms and two edges, and
    the counts of structures, atoms and edges different from each other and from 2 and 3
    (equal sizes would be traced as one symbol)."""
    fields = dict(zip(INPUTS, inputs))
    graphs = fields[keys.CELL].shape[0]
    atoms, edges = fields[keys.ATOMIC_NUMBERS].shape[0], fields[keys.EDGE_INDEX].shape[1]
    sizes = [atoms, edges] + ([graphs] if graphs > 1 else [])
    return min(atoms, edges) >= 2 and len(set(sizes) | {2, 3}) == len(sizes) + 2
