"""Queueing theory without simulation: exact formulas (`exact`) and the analytic baseline
(`analytic`) that the simulator is tested against and the models are compared with."""
