"""What a local cluster's worker processes start with: imported once into the process they are
forked from (see worker_server.py).

Its objects are then frozen out of the garbage collector's reach: a collection in a worker would
otherwise write to every page of them, and each worker would end up with a copy of its own
(measured: the forked-from process then shared 40 MiB less with its two workers).
"""

import gc

import footprints.tasks.chip_work  # noqa: F401  (what a worker runs)

gc.freeze()
