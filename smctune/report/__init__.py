"""What a sweep measured, from its run directory; needs neither Ray nor torch. In reading order:

    load           the run's records (sweep.json, results/) read back and checked
    cell_stats     seed statistics per (method, sparsity) cell and the dense baseline
    criterion      when a level no longer matches dense: tolerance, optional Welch test
    analysis       the failing sparsity of each method: one Summary per architecture
    similarity     mask overlap and layerwise-sparsity correlation between methods
    facts          beside the summary: similarity, paper values, compute, completeness
    tables         the text table and the per-layer tables; marks: the symbols they print
    results_json   results.json, the machine-readable report (a versioned schema)
    figures/       every PNG: registry.FIGURES names each one, its file and its drawer
    build          the document's blocks; document renders them to report.md and report.html
    write          write_report: the entry point that runs the steps above in order
"""
