"""How far to trust a prediction: fitting and calibrating a model's uncertainty, scoring it,
and choosing what to label next. The models that predict standard deviations are in
``equipot.model`` (``llpr``: last-layer prediction rigidity, ``ensemble``: a committee).

- ``fitting``: LLPR's feature covariance from the training set, and the calibration of either
  method on a validation set (scale factors, LLPR's regulariser), stored in the model config;
- ``scores``: how well predicted σ ranks and matches observed errors;
- ``selection``: the most informative structures to label next.
"""
