"""
FLUX.2 [max] (``bfl:7@1``): top FLUX.2 tier, multi-reference, web-grounded; $0.07 for the first megapixel.

Confirmed: the AIR id; width and height together - and optional (runware-sdk 1.8.0
``BflFlux2MaxParams``, the only class here without them required; with the page's "together" rule:
both or neither); ``inputs`` for references; the price rule and its table (Runware model page:
$0.07 first output MP, $0.03 per further output MP, $0.03 per reference MP).

Not confirmed, left to the server: the reference count (8 per secondary sources), the size when
omitted, the prompt's upper length, provider settings. Size range 256..2048 step 16 (third party
citing Runware). The megapixel counting that reproduces every row of the page's table is in
:func:`~airflow_provider_bfl.models.spec.megapixels`.
"""

from airflow_provider_bfl.models.spec import ModelSpec, SizeRange, per_megapixel_price

SPEC = ModelSpec(
    air="bfl:7@1",
    name="FLUX.2 [max]",
    sizes=SizeRange(256, 2048, 16),
    sizes_optional=True,
    price=per_megapixel_price(0.07, 0.03, 0.03),
    price_text="$0.07 for the first output MP, $0.03 per further output MP and per reference MP",
    prompt_length=(1, None),
    max_references=None,
    server_max_references=8,
    provider_fields=None,
    sources={
        "sizes": "page: together; runware-sdk: optional (both or neither); range: third party citing Runware",
        "price": "model page, Pricing rule and its table of six configurations",
        "inputs.referenceImages": "runware-sdk inputs; page: multi-reference; count unconfirmed (8): the server's call",
        "example": "constructed from the page and the SDK (Runware shows no example for this model)",
    },
    example={
        "taskType": "imageInference",
        "taskUUID": "8a1e3f5c-2b7d-4c9e-a1f0-6d4b2c8e9f10",
        "model": "bfl:7@1",
        "positivePrompt": "The product on a marble counter in morning light, as in the reference",
        "width": 1024,
        "height": 1024,
        "inputs": {"referenceImages": ["https://example.com/products/mug.png"]},
    },
)
