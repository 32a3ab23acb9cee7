"""Compute providers (Vast.ai first): a small async interface with opt-in capabilities.

`base` holds the interface every provider implements; each provider lives in its own
folder and imports its SDK only when a call is made, so the rest of runyard never pays
for it.
"""
