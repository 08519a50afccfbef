"""The framework-neutral Backend, training-loop and CLI tests, run on impl_gluon."""
from tests.backend_contract import *  # noqa: F401,F403

FRAMEWORK = "gluon"
