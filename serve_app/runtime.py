"""Per-replica state. Kept in its own module on purpose: Serve pickles the ingress class by value, so a
global assigned from inside it would land in a copy of ``serve_app.app``'s globals; modules are always
pickled by reference, so state set here is seen by every route of the replica."""
from __future__ import annotations

from typing import Any

services: Any = None  # serve_app.app.Services, installed by the ingress constructor
