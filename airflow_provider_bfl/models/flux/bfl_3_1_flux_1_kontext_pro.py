"""
FLUX.1 Kontext [pro] (``bfl:3@1``): reference editing (or text to image), nine ~1 MP sizes, up to 2 references, $0.04.

Sources: the Runware model page head (ID, pricing 1024x1024 $0.04, the nine pairs); Runware's BFL
provider page (2025-10: "supports referenceImages with 2 images", text-to-image too,
positivePrompt 2..3000, promptUpsampling/safetyTolerance, no ``raw``); the generic reference
(Kontext max 2 references; PNG/JPG/WEBP; UUID, URL, data URI or base64); runware-sdk 1.8.0
``BflFlux1KontextProParams`` (``inputs`` object, optional). References go in
``inputs.referenceImages`` (SDK and the current page template; older docs had a top-level field).
"""

from airflow_provider_bfl.models.spec import ModelSpec, flat_price

#: Compatibility & Validation table of the model page (tier "1K"); Kontext [max] shares it.
SIZES = (
    (1568, 672),
    (1392, 752),
    (1184, 880),
    (1248, 832),
    (1024, 1024),
    (832, 1248),
    (880, 1184),
    (752, 1392),
    (672, 1568),
)

SPEC = ModelSpec(
    air="bfl:3@1",
    name="FLUX.1 Kontext [pro]",
    sizes=SIZES,
    price=flat_price(0.04),
    price_text="$0.04 per image (1024x1024; every size is ~1 MP; no reference surcharge listed)",
    max_references=2,
    sources={
        "sizes": "model page, Compatibility & Validation (9 pairs)",
        "price": "model page, Pricing: 1024x1024 $0.04",
        "inputs.referenceImages": "count 2: Runware BFL provider page and generic reference; path: runware-sdk inputs",
        "positivePrompt": "Runware BFL provider page (2025-10): 2..3000",
    },
    example={
        "taskType": "imageInference",
        "taskUUID": "24cd5dff-cb81-4db5-8506-b72a9425f9d1",
        "model": "bfl:3@1",
        "positivePrompt": "Transform the scene to include autumn foliage and warm lighting",
        "width": 1392,
        "height": 752,
        "providerSettings": {"bfl": {"promptUpsampling": False}},
    },
)
