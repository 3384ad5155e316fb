"""`qie-bench env`: the environment fingerprint every result carries."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("env", help="print the environment fingerprint (GPU, driver, CUDA, versions, commit)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=env_command)


def env_command(args: argparse.Namespace) -> int:
    from ..fingerprint import environment

    env = environment()
    if args.json:
        print(json.dumps(env, indent=2))
        return 0
    for key, value in env.items():
        if isinstance(value, dict):
            for k, v in value.items():
                print(f"{key}.{k}: {v}")
        else:
            print(f"{key}: {value}")
    return 0
