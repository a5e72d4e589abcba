"""
FLUX.1.1 [pro] (``bfl:2@1``): text to image, free sizes 256..1440 in steps of 32, $0.04 per image.

Source: the full Runware model page (``shared/spec/flux-1.1-pro-runware.txt``). Its request class is
:class:`~airflow_provider_bfl.models.request.ImageInferenceRequest` itself, written field by field
from that page (the public entry point of the provider and the base every model extends).
"""

from airflow_provider_bfl.models.spec import ModelSpec, SizeRange, flat_price

SPEC = ModelSpec(
    air="bfl:2@1",
    name="FLUX.1.1 [pro]",
    sizes=SizeRange(256, 1440, 32),
    price=flat_price(0.04),
    price_text="$0.04 per image (1k tier)",
    sources={"everything": "Runware model page bfl:2@1 (full text, shared/spec/flux-1.1-pro-runware.txt)"},
    example={
        "taskType": "imageInference",
        "taskUUID": "d75835ee-cbcd-436e-87d8-1ea7af3d3983",
        "model": "bfl:2@1",
        "positivePrompt": "An opulent floating library barge drifting through a narrow canal at golden hour",
        "width": 1024,
        "height": 768,
        "seed": 74910,
        "providerSettings": {"bfl": {"promptUpsampling": True, "safetyTolerance": 2}},
    },
)
