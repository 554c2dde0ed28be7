"""The planner: predicted time and cost of a run, and the calibration it predicts from."""
