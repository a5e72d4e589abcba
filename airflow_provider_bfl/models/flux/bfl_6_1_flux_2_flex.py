"""
FLUX.2 [flex] (``bfl:6@1``): multi-reference editing with ``steps`` and ``CFGScale``, $0.06 per megapixel.

Confirmed: the AIR id, free sizes sent together, ``steps`` (integer) and ``CFGScale`` (number) and
``inputs`` (runware-sdk 1.8.0 ``BflFlux2FlexParams``); "up to ten reference images" (Runware model
page, prose) - enforced; price examples 512x512 and 1024x1024 at $0.06 (model page).

Not confirmed, left to the server: the ranges of steps and CFGScale (third party: 1..50, 1.5..10),
the prompt's upper length, provider settings. Size range 256..2048 step 16 as for FLUX.2 [pro]
(third party citing Runware). The page's headline "~$0.1431 per megapixel" contradicts its own
examples; the estimate follows the examples: $0.06 per started output and reference megapixel.
"""

from airflow_provider_bfl.models.spec import ModelSpec, Sampling, SizeRange, per_megapixel_price

SPEC = ModelSpec(
    air="bfl:6@1",
    name="FLUX.2 [flex]",
    sizes=SizeRange(256, 2048, 16),
    price=per_megapixel_price(0.06, 0.06, 0.06),
    price_text="$0.06 per image up to 1 MP (512x512 and 1024x1024 listed); estimated $0.06 per further output or reference MP",
    prompt_length=(1, None),
    max_references=10,
    provider_fields=None,
    sampling=Sampling(steps=(1, None), cfg_scale=(None, None)),
    sources={
        "sizes": "page: width and height together; range: third party citing Runware",
        "inputs.referenceImages": "model page prose: up to ten reference images",
        "steps, CFGScale": "runware-sdk BflFlux2FlexParams (types only; ranges are the server's call)",
        "price": "model page examples ($0.06 at 512x512 and 1024x1024); headline ~$0.1431/MP contradicts them",
    },
    example={
        "taskType": "imageInference",
        "taskUUID": "17c1cda6-a7af-4476-a069-e3753eb413f1",
        "model": "bfl:6@1",
        "positivePrompt": "A richly detailed airborne regatta above a vast salt flat at golden sunrise",
        "width": 1024,
        "height": 1024,
        "steps": 28,
        "CFGScale": 4.5,
    },
)
