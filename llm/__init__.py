"""LLM fine-tuning with the zotheory kernels (importable as ``zotheory.llm``)."""
