"""The components this plugin registers: ways to turn a name into a greeting."""

from __future__ import annotations


def plain(who: str) -> str:
    return f"Hello, {who}!"


def shout(who: str) -> str:
    return f"HELLO, {who.upper()}!"
