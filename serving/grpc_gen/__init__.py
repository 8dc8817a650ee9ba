"""Stubs generated from proto/embedserve/v1/embedding.proto by `make proto`; never edited by hand."""
