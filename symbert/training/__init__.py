"""The training step: its replay, the model states, ZeRO, the device runtime, exact arithmetic, and the
solvers on top of them (fit, sweep, the layout planner)."""
