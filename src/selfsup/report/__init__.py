"""Report: plots and pages a person would rather look at than read."""
