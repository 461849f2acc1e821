"""Path parameters and body bases the per-feature routers share."""

# No `from __future__ import annotations`: FastAPI reads these annotations at runtime.

from typing import Annotated

from pydantic import ConfigDict, Field
from starlette.convertors import Convertor, register_url_convertor

from fleet.api.schemas import In

# An object id in a path: a positive 32-bit integer.
ObjId = Annotated[int, Field(ge=1, le=2**31 - 1)]
# A firmware artifact's sha256 in a path.
Sha = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class Sha256Convertor(Convertor[str]):
    """`{sha256:sha256}` matches only 64 lowercase hex digits, so `/artifacts/import` is never read as an
    artifact: a GET there answers 405 (POST only), not a 422 about a malformed sha256."""

    regex = "[0-9a-f]{64}"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("sha256", Sha256Convertor())

# Lists of the device plane (alerts, presence, dead letters, commands of a batch) are bounded per call.
MAX_LIST = 500


class StrictIn(In):
    """A request body that refuses unknown fields."""

    model_config = ConfigDict(extra="forbid")
