#!/usr/bin/env python3
"""shell-operator hook: admit only container images whose signatures verify.

All logic lives in lib/signgate (shell-operator does not run files under a directory named lib).
This file only finds the library and keeps one promise: even if the library cannot be imported,
a validating call gets an explicit denial instead of shell-operator's opaque "Hook failed".
"""
import os
import sys
import time

STARTED = time.monotonic()
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))

started = STARTED
fallback = None
try:
    if sys.argv[1:] != ["--config"]:
        # The deadline counts from when the request reached the pod, not from this interpreter's
        # start, which can be much later under load (lib/signgate/fastpath.py, request_started).
        from signgate.fastpath import request_started, try_answer

        started = request_started(os.environ, STARTED)
        # The warm path: when every image already passed under this exact configuration, answer
        # from the cache with the standard library alone.
        if try_answer(os.environ, started):
            sys.exit(0)
        if os.environ.get("SIGNGATE_VERIFIER_SOCKET"):
            # A cold decision: a warm verifier service, when deployed, spares this process the
            # heavy imports (lib/signgate/relay.py). When it cannot answer, decide here.
            from signgate.relay import relay

            outcome = relay(os.environ, started)
            if isinstance(outcome, int):
                sys.exit(outcome)
            fallback = outcome
        # Too late, or too loaded, to verify in time: deny at once, before importing the library,
        # when that is the answer the full path would give (lib/signgate/shed.py).
        from signgate.shed import answer as shed

        if shed(os.environ, started, fallback):
            sys.exit(0)
    from signgate.hook import main
except Exception as exc:  # a broken install must still answer, and say why
    if "--config" in sys.argv[1:]:
        sys.stderr.write(f"signgate: cannot load the hook library: {exc!r}\n")
        sys.exit(1)
    path = os.environ.get("VALIDATING_RESPONSE_PATH") or os.environ.get("ADMISSION_RESPONSE_PATH")
    if path:
        import json

        with open(path, "w") as out:
            json.dump({"allowed": False, "message": f"signgate: cannot load the hook library: {exc!r}"}, out)
    sys.stderr.write(f"signgate: cannot load the hook library: {exc!r}\n")
    sys.exit(0)

sys.exit(main(sys.argv, os.environ, started=started, fallback=fallback))
