# Paper stage: the LaTeX write-up, with every number, table and figure generated from results/.
# Needs latexmk and pdflatex (Debian: latexmk texlive-latex-base texlive-latex-recommended
# texlive-fonts-recommended); without them the rule stops with one sentence saying so.


rule paper:
    input:
        unpack(claims_input),
        **paper_inputs(),
        metrics="results/metrics.csv",
        curves="results/learning_curves.csv",
        manifests=expand("results/data/{task}/manifest.json", task=DATA_TASKS),
        settings=RESULTS_STAMP,
    output:
        report(
            "results/paper/tunebench.pdf",
            caption="../report/paper.rst",
            category="Paper",
            labels={"document": "paper"},
        ),
    log:
        "results/logs/paper/paper.log",
    params:
        configfiles=CONFIGFILES,
        settings=tb_digests.results_hash(EXPERIMENT),
    shell:
        "tunebench paper --config {params.configfiles} --metrics {input.metrics} --curves {input.curves}"
        " --tables-dir results/tables --figures-dir results/figures --data-dir results/data"
        " --build-dir results/paper/build"
        " --out {output} > {log} 2>&1"
