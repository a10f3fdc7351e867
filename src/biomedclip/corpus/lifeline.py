"""Imported by phase 2's fork server when it starts (``set_forkserver_preload``), and by nothing else: it ties the
fork server's life to the driver's, as ``die_with_parent`` does for every pool worker.

Without it a driver killed during phase 2 (``kill -9``, or SIGTERM without a handler) left the fork server alive:
each pool worker holds the pipe whose end-of-file would stop it, and each worker dies only with its own parent,
the fork server; the resource tracker, which waits for all of them, stayed too. The fork server is started from
the driver's main thread (``distributed.map_units``), so "parent" is the driver for as long as it lives.
"""

import os

from biomedclip.corpus.distributed import DRIVER_PID, die_with_parent

die_with_parent(int(os.environ[DRIVER_PID]) if DRIVER_PID in os.environ else None)
