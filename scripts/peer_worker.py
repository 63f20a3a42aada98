"""One side of the peer benchmark (``scripts/benchmark_peers.py``): the shared harness's worker
(``../shared/peers/worker.py``, the same JSON requests on stdin and replies on stdout), with two
changes:

- equipot's side as its users run it: ``EquipotCalculator(model, compile=…)`` for calls and MD,
  and the training step of ``equipot-train`` (``PotentialModule.training_step`` with the recipe's
  loss and optimiser, compiled or not, with or without the dimer-repulsion penalty);
- ``{"op": "peak", "reset": bool}``: the resident-memory high-water mark of the process (MiB,
  ``VmHWM``), and its reset to the current size (``/proc/self/clear_refs``), so that one call's
  peak can be read after a warm-up.

The peers' setups are the harness's own. Run by the driver in each framework's venv; the
harness's folder is ``$PEERS_HARNESS``.
"""

import os
import sys

if __name__ == "__main__":  # the harness's protocol: replies on the real stdout only
    _replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

import importlib.util  # noqa: E402
import json  # noqa: E402
import traceback  # noqa: E402

HARNESS = os.environ["PEERS_HARNESS"]
_spec = importlib.util.spec_from_file_location("harness_worker",
                                               os.path.join(HARNESS, "worker.py"))
harness = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(harness)  # sets one thread, the address-space cap


def equipot_setup(entry: dict, spec: dict) -> None:
    from equipot.calculator import EquipotCalculator
    model, _ = harness.equipot_build(spec, harness.DT[spec.get("dtype", "float32")])
    entry["calc"] = EquipotCalculator(model, compile=bool(spec.get("compile")))
    entry["info"] = {"params": harness.n_params(model), "compile": bool(spec.get("compile"))}


def equipot_train_setup(entry: dict, spec: dict) -> None:
    """``PotentialModule.training_step`` on the harness's 10 ethanols, then backward and the
    optimiser step; options from the config the spec selects (EMA and logging aside)."""
    import torch
    from torch_geometric.data import Batch

    from equipot import keys
    from equipot.data.graph import atoms_to_graph
    from equipot.train.config import composed
    from equipot.train.module import PotentialModule

    dtype = spec.get("dtype", "float32")
    _, model_config = harness.equipot_build(spec, harness.DT[dtype])
    run = composed(spec["select"], "data.train=unused.xyz", *spec.get("overrides", []))
    torch.manual_seed(0)
    module = PotentialModule(model_config, [keys.ENERGY, keys.FORCES], dtype=dtype,
                             loss=run["loss"], optimizer=run["optimizer"],
                             scheduler=run["scheduler"], ema_decay=None,
                             dimer_repulsion=run["dimer_repulsion"] if spec.get("dimers") else None,
                             compile=bool(spec.get("compile")))
    module.train()
    configured = module.configure_optimizers()
    optimizer = configured["optimizer"] if isinstance(configured, dict) else configured
    batch = Batch.from_data_list([atoms_to_graph(a, module.model.cutoff, {
        keys.ENERGY: a.info["energy"], keys.FORCES: a.arrays["forces"]})
        for a in harness.bc.training_frames(10)])

    def step() -> float:
        optimizer.zero_grad()
        loss = module.training_step(batch, 0)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    entry["step"] = step
    entry["train_info"] = {"params": harness.n_params(module.model), "atoms": batch.num_nodes,
                           "edges": int(batch.edge_index.shape[1]),
                           "dimers": bool(spec.get("dimers")), "compile": bool(spec.get("compile"))}


def op_peak(request: dict) -> dict:
    """The peak resident memory (MiB) since the last reset; with ``reset``, reset it now."""
    with open("/proc/self/status") as status:
        fields = dict(line.split(":", 1) for line in status)
    peak, now = (int(fields[name].split()[0]) / 1024 for name in ("VmHWM", "VmRSS"))
    if request.get("reset"):
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
    return {"peak_mib": peak, "rss_mib": now}


harness.SETUP["equipot"] = equipot_setup
harness.TRAIN_SETUP["equipot"] = equipot_train_setup
harness.OPS["peak"] = op_peak

if __name__ == "__main__":
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        try:
            reply = harness.OPS[request["op"]](request)
        except Exception:  # reported to the driver; the worker keeps serving
            reply = {"error": traceback.format_exc()}
        _replies.write(json.dumps(reply) + "\n")
