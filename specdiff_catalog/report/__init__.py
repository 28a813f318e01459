"""What users read and what their other tools open: evaluation, plots, the HTML report, exports."""
