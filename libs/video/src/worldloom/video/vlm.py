"""A vision-language model over HTTP, for the annotate stage's optional captions.

Any OpenAI-compatible chat API that accepts image_url content works (vLLM, Ollama, TGI...), so the
stage needs no model of its own; the stage only sees a ``(jpeg, hint) -> caption`` callable.
"""

from __future__ import annotations

import base64
import time

import httpx

#: answers worth asking again: rate limited, or the server (a model loading, a proxy) failing for now
_TRANSIENT = frozenset({408, 425, 429, 500, 502, 503, 504})


class OpenAIVisionCaptioner:
    """Captions a JPEG with one chat completion; raises on an HTTP error or an empty answer. Transient
    failures (connection, timeout, 429, 5xx) are retried ``retries`` times with doubling pauses first, so a
    hiccup does not cost a clip its caption; the caller records a fallback when even that fails."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout_s: float = 30.0,
                 prompt: str = "Describe this video frame in one factual sentence for a dataset caption.",
                 retries: int = 2, retry_backoff_s: float = 1.0) -> None:
        self.client = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout_s,
                                   headers={"Authorization": f"Bearer {api_key}"} if api_key else {})
        self.model = model
        self.prompt = prompt
        self.retries, self.retry_backoff_s = retries, retry_backoff_s

    def __call__(self, jpeg: bytes, hint: str) -> str:
        for attempt in range(self.retries + 1):
            try:
                return self._caption(jpeg, hint)
            except (httpx.TransportError, httpx.HTTPStatusError) as exc:
                transient = not isinstance(exc, httpx.HTTPStatusError) or exc.response.status_code in _TRANSIENT
                if not transient or attempt == self.retries:
                    raise
                time.sleep(self.retry_backoff_s * 2**attempt)
        raise AssertionError("unreachable")

    def _caption(self, jpeg: bytes, hint: str) -> str:
        content = [
            {"type": "text", "text": self.prompt + (f" Context: {hint}" if hint else "")},
            {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()}},
        ]
        resp = self.client.post("/chat/completions", json={
            "model": self.model, "max_tokens": 96, "temperature": 0.0,
            "messages": [{"role": "user", "content": content}],
        })
        resp.raise_for_status()
        text = resp.json()["choices"][0]["message"]["content"]
        if not isinstance(text, str) or not text.strip():
            raise ValueError("the model returned an empty caption")
        return " ".join(text.split())[:1000]

    def close(self) -> None:
        self.client.close()
