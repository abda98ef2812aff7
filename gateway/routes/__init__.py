"""One module per resource; each exposes `operations() -> list[Operation]` (empty when its proto is absent)."""
