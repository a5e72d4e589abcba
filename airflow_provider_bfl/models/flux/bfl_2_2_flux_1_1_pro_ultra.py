"""
FLUX1.1 [pro] Ultra (``bfl:2@2``): text to image at nine fixed ~4 MP sizes, ``raw`` look, $0.06 per image.

Sources: the Runware model page head (ID, pricing ``2k`` $0.06, the Compatibility & Validation
table of nine pairs); Runware's BFL provider page (2025-10 snapshot: positivePrompt 2..3000,
``raw`` for this model only, promptUpsampling and safetyTolerance); Runware's generic image
inference reference (safetyTolerance 0..6, defaults); runware-sdk 1.8.0 ``BflFlux11ProUltraParams``
(same field set as bfl:2@1, no ``inputs``).
"""

from airflow_provider_bfl.models.spec import ModelSpec, flat_price

#: Compatibility & Validation table of the model page (tier "2K"), in the page's order.
SIZES = (
    (3136, 1344),
    (2752, 1536),
    (2368, 1792),
    (2496, 1664),
    (2048, 2048),
    (1664, 2496),
    (1792, 2368),
    (1536, 2752),
    (1344, 3136),
)

SPEC = ModelSpec(
    air="bfl:2@2",
    name="FLUX1.1 [pro] Ultra",
    sizes=SIZES,
    price=flat_price(0.06),
    price_text="$0.06 per image (2k tier; every size is ~4 MP)",
    provider_fields=frozenset({"promptUpsampling", "safetyTolerance", "raw"}),
    sources={
        "sizes": "model page, Compatibility & Validation (9 pairs)",
        "price": "model page, Pricing: 2k $0.06",
        "positivePrompt": "Runware BFL provider page (2025-10): 2..3000",
        "providerSettings.bfl.raw": "Runware BFL provider page: raw for bfl:2@2 only; generic reference: boolean, false",
    },
    example={
        "taskType": "imageInference",
        "taskUUID": "24cd5dff-cb81-4db5-8506-b72a9425f9d1",
        "model": "bfl:2@2",
        "positivePrompt": "Ultra-detailed landscape photography of mountain vista during golden hour",
        "width": 2752,
        "height": 1536,
        "providerSettings": {"bfl": {"promptUpsampling": True, "raw": True}},
    },
)
