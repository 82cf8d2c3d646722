"""Experiments on circuits: sufficiency, necessity and their random baseline, measured on images.

Torch-free except ``measure`` (the measurement, imported only by workers and benchmarks): ``checks`` asks for a
check (a job of the render queue), ``store`` keeps and reads the results, ``figures`` has the formulas."""
