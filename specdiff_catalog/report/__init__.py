"""What users read and what their other tools open: evaluation (``evaluate``), plots, the HTML
report, exports."""
