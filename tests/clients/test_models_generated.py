"""The SDK's models are generated from the app's OpenAPI document: regenerating must give the committed file
(run ``python clients/python/generate_models.py`` after changing a schema), and every shape parses."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

GENERATOR = Path(__file__).resolve().parents[2] / "clients" / "python" / "generate_models.py"


def generator():
    spec = importlib.util.spec_from_file_location("generate_models", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_models_match_the_apps_openapi_document():
    gen = generator()
    document = gen.load_document(None)
    assert "SessionObject" in document.get("components", {}).get("schemas", {}), "the contract lost its models"
    assert gen.render(document) == gen.TARGET.read_text(), "run: python clients/python/generate_models.py"


def test_generator_translates_the_schema_subset():
    gen = generator()
    text = gen.render({"info": {"version": "9"}, "components": {"schemas": {
        "Thing": {"type": "object", "required": ["id", "kind"], "properties": {
            "id": {"type": "string"}, "kind": {"enum": ["a", "b"]}, "ok": {"const": True},
            "json": {"type": "integer"}, "tags": {"type": "array", "items": {"type": "string"}},
            "child": {"anyOf": [{"$ref": "#/components/schemas/Child"}, {"type": "null"}]},
            "meta": {"type": "object", "additionalProperties": True, "default": {}}}},
        "Child": {"type": "object", "properties": {"n": {"type": "number", "description": "a number"}}},
    }}})
    namespace: dict = {}
    exec(compile(text, "models", "exec"), namespace)
    thing = namespace["Thing"].model_validate({"id": "x", "kind": "a", "json": 3, "child": {"n": 1.5}, "new": 1})
    assert thing.child.n == 1.5 and thing.json_ == 3 and thing.meta == {} and thing.tags is None
    assert thing.model_extra == {"new": 1}  # unknown fields are kept (a newer server)
    with pytest.raises(Exception):
        namespace["Thing"].model_validate({"id": "x", "kind": "c"})
