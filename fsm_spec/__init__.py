"""The raftfsm specification: `raft.yaml` and the loader that validates it."""

from fsm_spec.loader import DEFAULT_SPEC, Problem, SpecError, load_spec, load_spec_with_warnings
from fsm_spec.model import Spec

__all__ = ["DEFAULT_SPEC", "Problem", "Spec", "SpecError", "load_spec", "load_spec_with_warnings"]
