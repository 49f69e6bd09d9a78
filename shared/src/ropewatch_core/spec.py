"""Label and attribute names CVAT sees; one place so the function, its spec and the validator agree."""

from __future__ import annotations

PERSON_LABEL = "person"
ATTRIBUTE = "safety_rope_use"
ATTRIBUTE_VALUES = ("wrong", "correct")
FUNCTION_NAME = "safety-rope"


def cvat_spec() -> list[dict]:
    """The `annotations.spec` of function.yaml: CVAT drops any attribute name/value not declared here."""
    return [
        {
            "id": 0,
            "name": PERSON_LABEL,
            "type": "rectangle",
            "attributes": [{"name": ATTRIBUTE, "input_type": "select", "values": list(ATTRIBUTE_VALUES)}],
        }
    ]
