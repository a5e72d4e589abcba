"""fingerprint() and reusable(): what makes two requests the same generation, and when an earlier image may answer."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from airflow_provider_bfl.exceptions import BflError, BflInvalidRequestError, BflReuseError
from airflow_provider_bfl.models import registry
from airflow_provider_bfl.storage import references
from airflow_provider_bfl.storage.reuse import fingerprint, fingerprints, reusable, reuse_mode

BASE: dict[str, Any] = {
    "taskType": "imageInference",
    "taskUUID": "d75835ee-cbcd-436e-87d8-1ea7af3d3983",
    "model": "bfl:2@1",
    "positivePrompt": "a red bicycle",
    "width": 1024,
    "height": 768,
    "seed": 7,
}
REFERENCE = "s3://catalogue/products/mug.png"
MUG_SHA = hashlib.sha256(b"the mug").hexdigest()


def changed(path: str, value: Any, base: dict[str, Any] = BASE) -> dict[str, Any]:
    """``base`` with the field at dotted ``path`` set to ``value`` (created as needed)."""
    wire = copy.deepcopy(base)
    *parents, last = path.split(".")
    node = wire
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return wire


def test_the_fingerprint_is_the_sha256_of_the_documented_canonical_json() -> None:
    """Sorted keys, no whitespace, ASCII, the rule's version beside the request without its taskUUID."""
    content = {key: value for key, value in BASE.items() if key != "taskUUID"}
    canonical = json.dumps(
        {"fingerprintVersion": 1, "request": content},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
    )
    assert fingerprint(BASE) == hashlib.sha256(canonical.encode()).hexdigest()


def test_key_order_at_every_level_does_not_matter() -> None:
    nested = {**BASE, "providerSettings": {"bfl": {"promptUpsampling": True, "safetyTolerance": 2}}}
    shuffled = dict(reversed(list(nested.items())))
    shuffled["providerSettings"] = {"bfl": {"safetyTolerance": 2, "promptUpsampling": True}}
    assert list(shuffled) != list(nested)
    assert fingerprint(shuffled) == fingerprint(nested)


def test_the_same_request_has_the_same_fingerprint_in_another_process() -> None:
    """No hash randomisation, no process state: tonight's run finds last night's entries."""
    code = (
        "import json, sys; from airflow_provider_bfl.storage.reuse.fingerprints import fingerprint; "
        "print(fingerprint(json.loads(sys.argv[1])))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    other = subprocess.run(
        [sys.executable, "-c", code, json.dumps(BASE)], capture_output=True, text=True, env=env, check=True
    )
    assert other.stdout.strip() == fingerprint(BASE)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("model", "bfl:5@1"),
        ("taskType", "photoMaker"),
        ("positivePrompt", "a blue bicycle"),
        ("positivePrompt", "a red bicycle "),  # whitespace is part of the prompt
        ("negativePrompt", "blurry"),
        ("width", 1056),
        ("height", 800),
        ("seed", 8),
        ("seed", None),
        ("numberResults", 2),  # two images, seeds 7 and 8: not the same result set
        ("outputFormat", "PNG"),
        ("outputQuality", 80),
        ("providerSettings.bfl.promptUpsampling", True),
        ("providerSettings.bfl.safetyTolerance", 5),
        ("providerSettings.bfl.raw", True),
        ("safety.checkContent", True),
        ("safety.mode", "fast"),
        ("steps", 28),
        ("CFGScale", 4.5),
        ("inputs.referenceImages", ["6f1c2e1a-8e0b-4d5e-9c3a-2b7f0e9d1c44"]),
        ("advancedFeatures.layerDiffuse", True),  # a parameter this version does not know: included
        ("routing.provider", "eu"),
    ],
)
def test_every_generation_relevant_field_changes_the_fingerprint(path: str, value: Any) -> None:
    assert fingerprint(changed(path, value)) != fingerprint(BASE)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("taskUUID", "0f8f0c5e-3a51-4c55-9c37-0c6d1b7e2a11"),
        ("includeCost", True),
        ("deliveryMethod", "async"),
        ("outputType", "base64Data"),
        ("ttl", 3600),
        ("webhookURL", "https://hooks.example.com/bfl?token=secret"),
        ("uploadEndpoint", "https://bucket.s3.amazonaws.com/k?X-Amz-Signature=abc"),
    ],
)
def test_delivery_and_bookkeeping_fields_do_not_change_it(path: str, value: Any) -> None:
    assert fingerprint(changed(path, value)) == fingerprint(BASE)


def test_a_request_as_the_operator_sends_it_has_the_fingerprint_of_the_request_as_written() -> None:
    sent = {
        **BASE,
        "taskUUID": "a3d5b8f1-7e1c-4b0a-9f4e-2c6d8e0a1b3c",
        "deliveryMethod": "async",
        "includeCost": True,
        "uploadEndpoint": "https://bucket.s3.amazonaws.com/key?X-Amz-Signature=abc",
    }
    assert fingerprint(sent) == fingerprint(BASE)


@pytest.mark.parametrize("air", sorted(registry.models()))
def test_every_registered_models_example_is_fingerprinted(air: str) -> None:
    """The example through the model's own request class, as the plan holds it (references by hash)."""
    request = registry.validate_request(dict(registry.models()[air].example))
    wire = request.to_wire()
    located = (wire.get("inputs") or {}).get("referenceImages") or []
    hashes = {location: MUG_SHA for location in located}
    digest = fingerprint(wire, reference_hashes=hashes)
    assert len(digest) == 64 and int(digest, 16) >= 0
    assert fingerprint(request.with_task_uuid(BASE["taskUUID"]).to_wire(), reference_hashes=hashes) == digest


# -- reference images: by content, never by location ----------------------------------------------


def with_references(*locations: str) -> dict[str, Any]:
    return {**BASE, "model": "bfl:3@1", "inputs": {"referenceImages": list(locations)}}


def png(path: Path, colour: str) -> Path:
    Image.new("RGB", (32, 32), colour).save(path, "PNG")
    return path


def test_the_same_picture_in_two_places_is_the_same_reference(tmp_path: Path) -> None:
    """Content hashes from the provider's own reference check, as the operator gets them."""
    first = png(tmp_path / "a.png", "red")
    second = tmp_path / "elsewhere.png"
    second.write_bytes(first.read_bytes())
    found = references.checked([first.as_uri(), second.as_uri()])
    hashes = {reference.locator: reference.sha256 for reference in found}
    assert fingerprint(with_references(first.as_uri()), reference_hashes=hashes) == fingerprint(
        with_references(second.as_uri()), reference_hashes=hashes
    )


def test_a_reference_whose_content_changed_changes_the_fingerprint(tmp_path: Path) -> None:
    picture = png(tmp_path / "mug.png", "red")
    before = {picture.as_uri(): references.checked([picture.as_uri()])[0].sha256}
    png(picture, "blue")  # the product photo was retouched overnight, same file name
    after = {picture.as_uri(): references.checked([picture.as_uri()])[0].sha256}
    wire = with_references(picture.as_uri())
    assert fingerprint(wire, reference_hashes=before) != fingerprint(wire, reference_hashes=after)


def test_the_order_of_references_matters() -> None:
    other = "s3://catalogue/products/lid.png"
    hashes = {REFERENCE: MUG_SHA, other: hashlib.sha256(b"the lid").hexdigest()}
    assert fingerprint(with_references(REFERENCE, other), reference_hashes=hashes) != fingerprint(
        with_references(other, REFERENCE), reference_hashes=hashes
    )


@pytest.mark.parametrize(
    ("wire", "parameter"),
    [
        (with_references(REFERENCE), "inputs.referenceImages[0]"),
        (
            with_references("https://cdn.example.com/mug.png?X-Amz-Signature=secret"),
            "inputs.referenceImages[0]",
        ),
        ({**BASE, "referenceImages": ["file:///srv/products/mug.png"]}, "referenceImages[0]"),  # older layout
        ({**BASE, "seedImage": "https://cdn.example.com/start.png"}, "seedImage"),
        ({**BASE, "advancedFeatures": {"styleImage": "gs://b/style.png"}}, "advancedFeatures.styleImage"),
    ],
)
def test_an_image_named_only_by_its_location_is_refused(wire: dict[str, Any], parameter: str) -> None:
    with pytest.raises(BflReuseError) as caught:
        fingerprint(wire)
    assert caught.value.code == "referenceNotHashed"
    assert caught.value.parameter == parameter
    assert caught.value.task_uuid == BASE["taskUUID"]
    assert "secret" not in str(caught.value)  # a presigned query is never echoed


def test_content_that_names_itself_needs_no_hash() -> None:
    """An uploaded image's UUID, a data URI or base64 is the content's own identity; a prompt is text."""
    by_uuid = with_references("6f1c2e1a-8e0b-4d5e-9c3a-2b7f0e9d1c44")
    inline = with_references("data:image/png;base64,iVBORw0KGgo=")
    url_prompt = {**BASE, "positivePrompt": "https://example.com as a neon sign"}
    assert len({fingerprint(by_uuid), fingerprint(inline), fingerprint(url_prompt)}) == 3


@pytest.mark.parametrize(
    "hashes",
    [{REFERENCE: "not-a-hash"}, {REFERENCE: MUG_SHA[:63]}, {REFERENCE: 12}, {7: MUG_SHA}],
)
def test_a_malformed_reference_hash_is_a_clear_error(hashes: Any) -> None:
    with pytest.raises(BflInvalidRequestError) as caught:
        fingerprint(with_references(REFERENCE), reference_hashes=hashes)
    assert caught.value.parameter == "reference_hashes"


def test_a_hash_in_upper_case_is_the_same_hash() -> None:
    wire = with_references(REFERENCE)
    assert fingerprint(wire, reference_hashes={REFERENCE: MUG_SHA.upper()}) == fingerprint(
        wire, reference_hashes={REFERENCE: MUG_SHA}
    )


def test_a_new_rule_version_invalidates_every_old_fingerprint(monkeypatch: pytest.MonkeyPatch) -> None:
    before = fingerprint(BASE)
    monkeypatch.setattr(fingerprints, "FINGERPRINT_VERSION", 2)
    assert fingerprint(BASE) != before


@pytest.mark.parametrize(
    "wire",
    [
        {**BASE, "steps": float("nan")},
        {**BASE, "advancedFeatures": {1, 2}},
        {**BASE, "advancedFeatures": b"bytes"},
        "not a mapping",
    ],
    ids=["nan", "set", "bytes", "string"],
)
def test_content_that_is_not_plain_json_is_a_provider_error(wire: Any) -> None:
    with pytest.raises(BflError):
        fingerprint(wire)


def test_a_request_nested_to_death_is_a_provider_error_not_a_recursion_error() -> None:
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(5000):
        node["x"] = {}
        node = node["x"]
    with pytest.raises(BflReuseError) as caught:
        fingerprint({**BASE, "advancedFeatures": deep})
    assert caught.value.code == "notFingerprintable"


# -- the policy --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "seeded", "seedless"),
    [
        (False, False, False),
        (None, False, False),
        (True, True, False),
        ("seeded", True, False),
        ("any", True, True),
    ],
)
def test_seedless_requests_are_reused_only_when_any_earlier_image_will_do(
    mode: Any, seeded: bool, seedless: bool
) -> None:
    without_seed = {key: value for key, value in BASE.items() if key != "seed"}
    assert reusable(BASE, mode) is seeded
    assert reusable(without_seed, mode) is seedless


def test_seed_zero_is_a_seed() -> None:
    assert reusable({**BASE, "seed": 0}, True) is True


@pytest.mark.parametrize("mode", ["yes", "True", "false", 1, 0, "ANY", [], {"any": True}])
def test_an_unknown_policy_is_refused_naming_the_allowed_ones(mode: Any) -> None:
    with pytest.raises(BflInvalidRequestError) as caught:
        reuse_mode(mode)
    assert caught.value.parameter == "reuse"
    assert "'any'" in str(caught.value) and "'seeded'" in str(caught.value)
