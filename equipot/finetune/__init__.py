"""Fine-tuning: a run that starts from a trained model file instead of a fresh network.

``equipot-train finetune.source=runs/x/model.pt data.train=new.xyz`` (``equipot.cli.train``):
the architecture, weights and statistics come from the model file (``source.py``); reference
energies, shift and scale are kept or refitted to the new data with the network fixed
(``statistics.py``); elements the source lacks are added to every per-species tensor
(``equipot.nn.species_rows``); freezing is ``equipot.train.freezing``, replay of the source's
data ``equipot.data.replay``.
"""
