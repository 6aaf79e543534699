"""Update rules, one module per paper algorithm (see docs/architecture.md)."""
