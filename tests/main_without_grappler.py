"""main.py as a command with Grappler off: `python tests/main_without_grappler.py <flags>`.

For test_main.py's tests whose point is several processes (a SIGKILL, CPU replicas, a cluster
of tasks), not how TensorFlow rewrites a graph. Grappler changes how kernels are fused, not what
they compute, and costs every process tens of seconds of a short run; the in-process tests turn
it off the same way (`sessions.fast_graph_setup`, tests/conftest.py). The CLI smoke tests and
the docs tests run main.py itself, as users do.
"""

import os
import runpy
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    import cli

    cli.import_tensorflow()  # main.py's own quiet import, before sessions imports TensorFlow
    import sessions

    sessions.fast_graph_setup(True)
    sys.argv[0] = os.path.join(ROOT, "main.py")
    runpy.run_path(sys.argv[0], run_name="__main__")
