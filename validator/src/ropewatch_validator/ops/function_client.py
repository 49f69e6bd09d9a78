"""The deployed function's ``boxes`` API, for ``ropewatch annotate fill --function-url``.

A request is what CVAT sends plus the persons' boxes: ``{"image": <base64 frame>, "boxes": [[x1, y1,
x2, y2], ...]}``, with an ``X-Request-Id`` the function logs its ``inference`` record under. The answer
is CVAT's detector items in the order of the boxes; the function, not this client, writes the records.
"""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass

import requests
from requests.adapters import HTTPAdapter
from urllib3.util import Retry

from ropewatch_core.errors import InputError, ServiceError
from ropewatch_core.spec import ATTRIBUTE


@dataclass(frozen=True)
class Classified:
    """The model's value for each box of one frame (in the boxes' order) and the request it was."""

    values: tuple[str, ...]
    p_correct: tuple[float | None, ...]
    request_id: str
    model_version: str | None


class FunctionError(ServiceError):
    """The function did not answer a frame (down, 5xx after retries, not JSON)."""


class FunctionRefused(InputError):
    """The function refused the frame (400: a box outside the frame, an image it cannot decode)."""


class FunctionClassifier:
    def __init__(self, url: str, *, timeout: float = 60.0, retries: int = 3) -> None:
        self.url = url
        self.timeout = timeout
        self.session = requests.Session()
        retry = Retry(
            total=retries, backoff_factor=0.2, status_forcelist=(429, 502, 503, 504), allowed_methods=None
        )
        self.session.mount("http://", HTTPAdapter(max_retries=retry))
        self.session.mount("https://", HTTPAdapter(max_retries=retry))

    def __call__(self, data: bytes, boxes: list[list[float]]) -> Classified:
        rid = str(uuid.uuid4())
        body = {"image": base64.b64encode(data).decode(), "boxes": boxes}
        try:
            response = self.session.post(
                self.url, json=body, headers={"X-Request-Id": rid}, timeout=self.timeout
            )
        except requests.RequestException as exc:
            raise FunctionError(f"function at {self.url}: not answering ({type(exc).__name__})") from None
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if response.status_code == 400:
            message = answer.get("message") if isinstance(answer, dict) else response.text[:200]
            raise FunctionRefused(f"function refused the frame: {message}")
        if response.status_code != 200 or not isinstance(answer, list) or len(answer) != len(boxes):
            raise FunctionError(
                f"function at {self.url}: HTTP {response.status_code}, not one item per box "
                f"({len(boxes)} boxes sent)"
            )
        values = []
        for item in answer:
            found = [a.get("value") for a in item.get("attributes") or [] if a.get("name") == ATTRIBUTE]
            if not found or not isinstance(found[0], str):
                raise FunctionError(f"function at {self.url}: an item without {ATTRIBUTE}")
            values.append(found[0])
        return Classified(
            values=tuple(values),
            p_correct=(None,) * len(values),
            request_id=str(response.headers.get("X-Request-Id") or rid),
            model_version=None,
        )
