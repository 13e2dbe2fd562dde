"""Evaluation of a policy on the shipped test sets (method §7): ``rlmec eval``."""
