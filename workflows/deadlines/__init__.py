"""Clocks and what they owe: working days, milestones, notices, the digest, the scheduler."""
