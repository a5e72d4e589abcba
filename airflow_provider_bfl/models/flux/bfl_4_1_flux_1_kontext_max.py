"""
FLUX.1 Kontext [max] (``bfl:4@1``): Kontext [pro]'s request surface at the premium tier, $0.08 per image.

Sources: the Runware model page head (ID, pricing 1024x1024 $0.08, the same nine pairs as
Kontext [pro]); Runware's BFL provider page and generic reference (2 references, prompt 2..3000,
promptUpsampling/safetyTolerance); runware-sdk 1.8.0 ``BflFlux1KontextMaxParams`` (field for field
Kontext [pro]'s). Third-party gateways say one input image; Runware says 2, which is the rule here.
"""

from airflow_provider_bfl.models.flux.bfl_3_1_flux_1_kontext_pro import SIZES
from airflow_provider_bfl.models.spec import ModelSpec, flat_price

SPEC = ModelSpec(
    air="bfl:4@1",
    name="FLUX.1 Kontext [max]",
    sizes=SIZES,
    price=flat_price(0.08),
    price_text="$0.08 per image (1024x1024; every size is ~1 MP; no reference surcharge listed)",
    max_references=2,
    sources={
        "sizes": "model page, Compatibility & Validation (same 9 pairs as bfl:3@1)",
        "price": "model page, Pricing: 1024x1024 $0.08",
        "inputs.referenceImages": "count 2: Runware BFL provider page and generic reference",
    },
    example={
        "taskType": "imageInference",
        "taskUUID": "24cd5dff-cb81-4db5-8506-b72a9425f9d1",
        "model": "bfl:4@1",
        "positivePrompt": "Professional logo design with premium typography and sophisticated branding elements",
        "width": 1024,
        "height": 1024,
        "providerSettings": {"bfl": {"promptUpsampling": True}},
    },
)
