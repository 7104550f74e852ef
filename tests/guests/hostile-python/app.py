"""hostile-python: a Python policy that misbehaves in the way its call's action names, so that
the tests can check what the sandbox does with a componentize-py component.

| action | what it does |
| --- | --- |
| `spin` | loops forever |
| `grow` | allocates ever larger buffers (4 MiB, doubling) without end |
| `raise` | raises an uncaught exception |
| `huge-reason` | allows with a 1 MiB reason |
| `print` | prints to standard output and standard error, then allows ("printed") |
| `clock` | allows with `time.time_ns()` as reason |
| `random` | allows with `random.random()` as reason |
| `env` | allows with the environment (`repr(dict(os.environ))`) as reason |
| `file` | opens /etc/passwd: allows ("opened"), or blocks with the exception's class (`no_files`) |
| `socket` | connects to 127.0.0.1 at the argument `port`: allows ("connected"), or blocks with the exception's class (`no_network`) |
| anything else | allows ("ok") |
"""

import os
import random
import socket
import sys
import time

from writ_policy import Decision, ToolCall, policy


@policy
def evaluate(call: ToolCall) -> Decision:
    match call.action:
        case "spin":
            while True:
                pass
        case "grow":
            # Doubling, so that the memory cap is reached before the fuel runs out.
            hoard, size = [], 4 << 20
            while True:
                hoard.append(bytearray(size))
                size *= 2
        case "raise":
            raise RuntimeError("hostile exception")
        case "huge-reason":
            return Decision.allow("x" * (1 << 20))
        case "print":
            print("hello from a policy")
            print("hello from a policy, on stderr", file=sys.stderr)
            return Decision.allow("printed")
        case "clock":
            return Decision.allow(str(time.time_ns()))
        case "random":
            return Decision.allow(str(random.random()))
        case "env":
            return Decision.allow(repr(dict(os.environ)))
        case "file":
            try:
                with open("/etc/passwd") as f:
                    f.read()
            except Exception as e:
                return Decision.block(type(e).__name__).code("no_files")
            return Decision.allow("opened")
        case "socket":
            port = int(call.arguments["port"])
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            except Exception as e:
                return Decision.block(type(e).__name__).code("no_network")
            return Decision.allow("connected")
        case _:
            return Decision.allow("ok")
