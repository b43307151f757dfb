#!/usr/bin/env python3
"""Checks protocol/openapi.yaml and protocol/asyncapi.yaml (run by scripts/check-specs.sh, in its venv).

1. openapi.yaml is valid OpenAPI 3.1 (openapi-spec-validator).
2. asyncapi.yaml is valid against the vendored AsyncAPI 3.0.0 JSON Schema (jsonschema, draft-07; every
   $ref is resolved inside the vendored file; retrieving anything else is refused).
3. openapi.yaml describes the blob store of attachments.md sections 4.2 to 4.4: every method of /v1/uploads,
   /v1/uploads/{id} and /v1/blobs/{id} with every status and header that prose names (BLOB_STORE below),
   Tus-Resumable and Cache-Control on every answer under /v1/uploads, the bearer token where it is needed.
4. asyncapi.yaml agrees with protocol/flitz_wire.proto: one AsyncAPI message per `Frame.body` kind and no
   other, in the right direction (client -> relay: `send`; relay -> client: `receive`; replies only relay ->
   client); every protobuf message and enum mirrored as a schema with the same fields, field numbers and
   types; every ErrorCode in the Error schema's enum.
5. Each check is also run on a deliberately broken copy, which must fail: a check that cannot fail proves
   nothing.

Prints one line per check and exits 1 if any failed. No network access: sockets are disabled before any
document is read.
"""

from __future__ import annotations

import copy
import json
import re
import socket
import sys
from importlib.metadata import version
from pathlib import Path

import yaml
from jsonschema import validators
from jsonschema.exceptions import best_match
from openapi_spec_validator import OpenAPIV31SpecValidator
from referencing import Registry
from referencing.exceptions import NoSuchResource

ROOT = Path(__file__).resolve().parent.parent
PROTOCOL = ROOT / "protocol"
OPENAPI = PROTOCOL / "openapi.yaml"
ASYNCAPI = PROTOCOL / "asyncapi.yaml"
ASYNCAPI_SCHEMA = PROTOCOL / "third_party" / "asyncapi" / "asyncapi-3.0.0-without-id.json"
WIRE_PROTO = PROTOCOL / "flitz_wire.proto"

# Additions asyncapi.yaml may describe before flitz_wire.proto has them (none today). Tolerated only in
# this direction: anything the proto has that asyncapi.yaml lacks always fails.
ANNOUNCED: set[str] = set()

# attachments.md sections 4.2 to 4.4, as openapi.yaml must describe them: per (path, method), the request
# headers, whether the bearer token is needed, and per status the answer headers it must declare.
BLOB_STORE: dict[tuple[str, str], dict] = {
    ("/v1/uploads", "options"): {"request": [], "token": False, "responses": {
        "204": ["Tus-Version", "Tus-Extension", "Tus-Max-Size", "Tus-Checksum-Algorithm"]}},
    ("/v1/uploads", "post"): {"request": ["Tus-Resumable", "Upload-Length", "Upload-Metadata", "Upload-Defer-Length",
                                          "Upload-Checksum"], "token": True, "responses": {
        "201": ["Location", "Upload-Offset", "Upload-Expires"], "400": [], "401": [], "412": ["Tus-Version"],
        "413": ["Tus-Max-Size", "Flitz-Quota-Bytes", "Flitz-Quota-Used-Bytes"], "415": [], "460": []}},
    ("/v1/uploads/{id}", "head"): {"request": ["Tus-Resumable"], "token": True, "responses": {
        "200": ["Upload-Offset", "Upload-Length", "Upload-Expires"], "401": [], "404": [], "412": ["Tus-Version"]}},
    ("/v1/uploads/{id}", "patch"): {"request": ["Tus-Resumable", "Upload-Offset", "Upload-Checksum"], "token": True, "responses": {
        "204": ["Upload-Offset"], "400": [], "401": [], "404": [], "409": ["Upload-Offset"], "412": ["Tus-Version"],
        "413": [], "415": [], "460": []}},
    ("/v1/uploads/{id}", "delete"): {"request": ["Tus-Resumable"], "token": True, "responses": {
        "204": [], "401": [], "404": [], "412": ["Tus-Version"]}},
    ("/v1/blobs/{id}", "get"): {"request": ["Range"], "token": False, "responses": {
        "200": ["Content-Type", "Content-Length", "Accept-Ranges", "Cache-Control"],
        "206": ["Content-Range", "Content-Length", "Cache-Control"], "404": [], "416": ["Content-Range"]}},
    ("/v1/blobs/{id}", "head"): {"request": [], "token": False, "responses": {
        "200": ["Content-Length", "Accept-Ranges", "Cache-Control"], "404": []}},
}

SCALARS = {"uint32", "uint64", "int32", "int64", "bool", "string", "bytes"}
CLIENT_TO_RELAY = "client -> relay"
RELAY_TO_CLIENT = "relay -> client"


class NetworkRefused(Exception):
    pass


def refuse_network(*_args, **_kwargs):
    raise NetworkRefused("network access during spec checks")


# ---------------------------------------------------------------------------------------------------------
# flitz_wire.proto (the subset of proto3 it uses: top-level messages and enums, one oneof in Frame)


def code_braces(line: str) -> int:
    code = line.split("//")[0]
    return code.count("{") - code.count("}")


def parse_proto(text: str) -> dict:
    """Returns {"messages": {name: {field: (label, type, number, oneof)}}, "enums": {name: {value: number}},
    "directions": {body field: direction}}. Direction comes from the `// relay -> client` and
    `// client -> relay` comments inside `oneof body`."""
    messages: dict[str, dict] = {}
    enums: dict[str, dict] = {}
    directions: dict[str, str] = {}
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)  # block comments (they never carry a direction)
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        start = re.match(r"^(message|enum)\s+(\w+)\s*\{(.*)$", line)
        if not start:
            i += 1
            continue
        kind, name, rest = start.groups()
        body = [rest]
        depth = 1 + code_braces(rest)
        while depth > 0:
            i += 1
            body.append(lines[i])
            depth += code_braces(lines[i])
        i += 1
        if kind == "enum":
            values = {}
            for item in body:
                code = item.split("//")[0]
                m = re.match(r"^\s*(\w+)\s*=\s*(\d+)\s*;", code)
                if m:
                    values[m.group(1)] = int(m.group(2))
            enums[name] = values
            continue
        fields = {}
        oneof = None
        direction = None
        for item in body:
            comment = item.split("//", 1)[1].strip() if "//" in item else ""
            code = item.split("//")[0]
            if re.match(r"^\s*(message|enum|map\s*<)", code):
                raise SystemExit(f"check_specs.py: {name} in flitz_wire.proto uses a nested type or a map; teach parse_proto")
            if oneof and comment in (CLIENT_TO_RELAY, RELAY_TO_CLIENT) and not code.strip():
                direction = comment
            m = re.match(r"^\s*oneof\s+(\w+)\s*\{", code)
            if m:
                oneof = m.group(1)
                continue
            if oneof and re.match(r"^\s*\}", code):
                oneof = None
                continue
            m = re.match(r"^\s*(repeated\s+|optional\s+)?([\w.]+)\s+(\w+)\s*=\s*(\d+)\s*;", code)
            if m:
                label = (m.group(1) or "").strip()
                fields[m.group(3)] = (label, m.group(2), int(m.group(4)), oneof)
                if oneof == "body" and name == "Frame":
                    directions[m.group(3)] = direction
        messages[name] = fields
    return {"messages": messages, "enums": enums, "directions": directions}


# ---------------------------------------------------------------------------------------------------------
# Checks. Each returns a list of problems (empty: passed).


def check_openapi(doc: dict) -> list[str]:
    errors = sorted(OpenAPIV31SpecValidator(doc).iter_errors(), key=lambda e: list(e.path))
    return [f"{'/'.join(map(str, e.path)) or '(root)'}: {e.message}" for e in errors]


def resolve(doc: dict, node):
    """Follows local `$ref`s (`#/a/b`) until a node without one."""
    seen = 0
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        if not ref.startswith("#/") or seen > 20:
            return None
        node = doc
        for part in ref[2:].split("/"):
            node = node.get(part.replace("~1", "/").replace("~0", "~")) if isinstance(node, dict) else None
        seen += 1
    return node


def check_blob_store(doc: dict) -> list[str]:
    """openapi.yaml has every operation, status and header of attachments.md sections 4.2 to 4.4."""
    problems = []
    paths = doc.get("paths", {})
    schemes = doc.get("components", {}).get("securitySchemes", {})
    for (path, method), want in BLOB_STORE.items():
        op = resolve(doc, paths.get(path, {}).get(method))
        where = f"{method.upper()} {path}"
        if not isinstance(op, dict):
            problems.append(f"{where} is missing")
            continue
        params = [resolve(doc, p) or {} for p in paths[path].get("parameters", []) + op.get("parameters", [])]
        header_params = {p.get("name", "").lower() for p in params if p.get("in") == "header"}
        for header in want["request"]:
            if header.lower() not in header_params:
                problems.append(f"{where}: request header {header} is not a parameter")
        if "{id}" in path and not any(p.get("in") == "path" and p.get("name") == "id" for p in params):
            problems.append(f"{where}: no path parameter 'id'")
        bearer = [name for req in op.get("security", []) for name in req
                  if (schemes.get(name) or {}).get("type") == "http" and (schemes.get(name) or {}).get("scheme") == "bearer"]
        if want["token"] and not bearer:
            problems.append(f"{where}: no bearer security requirement (Authorization: Bearer TOKEN)")
        if not want["token"] and op.get("security"):
            problems.append(f"{where}: needs no token, but declares security")
        responses = op.get("responses", {})
        for status, headers in want["responses"].items():
            response = resolve(doc, responses.get(status))
            if not isinstance(response, dict):
                problems.append(f"{where}: no {status} answer")
                continue
            declared = {h.lower() for h in response.get("headers", {})}
            required = list(headers)
            if path.startswith("/v1/uploads"):
                required += ["Tus-Resumable", "Cache-Control"]
            for header in required:
                if header.lower() not in declared:
                    problems.append(f"{where}: the {status} answer does not declare the header {header}")
    return problems


def refuse_retrieval(uri: str):
    raise NoSuchResource(ref=uri)


def asyncapi_validator(schema: dict):
    cls = validators.validator_for(schema)
    cls.check_schema(schema)
    # An empty registry that refuses to retrieve: every $ref must resolve inside `schema` itself.
    return cls(schema, registry=Registry(retrieve=refuse_retrieval), format_checker=cls.FORMAT_CHECKER)


def check_asyncapi(doc: dict, validator) -> list[str]:
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    problems = []
    for error in errors:
        # oneOf / if-then-else errors hide the useful part in their context: report the most relevant one.
        detail = best_match([error])
        problems.append(f"{'/'.join(map(str, detail.absolute_path)) or '(root)'}: {detail.message}")
    return problems


def ref_name(node: dict, prefix: str) -> str | None:
    ref = node.get("$ref", "") if isinstance(node, dict) else ""
    return ref[len(prefix):] if ref.startswith(prefix) else None


def check_frame_kinds(doc: dict, proto: dict) -> list[str]:
    """One message per Frame.body kind, no other; directions of operations and replies."""
    problems = []
    kinds = proto["directions"]
    if not kinds:
        return ["no `oneof body` fields found in Frame of flitz_wire.proto"]
    for kind, direction in kinds.items():
        if direction is None:
            problems.append(f"proto: Frame.{kind} is under neither '// {CLIENT_TO_RELAY}' nor '// {RELAY_TO_CLIENT}'")
    channels = doc.get("channels", {})
    if list(channels) != ["relay"]:
        problems.append(f"expected exactly one channel 'relay', found {sorted(channels)}")
    channel = channels.get("relay", {})
    if channel.get("address") != "/v1/ws":
        problems.append(f"channel relay: address is {channel.get('address')!r}, not '/v1/ws'")
    channel_messages = channel.get("messages", {})
    components = doc.get("components", {}).get("messages", {})
    for where, names in (("channels.relay.messages", set(channel_messages)), ("components.messages", set(components))):
        for missing in sorted(set(kinds) - names):
            problems.append(f"{where}: no message for Frame body kind '{missing}'")
        for extra in sorted(names - set(kinds)):
            problems.append(f"{where}: '{extra}' is not a Frame body kind in flitz_wire.proto")
    for name, node in channel_messages.items():
        if ref_name(node, "#/components/messages/") != name:
            problems.append(f"channels.relay.messages.{name} does not point to #/components/messages/{name}")
    for name, message in components.items():
        if message.get("contentType") != "application/x-protobuf":
            problems.append(f"message {name}: contentType is not application/x-protobuf")
        if "**Relay learns" not in message.get("description", ""):
            problems.append(f"message {name}: description does not say what the relay learns")
        parts = message.get("payload", {}).get("allOf", [])
        if (len(parts) != 2 or ref_name(parts[0], "#/components/schemas/") != "Frame"
                or parts[1] != {"required": [name]}):
            problems.append(f"message {name}: payload is not allOf [Frame, {{required: [{name}]}}]")
    # Operations: each kind in exactly one operation's `messages`, with the action of its direction.
    used: dict[str, list[str]] = {}
    for op_name, op in doc.get("operations", {}).items():
        if ref_name(op.get("channel", {}), "#/channels/") != "relay":
            problems.append(f"operation {op_name}: channel is not #/channels/relay")
        for node in op.get("messages", []):
            kind = ref_name(node, "#/channels/relay/messages/")
            used.setdefault(kind, []).append(op_name)
            want = "send" if kinds.get(kind) == CLIENT_TO_RELAY else "receive"
            if kind in kinds and op.get("action") != want:
                problems.append(f"operation {op_name}: '{kind}' is {kinds[kind]}, so the action must be '{want}'")
        reply = op.get("reply")
        if op.get("action") == "send" and reply is None:
            problems.append(f"operation {op_name}: a request without a reply")
        if reply is not None:
            if ref_name(reply.get("channel", {}), "#/channels/") != "relay":
                problems.append(f"operation {op_name}: reply channel is not #/channels/relay")
            reply_kinds = [ref_name(n, "#/channels/relay/messages/") for n in reply.get("messages", [])]
            for kind in reply_kinds:
                if kinds.get(kind) != RELAY_TO_CLIENT:
                    problems.append(f"operation {op_name}: reply '{kind}' is not a relay -> client kind")
            if "error" not in reply_kinds:
                problems.append(f"operation {op_name}: reply does not include 'error'")
    for kind in kinds:
        ops = used.get(kind, [])
        if len(ops) != 1:
            problems.append(f"Frame body kind '{kind}' is in {len(ops)} operations {ops}, expected exactly 1")
    for kind in sorted(set(used) - set(kinds), key=str):
        problems.append(f"operations {used[kind]} use '{kind}', which is not a Frame body kind")
    return problems


def expected_type(label: str, type_name: str) -> dict | None:
    """The JSON Schema shape that mirrors a protobuf field type (None: a message or enum reference)."""
    if label == "repeated":
        inner = expected_type("", type_name)
        return {"type": "array", "items": inner if inner is not None else {"$ref": f"#/components/schemas/{type_name}"}}
    if type_name == "bytes":
        return {"type": "string", "contentEncoding": "base64"}
    if type_name == "string":
        return {"type": "string"}
    if type_name == "bool":
        return {"type": "boolean"}
    if type_name in SCALARS:
        return {"type": "integer", "format": type_name}
    return None


def matches(expected: dict, actual: dict) -> bool:
    if expected.get("type") == "array":
        return actual.get("type") == "array" and matches(expected["items"], actual.get("items", {}))
    if "$ref" in expected:
        return actual.get("$ref") == expected["$ref"]
    if expected.get("type") == "string" and "contentEncoding" not in expected and "contentEncoding" in actual:
        return False
    return all(actual.get(k) == v for k, v in expected.items())


def check_mirror(doc: dict, proto: dict, pending: set[str]) -> list[str]:
    """Every protobuf message and enum is a schema with the same fields, numbers, types and values.
    Items in asyncapi.yaml that the proto lacks fail unless they are in ANNOUNCED (collected in `pending`)."""
    problems = []
    schemas = doc.get("components", {}).get("schemas", {})
    described_messages = {n for n, s in schemas.items() if "x-protobuf-message" in s}
    described_enums = {n for n, s in schemas.items() if "x-protobuf-enum" in s}
    for name, schema in schemas.items():
        tag = schema.get("x-protobuf-message", schema.get("x-protobuf-enum"))
        if tag != name:
            problems.append(f"components.schemas.{name}: x-protobuf-message/x-protobuf-enum must be '{name}'")

    def extra(item: str):
        if item in ANNOUNCED:
            pending.add(item)
        else:
            problems.append(f"asyncapi.yaml has {item}, which flitz_wire.proto does not")

    for name, fields in proto["messages"].items():
        schema = schemas.get(name)
        if name not in described_messages:
            problems.append(f"message {name} of flitz_wire.proto has no schema with x-protobuf-message")
            continue
        properties = schema.get("properties", {})
        for field, (label, type_name, number, oneof) in fields.items():
            prop = properties.get(field)
            if prop is None:
                problems.append(f"{name}.{field} (field {number}) is missing from its schema")
                continue
            if prop.get("x-protobuf-field") != number:
                problems.append(f"{name}.{field}: x-protobuf-field is {prop.get('x-protobuf-field')}, the proto says {number}")
            if prop.get("x-protobuf-oneof") != oneof:
                problems.append(f"{name}.{field}: x-protobuf-oneof is {prop.get('x-protobuf-oneof')}, the proto says {oneof}")
            shape = expected_type(label, type_name) or {"$ref": f"#/components/schemas/{type_name}"}
            if not matches(shape, prop):
                problems.append(f"{name}.{field}: schema does not mirror '{(label + ' ' + type_name).strip()}' (expected {json.dumps(shape)})")
        for field in sorted(set(properties) - set(fields)):
            extra(f"field {name}.{field}")
    for name in sorted(described_messages - set(proto["messages"])):
        extra(f"message {name}")
    for name, values in proto["enums"].items():
        schema = schemas.get(name)
        if name not in described_enums:
            problems.append(f"enum {name} of flitz_wire.proto has no schema with x-protobuf-enum")
            continue
        listed = schema.get("enum", [])
        numbers = schema.get("x-protobuf-values", {})
        for value, number in values.items():
            if value not in listed:
                problems.append(f"{name}.{value} is missing from the schema's enum")
            if numbers.get(value) != number:
                problems.append(f"{name}.{value}: x-protobuf-values says {numbers.get(value)}, the proto says {number}")
        for value in sorted(set(listed) - set(values)):
            extra(f"value {name}.{value}")
        if set(listed) != set(numbers):
            problems.append(f"{name}: enum and x-protobuf-values name different values")
    for name in sorted(described_enums - set(proto["enums"])):
        extra(f"enum {name}")
    # Frame: `oneOf` requires exactly one body kind.
    frame_one_of = [tuple(alt.get("required", [])) for alt in schemas.get("Frame", {}).get("oneOf", [])]
    if sorted(frame_one_of) != sorted((kind,) for kind in proto["directions"]):
        problems.append("Frame.oneOf must be one {required: [kind]} per Frame body kind")
    return problems


def check_error_codes(doc: dict, proto: dict) -> list[str]:
    """Every ErrorCode of the proto appears in the enum of the AsyncAPI Error schema's `code`."""
    schemas = doc.get("components", {}).get("schemas", {})
    code = schemas.get("Error", {}).get("properties", {}).get("code", {})
    target = schemas.get(ref_name(code, "#/components/schemas/") or "", code)
    listed = set(target.get("enum", []))
    codes = proto["enums"].get("ErrorCode", {})
    if not codes:
        return ["no ErrorCode enum found in flitz_wire.proto"]
    return [f"ErrorCode {c} = {n} is not in the Error schema's code enum" for c, n in codes.items() if c not in listed]


# ---------------------------------------------------------------------------------------------------------


def shorten(text: str, limit: int = 150) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def main() -> int:
    socket.socket.connect = refuse_network  # type: ignore[method-assign]
    socket.create_connection = refuse_network  # type: ignore[assignment]
    socket.getaddrinfo = refuse_network  # type: ignore[assignment]

    results: list[tuple[bool, str]] = []

    def report(ok: bool, text: str, problems: list[str] = ()):
        results.append((ok, text))
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
        for problem in list(problems)[:20]:
            print(f"      - {shorten(problem)}")
        if len(problems) > 20:
            print(f"      ... and {len(problems) - 20} more")

    def must_fail(text: str, problems: list[str]):
        report(bool(problems), f"broken copy rejected: {text}" + (f" ({shorten(problems[0])})" if problems else " (it passed!)"))

    openapi = yaml.safe_load(OPENAPI.read_text())
    asyncapi = yaml.safe_load(ASYNCAPI.read_text())
    schema = json.loads(ASYNCAPI_SCHEMA.read_text())
    proto = parse_proto(WIRE_PROTO.read_text())
    validator = asyncapi_validator(schema)
    tools = f"openapi-spec-validator {version('openapi-spec-validator')}, jsonschema {version('jsonschema')}"

    problems = check_openapi(openapi)
    report(not problems, f"protocol/openapi.yaml is valid OpenAPI 3.1 ({tools})", problems)

    problems = check_blob_store(openapi)
    report(not problems, f"openapi.yaml describes the blob store of attachments.md 4.2-4.4 ({len(BLOB_STORE)} operations, their statuses and headers, the bearer token)", problems)

    problems = check_asyncapi(asyncapi, validator)
    report(not problems, f"protocol/asyncapi.yaml is valid against the vendored AsyncAPI 3.0.0 JSON Schema ({type(validator).__name__}, offline)", problems)

    problems = check_frame_kinds(asyncapi, proto)
    report(not problems, f"asyncapi.yaml has one message and one operation per Frame body kind of flitz_wire.proto ({len(proto['directions'])}), directions and replies right", problems)

    problems = check_error_codes(asyncapi, proto)
    report(not problems, f"every ErrorCode of flitz_wire.proto ({len(proto['enums'].get('ErrorCode', {}))}) is in the AsyncAPI Error schema's enum", problems)

    pending: set[str] = set()
    problems = check_mirror(asyncapi, proto, pending)
    report(not problems, f"asyncapi.yaml schemas mirror all {len(proto['messages'])} messages and {len(proto['enums'])} enums of flitz_wire.proto (fields, numbers, types, values)", problems)
    if pending:
        print(f"      note: {len(pending)} announced additions are not in flitz_wire.proto yet: {', '.join(sorted(pending))}")
    elif ANNOUNCED:
        print("      note: every announced addition is in flitz_wire.proto now; ANNOUNCED in scripts/check_specs.py can be emptied")

    # The same checks on broken copies, which must fail.
    def delete(path: list):
        def mutate(doc: dict):
            node = doc
            for key in path[:-1]:
                node = node[key]
            del node[path[-1]]
        return mutate

    def assign(path: list, value):
        def mutate(doc: dict):
            node = doc
            for key in path[:-1]:
                node = node[key]
            if path[-1] not in node:
                raise KeyError(path[-1])
            node[path[-1]] = value
        return mutate

    def remove_enum_value(doc: dict):
        doc["components"]["schemas"]["ErrorCode"]["enum"].remove("QUEUE_FULL")

    cases = [
        ("openapi.yaml without its required 'info'", openapi, delete(["info"]), check_openapi),
        ("openapi.yaml with a response lacking its required 'description'", openapi,
         delete(["paths", "/v1/ws", "get", "responses", "101", "description"]), check_openapi),
        ("openapi.yaml whose PATCH 409 lacks Upload-Offset", openapi,
         delete(["paths", "/v1/uploads/{id}", "patch", "responses", "409", "headers", "Upload-Offset"]), check_blob_store),
        ("openapi.yaml whose creation needs no token", openapi,
         delete(["paths", "/v1/uploads", "post", "security"]), check_blob_store),
        ("asyncapi.yaml without its required 'info'", asyncapi, delete(["info"]),
         lambda doc: check_asyncapi(doc, validator)),
        ("asyncapi.yaml with an operation action that is neither send nor receive", asyncapi,
         assign(["operations", "sendRegister", "action"], "publish"), lambda doc: check_asyncapi(doc, validator)),
        ("asyncapi.yaml with a correlation id lacking its required 'location'", asyncapi,
         delete(["components", "correlationIds", "requestId", "location"]), lambda doc: check_asyncapi(doc, validator)),
        ("asyncapi.yaml missing the message of a Frame body kind", asyncapi,
         delete(["channels", "relay", "messages", "ok"]), lambda doc: check_frame_kinds(doc, proto)),
        ("asyncapi.yaml with a client -> relay kind as a receive operation", asyncapi,
         assign(["operations", "sendSubmit", "action"], "receive"), lambda doc: check_frame_kinds(doc, proto)),
        ("asyncapi.yaml whose Error enum lacks an ErrorCode", asyncapi, remove_enum_value,
         lambda doc: check_error_codes(doc, proto)),
        ("asyncapi.yaml with a wrong field number", asyncapi,
         assign(["components", "schemas", "Envelope", "properties", "ciphertext", "x-protobuf-field"], 8),
         lambda doc: check_mirror(doc, proto, set())),
    ]
    for text, document, mutate, check in cases:
        broken = copy.deepcopy(document)
        try:
            mutate(broken)
        except (KeyError, ValueError, TypeError) as error:
            report(False, f"broken copy rejected: {text} (cannot make the broken copy: {error!r})")
            continue
        must_fail(text, check(broken))

    failed = [text for ok, text in results if not ok]
    if failed:
        print(f"spec checks: {len(failed)} of {len(results)} FAILED")
        return 1
    print(f"spec checks: all {len(results)} passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
