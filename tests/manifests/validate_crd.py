"""Validates custom resources against the openAPIV3Schema of their CustomResourceDefinition.

Used by tests/assets/main.rs with the venv's Python (jsonschema and PyYAML come with
kubernetes-validate). Reads JSON on stdin: {"crds": [paths], "objects": [{"origin", "object"}]}.
Prints one line per problem and exits 1 if there is any; a kind without a CRD is a problem.

Validation is strict like `kubectl apply --validate=strict`: an object's unknown fields are
refused unless the schema preserves unknown fields. CEL rules (x-kubernetes-validations) are not
evaluated.
"""

import copy
import json
import sys

import jsonschema
import yaml

DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
OBJECT_META = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "maxLength": 253, "pattern": DNS_SUBDOMAIN},
        "namespace": {"type": "string", "maxLength": 63, "pattern": DNS_SUBDOMAIN},
        "labels": STRING_MAP,
        "annotations": STRING_MAP,
        "finalizers": {"type": "array", "items": {"type": "string"}},
    },
}


def to_json_schema(s):
    """A Kubernetes structural schema as JSON Schema, closed where Kubernetes would prune."""
    if not isinstance(s, dict):
        return s
    s = {k: v for k, v in s.items() if k not in ("x-kubernetes-validations", "description")}
    preserve = s.pop("x-kubernetes-preserve-unknown-fields", False)
    if s.pop("x-kubernetes-int-or-string", False):
        s.pop("type", None)
        s["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if s.pop("nullable", False) and "type" in s:
        s["type"] = [s["type"], "null"]
    for key in ("properties", "patternProperties"):
        if key in s:
            s[key] = {k: to_json_schema(v) for k, v in s[key].items()}
    for key in ("items", "additionalProperties", "not"):
        if isinstance(s.get(key), dict):
            s[key] = to_json_schema(s[key])
    for key in ("anyOf", "allOf", "oneOf"):
        if key in s:
            s[key] = [to_json_schema(v) for v in s[key]]
    if s.get("type") == "object" and "properties" in s and "additionalProperties" not in s and not preserve:
        s["additionalProperties"] = False
    return s


def load_crds(paths):
    schemas = {}
    for path in paths:
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                if not doc or doc.get("kind") != "CustomResourceDefinition":
                    continue
                spec = doc["spec"]
                for v in spec["versions"]:
                    if not v.get("served", True):
                        continue
                    root = to_json_schema(copy.deepcopy(v["schema"]["openAPIV3Schema"]))
                    root.setdefault("properties", {})["metadata"] = OBJECT_META
                    root["required"] = sorted(set(root.get("required", [])) | {"apiVersion", "kind", "metadata"})
                    key = (f"{spec['group']}/{v['name']}", spec["names"]["kind"])
                    schemas[key] = (root, path)
    return schemas


def main():
    request = json.load(sys.stdin)
    schemas = load_crds(request["crds"])
    problems = 0
    for item in request["objects"]:
        obj, origin = item["object"], item["origin"]
        key = (obj.get("apiVersion"), obj.get("kind"))
        if key not in schemas:
            print(f"{origin}: no schema for kind {key[1]} ({key[0]}): no CRD defines it")
            problems += 1
            continue
        schema, crd = schemas[key]
        validator = jsonschema.Draft202012Validator(schema)
        for e in sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path)):
            path = ".".join(str(p) for p in e.absolute_path) or "(root)"
            print(f"{origin}: {key[1]} {path}: {e.message} (schema from {crd})")
            problems += 1
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
