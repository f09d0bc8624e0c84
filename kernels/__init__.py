"""Kernel catalogue (TFLite builtin ops, their versions, op sets and minimum runtimes), op-set targets,
and the selective-registration generator (ops.json, register_ops.cc). See catalogue.py for the sources."""
