#!/usr/bin/env python3
"""Black-box tests of `duality serve` (docs/server.md) against the real binary.

    python3 tests/server/test_server_api.py --duality build/duality [--model DIR] [-v] [Class...]

Standard library only. Every server is started with `--port 0` on the given model (default: the
bundled 17M model) and `--device cpu` (override with --device / --serve-arg); each test class
that needs special flags starts its own, the others share a cache-on ("main") and a cache-off
("cold") server. Greedy or seeded sampling only, so every assertion is deterministic; no timing
is asserted (the load test only prints its figures). A watchdog kills every server and exits
non-zero if the run takes longer than --time-limit seconds.

The tests live in the api_*.py modules beside this driver, by topic (api_common.py holds what they
share); this file collects them, stops the shared servers at the end and parses the options.
"""

from __future__ import annotations

import argparse
import atexit
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from api_common import CONFIG, start_watchdog, stop_shared_servers  # noqa: E402
from api_conformance import TestApi  # noqa: E402,F401
from api_streaming import TestGroundTruth, TestStreaming, TestTokenEndpoints  # noqa: E402,F401
from api_logprobs import TestLogprobs  # noqa: E402,F401
from api_sessions import TestCheckpoints, TestConcurrency, TestMultiTurnCache  # noqa: E402,F401
from api_bad_input import TestBadInput, TestFuzz  # noqa: E402,F401
from api_limits import (  # noqa: E402,F401
    TestLimits, TestLoad, TestServedName, TestShutdown, TestTemplateMaxOutput, TestWorkers)


def stop_servers_after_run() -> bool:
    """Stops the shared servers once every test has run (unittest's tearDownModule would run per
    test module, and the classes of the api_*.py modules interleave); False, with the reasons on
    stderr, when one of them died or exited non-zero."""
    try:
        stop_shared_servers()
    except AssertionError as e:
        sys.stderr.write(f"\ntest_server_api: the shared servers: {e}\n")
        return False
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duality", default=CONFIG["duality"], help="the duality binary")
    ap.add_argument("--model", default=CONFIG["model"], help="model folder")
    ap.add_argument("--device", default=CONFIG["device"], help="--device for serve and generate")
    ap.add_argument("--serve-arg", action="append", default=[],
                    help="extra argument for every `duality serve` (repeatable)")
    ap.add_argument("--time-limit", type=float, default=CONFIG["time_limit"],
                    help="seconds before the watchdog kills everything (default 900)")
    args, rest = ap.parse_known_args()
    CONFIG.update(duality=os.path.abspath(args.duality), model=os.path.abspath(args.model),
                  device=args.device, serve_args=args.serve_arg, time_limit=args.time_limit)
    if not os.access(CONFIG["duality"], os.X_OK):
        sys.exit(f"test_server_api: {CONFIG['duality']} is not an executable")
    start_watchdog(CONFIG["time_limit"])
    prog = unittest.main(argv=[sys.argv[0], *rest], verbosity=2, exit=False)
    servers_ok = stop_servers_after_run()
    sys.exit(0 if prog.result.wasSuccessful() and servers_ok else 1)


if __name__ == "__main__":
    main()
else:
    # `python3 -m unittest tests/server/test_server_api.py`: configure from the environment.
    start_watchdog(CONFIG["time_limit"])
    atexit.register(lambda: stop_servers_after_run() or os._exit(1))