"""
The API's plain vocabulary: the default model and the output choices, shared by the request model
and by code that runs while a DAG file is parsed (which must not build the pydantic classes).
"""

from __future__ import annotations

from typing import Literal

#: FLUX.1.1 [pro], the model of a request that names none.
MODEL_ID = "bfl:2@1"

OutputType = Literal["URL", "dataURI", "base64Data"]
OutputFormat = Literal["JPG", "PNG", "WEBP"]
DeliveryMethod = Literal["sync", "async"]
#: Output types whose results carry the image bytes themselves (never to be logged or put in XCom).
BYTE_OUTPUTS = frozenset({"base64Data", "dataURI"})
