"""Every table: importing this module registers all model modules on `Base.metadata`.

For whatever needs the whole schema at once (migrations' autogenerate, test resets). The model modules do
not import one another for this, so none of them is part of an import cycle.
"""

from __future__ import annotations

from fleet.persistence import (
    models,
    models_console,
    models_mqtt,
    models_reference,
    models_rollouts,
    models_stocktake,
)
from fleet.persistence.base import Base

MODEL_MODULES = (
    models,
    models_console,
    models_mqtt,
    models_reference,
    models_rollouts,
    models_stocktake,
)
metadata = Base.metadata
