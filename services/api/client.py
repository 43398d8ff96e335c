"""Talking to a raynas search service: a channel (TLS when asked), the bearer token on every call."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import grpc

from .proto import raynas_pb2_grpc as pb_grpc


def read_token(token_file: str | None, token_env: str | None) -> str | None:
    """The bearer token from a file (first line) or an environment variable; None if neither is given."""
    if token_file and token_env:
        raise ValueError("give --token-file or --token-env, not both")
    if token_file:
        try:
            token = Path(token_file).read_text().strip()
        except OSError as exc:
            raise ValueError(f"--token-file {token_file}: {exc.strerror}") from None
        if not token:
            raise ValueError(f"--token-file {token_file}: empty")
        return token
    if token_env:
        token = os.environ.get(token_env, "").strip()
        if not token:
            raise ValueError(f"--token-env {token_env}: the variable is not set or empty")
        return token
    return None


class SearchClient:
    def __init__(self, address: str, token: str | None = None, tls_ca: str | None = None, tls: bool = False,
                 timeout_s: float = 30.0) -> None:
        if tls or tls_ca:
            roots = Path(tls_ca).read_bytes() if tls_ca else None
            self.channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(root_certificates=roots))
        else:
            self.channel = grpc.insecure_channel(address)
        self.stub = pb_grpc.SearchServiceStub(self.channel)
        self.metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self.timeout_s = timeout_s

    def call(self, method: str, request: Any) -> Any:
        return getattr(self.stub, method)(request, metadata=self.metadata, timeout=self.timeout_s)

    def watch(self, request: Any, timeout_s: float | None = None):
        return self.stub.WatchSearch(request, metadata=self.metadata, timeout=timeout_s)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "SearchClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
