#!/usr/bin/env python3
"""The floor: a stdlib-only hook that reads the binding context and allows.

Every benchmark scenario is reported as a ratio to this, measured in the same run with the same
interpreter, so the numbers say what signgate adds on top of starting Python at all.
"""
import json
import os

with open(os.environ["BINDING_CONTEXT_PATH"], "rb") as handle:
    json.load(handle)
with open(os.environ["VALIDATING_RESPONSE_PATH"], "w") as handle:
    json.dump({"allowed": True}, handle)
