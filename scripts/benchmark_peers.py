"""equipot against mace-torch, SchNetPack and NequIP, side by side, with equipot eager and
compiled: issue 15's table in one interleaved run per pair.

It runs on the shared harness (``../shared/peers``: its driver's workers, interleaving and
systems; README there) and its peer venvs, but every worker serves ``scripts/peer_worker.py``,
which gives equipot's side the calculator's ``compile`` option and ``equipot-train``'s own
training step. Per pair (ratio = peer time / equipot time, above 1: equipot is faster):

- ``calls``: energy+forces through each ASE calculator on the 9-atom ethanol (3+20 calls) and
  the 1125-atom periodic box (1+5), equipot eager and compiled, interleaved with the peer;
- ``md``: 20 VelocityVerlet steps on the box (0+3), equipot compiled against the peer, after
  the calls' warm-up;
- ``train``: one optimisation step on 10 ethanols (3+15): equipot eager and compiled, each
  with and without the default dimer-repulsion penalty, and the peer;
- ``memory``: peak resident memory of one box call above the memory before it (MiB per atom),
  each side in a fresh worker after a warm-up call on a 243-atom box.

Run from the repository root, after ``make install`` and the harness's ``install_peers.sh``:

    OMP_NUM_THREADS=1 python3 scripts/benchmark_peers.py schnet painn mace32 \\
        [--parts calls md train memory]

Pairs: schnet, painn (SchNetPack), mace32, mace128 (mace-torch; mace128 runs on the 576-atom
box, and its memory part on the 1125-atom box, the issue's 8 GiB check), nequip (nequip eager).
Results: ``$PEERBENCH_OUT/results/project_<pair>.json``; the last line per pair summarises.
"""

import argparse
import json
import os
import subprocess
import sys

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HARNESS = os.path.abspath(os.environ.get("PEERS_HARNESS")
                          or os.path.join(REPOSITORY, "..", "shared", "peers"))
os.environ.setdefault("EQUIPOT_DIR", REPOSITORY)
sys.path.insert(0, HARNESS)
import driver as harness  # noqa: E402

WORKER = os.path.join(REPOSITORY, "scripts", "peer_worker.py")
PARTS = ("calls", "md", "train", "memory")


class Worker(harness.Worker):
    """A process of ``scripts/peer_worker.py`` in framework ``fw``'s venv."""

    def __init__(self, fw: str, tag: str = "", env: dict | None = None):
        os.makedirs(harness.RESULTS, exist_ok=True)
        self.fw = fw
        self.log_path = os.path.join(harness.RESULTS, f"project_worker_{fw}{tag}.log")
        self.log = open(self.log_path, "a")
        self.p = subprocess.Popen(
            [harness.PY[fw], WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self.log, text=True, cwd=harness.bp.out_dir(),
            env={**harness.ENV, "PEERS_HARNESS": HARNESS, **(env or {})})


def peer_spec(pair: str) -> dict:
    if pair in ("schnet", "painn"):
        return {"fw": "spk", "rep": pair}
    if pair == "nequip":
        return {"fw": "nequip", "dtype": "float32"}
    return harness.mace_spec(pair, "float32")


def box(pair: str) -> str:
    return "box4" if pair == "mace128" else "box"


def calls_and_md(pair: str, peer: dict, parts: list[str]) -> dict:
    """The calls (and MD) of equipot eager, compiled and the peer, in one worker each."""
    equipot, other = Worker("equipot", "_" + pair), Worker(peer["fw"], "_" + pair)
    try:
        out = {"setup": {
            "eager": equipot(op="setup", id="eager", **harness.eq_spec(pair, dtype="float32")),
            "compiled": equipot(op="setup", id="compiled", compile=True,
                                **harness.eq_spec(pair, dtype="float32")),
            "peer": other(op="setup", id="peer", **peer)}}
        sides = [("eager", equipot, "eager"), ("compiled", equipot, "compiled"),
                 (peer["fw"], other, "peer")]
        for system, warm, reps in (("mol", 3, 20), (box(pair), 1, 5)):
            out[system] = harness.guarded(f"{pair} {system}", lambda: harness.interleave(
                [(name, worker, {"op": "ef", "id": entry, "system": system})
                 for name, worker, entry in sides], warm, reps, f"{pair} {system}"))
        if "md" in parts and pair != "mace128":
            out["md"] = harness.guarded(f"{pair} md", lambda: harness.interleave(
                [(name, worker, {"op": "md", "id": entry, "system": "box", "steps": 20})
                 for name, worker, entry in sides[1:]], 0, 3, f"{pair} md, 20 steps"))
        return out
    finally:
        equipot.close()
        other.close()


def training(pair: str, peer: dict) -> dict:
    equipot, other = Worker("equipot", "_" + pair), Worker(peer["fw"], "_" + pair)
    variants = {"eager": {}, "eager+dimers": {"dimers": True}, "compiled": {"compile": True},
                "compiled+dimers": {"compile": True, "dimers": True}}
    try:
        out = {"setup": {name: equipot(op="train_setup", id=name, **options,
                                       **harness.eq_spec(pair, dtype="float32"))
                         for name, options in variants.items()}}
        out["setup"]["peer"] = other(op="train_setup", id="peer", **peer)
        sides = [(name, equipot, {"op": "train", "id": name}) for name in variants]
        out["steps"] = harness.interleave(
            sides + [(peer["fw"], other, {"op": "train", "id": "peer"})], 3, 15, f"{pair} train")
        return out
    finally:
        equipot.close()
        other.close()


def memory(pair: str, peer: dict) -> dict:
    """Peak memory of one call on the box above the memory before it, each side alone."""
    system = "box"
    sides = {"eager": ("equipot", harness.eq_spec(pair, dtype="float32")),
             "compiled": ("equipot", {**harness.eq_spec(pair, dtype="float32"), "compile": True}),
             peer["fw"]: (peer["fw"], peer)}
    out = {}
    for name, (fw, spec) in sides.items():
        worker = Worker(fw, f"_{pair}_memory", env={"BENCH_AS_LIMIT_GB": "15"})
        try:
            worker(op="setup", id="m", **spec)
            worker(op="ef", id="m", system="box3")
            before = worker(op="peak", reset=True)["rss_mib"]
            call = worker(op="ef", id="m", system=system)
            peak = worker(op="peak")["peak_mib"]
            out[name] = {"atoms": call["n_atoms"], "before_mib": before, "peak_mib": peak,
                         "mib_per_atom": (peak - before) / call["n_atoms"], "t": call["t"]}
        except RuntimeError as error:
            out[name] = {"error": str(error)[-600:]}
        finally:
            worker.close()
        print(f"[{pair} memory] {name}: {json.dumps(out[name])[:300]}", flush=True)
    return out


def summary(pair: str, out: dict) -> str:
    """One line: peer/equipot ratios of medians (compiled, eager) and memory per atom."""
    fields = []
    for part in ("mol", box(pair), "md"):
        timing = out.get(part) or {}
        if "error" not in timing and timing:
            peer = next(name for name in timing if name not in ("eager", "compiled"))
            fields += [f"{part}_{side}={timing[peer]['median'] / timing[side]['median']:.2f}"
                       for side in ("compiled", "eager") if side in timing]
    steps = (out.get("train") or {}).get("steps") or {}
    if steps:
        peer = next(name for name in steps if "eager" not in name and "compiled" not in name)
        fields += [f"train_{side}={steps[peer]['median'] / steps[side]['median']:.2f}"
                   for side in ("compiled", "compiled+dimers", "eager", "eager+dimers")]
    for side, record in (out.get("memory") or {}).items():
        if "mib_per_atom" in record:
            fields.append(f"memory_{side}={record['mib_per_atom']:.3f}MiB/atom")
    return f"PEERS {pair} peer/equipot " + " ".join(fields)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pairs", nargs="+",
                        choices=("schnet", "painn", "mace32", "mace128", "nequip"))
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    arguments = parser.parse_args()
    harness.RUN_INFO.update({"equipot_commit": harness.equipot_commit(), "script": __file__})
    lines = []
    for pair in arguments.pairs:
        peer = peer_spec(pair)
        out = {}
        if "calls" in arguments.parts or "md" in arguments.parts:
            out.update(harness.guarded(pair, lambda: calls_and_md(pair, peer, arguments.parts)))
        if "train" in arguments.parts:
            out["train"] = harness.guarded(f"{pair} train", lambda: training(pair, peer))
        if "memory" in arguments.parts:
            out["memory"] = memory(pair, peer)
        harness.save(f"project_{pair}", out)
        lines.append(summary(pair, out))
        print(lines[-1], flush=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
