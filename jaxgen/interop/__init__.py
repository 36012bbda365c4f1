"""Interoperability: Hugging Face transformers checkpoints in and out (`jaxgen export`,
`jaxgen import`). torch and transformers are never imported here."""
