"""
FLUX.2 [pro] (``bfl:5@1``): text to image and multi-reference editing, free sizes, from $0.03 per image.

Confirmed (Runware model page head; runware-sdk 1.8.0 ``BflFlux2ProParams``): the AIR id; width
and height required and sent together; free sizes (no table of pairs); ``inputs`` for reference
images; no steps/CFGScale; price ``1k`` $0.03.

Not confirmed by any Runware source, so left to the server (its answer becomes a clear
:class:`~airflow_provider_bfl.exceptions.BflInvalidRequestError`): the reference count (9 per
third-party summaries, 8 per BFL's own API), the prompt's upper length, which provider settings
apply. The size range 256..2048 in steps of 16 is the rule of the two sources that cite Runware's
page (third party): enforced, since a size outside it has no source at all. The price beyond 1 MP
is an estimate after BFL's own list ($0.015 per further output MP and per reference MP).
"""

from airflow_provider_bfl.models.spec import ModelSpec, SizeRange, per_megapixel_price

SPEC = ModelSpec(
    air="bfl:5@1",
    name="FLUX.2 [pro]",
    sizes=SizeRange(256, 2048, 16),
    price=per_megapixel_price(0.03, 0.015, 0.015),
    price_text="$0.03 per image at 1 MP (1k); larger outputs and references estimated at $0.015 per MP",
    prompt_length=(1, None),
    max_references=None,
    server_max_references=9,
    provider_fields=None,
    sources={
        "sizes": "page: width and height together, no table; range 256..2048 step 16: two third-party sources citing Runware",
        "price": "model page, Pricing: 1k $0.03; scaling: BFL's own price list (estimate)",
        "inputs.referenceImages": "runware-sdk inputs; count unconfirmed (9 vs 8): the server's call",
        "providerSettings.bfl": "unconfirmed for FLUX.2: passed through",
    },
    example={
        "taskType": "imageInference",
        "taskUUID": "4dd729da-e356-413b-8e48-794bee98a888",
        "model": "bfl:5@1",
        "positivePrompt": "A monumental cathedral formed entirely from white salt and translucent mineral crystal",
        "width": 1024,
        "height": 1024,
    },
)
