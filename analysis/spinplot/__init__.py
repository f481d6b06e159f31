"""spinplot: figures and reports from spin's sweep folders and run folders (docs/analysis.md).

Modules: data (reading results.csv / run folders, filters, series), style (the fixed colours and
matplotlib style), figures (one function per figure; each returns the Figure and what it plotted),
cli (analysis/plot.py), report (analysis/report.py).
"""
