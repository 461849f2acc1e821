"""Path parameters and body bases the per-feature routers share."""

# No `from __future__ import annotations`: FastAPI reads these annotations at runtime.

from typing import Annotated

from pydantic import ConfigDict, Field

from fleet.api.schemas import In

# An object id in a path: a positive 32-bit integer.
ObjId = Annotated[int, Field(ge=1, le=2**31 - 1)]
# Lists of the device plane (alerts, presence, dead letters, commands of a batch) are bounded per call.
MAX_LIST = 500


class StrictIn(In):
    """A request body that refuses unknown fields."""

    model_config = ConfigDict(extra="forbid")
