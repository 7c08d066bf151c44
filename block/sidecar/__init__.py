"""`block predictor`: the per-instance predictor sidecar (one fleet tracker behind HTTP, block/fleet/),
and the accuracy run of the same data path against emulated engines. The forecasting library it serves
is block/predictor/; the router reaches a sidecar through block/predictor/client.py."""
