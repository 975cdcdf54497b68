"""docs/asyncapi.yaml must stay true to the code: its channels are the topics Topics builds, and its
message schemas have exactly the fields and tags of the wire message classes.

Other-language teams generate clients from that file, so drift between it and edgefleet/wire is a bug
in the contract, caught here rather than by a device refusing their messages.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import msgspec
import pytest

from edgefleet.wire import ErrorCode, ParsedTopic, TopicKind, Topics, decode
from edgefleet.wire import messages as wire_messages
from edgefleet.wire import streams as wire_streams
from edgefleet.wire.tensors import CONTENT_TYPE, DTYPES

yaml = pytest.importorskip("yaml", reason="PyYAML is needed to read docs/asyncapi.yaml (pip install pyyaml)")

DOC_PATH = Path(__file__).resolve().parents[1] / "docs" / "asyncapi.yaml"
SAMPLE = {"prefix": "ef", "tenant": "ocr", "device": "box-1", "client": "ef-sdk-0123abcd"}


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    loaded = yaml.safe_load(DOC_PATH.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        assert isinstance(node, dict) and part in node, f"unresolved $ref {ref}"
        node = node[part]
    return node


def walk_refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        refs = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return refs + [r for v in node.values() for r in walk_refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in walk_refs(v)]
    return []


def _wire_vars() -> dict[str, object]:
    return {**vars(wire_messages), **vars(wire_streams)}


def tagged_classes() -> dict[str, type[msgspec.Struct]]:
    out: dict[str, type[msgspec.Struct]] = {}
    for name, obj in _wire_vars().items():
        if isinstance(obj, type) and issubclass(obj, msgspec.Struct) and not name.startswith("_"):
            tag = obj.__struct_config__.tag
            if isinstance(tag, str) and obj.__struct_config__.tag_field == "type":
                out[tag] = obj
    return out


def kind_tagged_classes() -> dict[str, type[msgspec.Struct]]:
    """Parts of messages tagged by ``kind`` (a tenant's declared demand)."""
    out: dict[str, type[msgspec.Struct]] = {}
    for name, obj in _wire_vars().items():
        if (isinstance(obj, type) and issubclass(obj, msgspec.Struct) and not name.startswith("_")
                and obj.__struct_config__.tag_field == "kind"):
            out[name] = obj
    return out


def build(topics: Topics, parsed: ParsedTopic) -> str:
    builders = {
        TopicKind.INFER: topics.infer,
        TopicKind.STATUS: topics.status,
        TopicKind.TELEMETRY: topics.telemetry,
        TopicKind.COMMANDS: topics.commands,
        TopicKind.ACKS: topics.acks,
        TopicKind.REPLIES: topics.replies,
        TopicKind.RESULTS: topics.results,
        TopicKind.EVENTS: topics.events,
        TopicKind.HANDOVER: topics.handover,
    }
    if parsed.kind is TopicKind.OPS:
        return topics.ops()
    if parsed.kind is TopicKind.MODEL:
        return topics.model()
    return builders[parsed.kind](parsed.name)


def test_is_asyncapi_3(doc: dict[str, Any]) -> None:
    assert doc["asyncapi"] == "3.0.0"
    assert {"info", "channels", "operations", "components"} <= set(doc)


def test_every_ref_resolves(doc: dict[str, Any]) -> None:
    refs = walk_refs(doc)
    assert len(refs) > 50
    for ref in refs:
        resolve(doc, ref)


def test_channel_addresses_are_topics_built_by_topics(doc: dict[str, Any]) -> None:
    topics = Topics(SAMPLE["prefix"])
    kinds: set[TopicKind] = set()
    for name, channel in doc["channels"].items():
        address = channel["address"]
        params = set(re.findall(r"\{(\w+)\}", address))
        assert params == set(channel.get("parameters", {})), f"{name}: parameters do not match {address}"
        concrete = address.format(**SAMPLE)
        parsed = topics.parse(concrete)  # raises WireError for anything Topics does not know
        assert build(topics, parsed) == concrete, name
        kinds.add(parsed.kind)
    assert kinds == set(TopicKind), "every kind of topic has a channel"


def test_shared_subscription_is_documented(doc: dict[str, Any]) -> None:
    form = Topics("PFX").infer_shared("tnt").replace("PFX", "{prefix}").replace("tnt", "{tenant}")
    assert form == "$share/ef-{tenant}/{prefix}/v1/tenants/{tenant}/infer"
    assert form in doc["channels"]["tenantInfer"]["description"]
    assert form in doc["operations"]["serveTenant"]["description"]


def test_every_message_type_tag_has_a_schema(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    documented = {
        s["properties"]["type"]["const"]: key
        for key, s in schemas.items()
        if isinstance(s, dict) and "const" in s.get("properties", {}).get("type", {})
    }
    tags = tagged_classes()
    assert tags, "found no tagged message classes"
    assert set(tags) == set(documented)
    messages = doc["components"]["messages"]
    payload_refs = {m["payload"]["$ref"].rsplit("/", 1)[1] for m in messages.values()}
    for tag, key in documented.items():
        assert key in payload_refs, f"schema {key} ({tag!r}) is not the payload of any message"


def plain_classes() -> dict[str, type[msgspec.Struct]]:
    out: dict[str, type[msgspec.Struct]] = {}
    for name, obj in _wire_vars().items():
        if (isinstance(obj, type) and issubclass(obj, msgspec.Struct) and not name.startswith("_")
                and obj.__struct_config__.tag is None):
            out[name] = obj
    return out


@pytest.mark.parametrize("kind", ["tagged", "plain", "kind"])
def test_schemas_have_the_fields_of_the_classes(doc: dict[str, Any], kind: str) -> None:
    schemas = doc["components"]["schemas"]
    classes = {"tagged": tagged_classes, "plain": plain_classes, "kind": kind_tagged_classes}[kind]()
    assert classes
    tag = {"tagged": {"type"}, "plain": set(), "kind": {"kind"}}[kind]
    for tag_or_name, cls in classes.items():
        key = cls.__name__
        assert key in schemas, f"no schema {key} for {tag_or_name!r}"
        schema = schemas[key]
        if kind == "kind":
            assert schema["properties"]["kind"]["const"] == cls.__struct_config__.tag, key
        fields = msgspec.structs.fields(cls)
        names = {f.encode_name for f in fields} | tag
        required = {f.encode_name for f in fields if f.required} | tag
        assert set(schema["properties"]) == names, f"{key}: fields differ"
        assert set(schema.get("required", [])) == required, f"{key}: required fields differ"


def test_examples_decode_with_the_wire_codec(doc: dict[str, Any]) -> None:
    tags = tagged_classes()
    seen = 0
    for name, message in doc["components"]["messages"].items():
        for example in message.get("examples", []):
            payload = example["payload"]
            cls = tags[payload["type"]]
            decoded: object = decode(json.dumps(payload).encode(), cls)
            assert isinstance(decoded, cls), name
            seen += 1
    assert seen >= 5


def test_frame_vocabulary_matches_the_code(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    assert schemas["ErrorCode"]["enum"] == [c.value for c in ErrorCode]
    assert schemas["TensorSpec"]["properties"]["dtype"]["enum"] == list(DTYPES)
    for name in ("InferRequest", "InferResult", "InferError"):
        assert doc["components"]["messages"][name]["contentType"] == CONTENT_TYPE
    retryable = {c.value for c in ErrorCode if c.retryable}
    description = schemas["ErrorCode"]["description"]
    assert all(code in description for code in retryable)
