"""Complete applications built on raftfsm's public API (`import runtime`).

- `examples.lock`: a replicated lock service with fencing tokens; serve it with
  `raftfsm node --app examples.lock:factory` (docs/library.md walks through it).
- `examples/embed.py`: the same lock service embedded in an asyncio program, three
  `RaftServer`s in one process.

This folder is part of the repository, not of the installed package: run from the
repository root (or put it on PYTHONPATH).
"""
