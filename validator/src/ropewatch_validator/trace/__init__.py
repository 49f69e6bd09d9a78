"""`--logs`: the function's inference records joined back to shapes; lifecycle, calibration, thresholds."""
