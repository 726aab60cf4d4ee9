"""jessy-adapters: one training spec, many fine-tuning backends, one normalised output.

The plugin API is this one import: what a backend plugin needs, and nothing more.

    from jessy_adapters import hookimpl, Backend, Translation, Refusal, RunInputs
"""

__version__ = "0.1.0"

from .backend import (  # noqa: E402
    EVENT_PREFIX,
    OFFLINE_ENV,
    Availability,
    Backend,
    LaunchTarget,
    PreparedData,
    Refusal,
    RunInputs,
    Translation,
    TranslationRefused,
)
from .failures import Failure  # noqa: E402
from .hookspecs import hookimpl  # noqa: E402
from .schedule import Schedule, run_schedule  # noqa: E402

__all__ = ["EVENT_PREFIX", "OFFLINE_ENV", "Availability", "Backend", "Failure", "LaunchTarget",
           "PreparedData", "Refusal", "RunInputs", "Schedule", "Translation",
           "TranslationRefused", "__version__", "hookimpl", "run_schedule"]
