"""A/B experiments: statistics (stats), analysis of assignment and event tables (analysis),
the self-contained HTML report (html), the report files (report) and the simulated
experiment on StyleMart's ground-truth shoppers (simulate)."""
