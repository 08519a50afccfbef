"""impl_gluon tests run MXNet on one thread unless DCTTS_THREADS says otherwise: at the tiny
sizes used here its OpenMP barriers cost more than they gain, and on a shared 2-core machine
two spinning threads measured up to 10x slower than one. Set before mxnet is first imported
(impl_gluon.runtime reads it then)."""
import os

os.environ.setdefault("DCTTS_THREADS", "1")
