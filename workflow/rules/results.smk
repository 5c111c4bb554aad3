# Results stage: one tidy table of every run, then the tables and figures drawn from it.
# Their names come from RESULTS (common.smk), which the config alone determines; one job
# writes all tables and one all figures, since each job's start-up costs more than its drawing.


rule aggregate:
    input:
        metrics=metrics_files(),
        train=train_records(),
        settings=RESULTS_STAMP,
    output:
        metrics="results/metrics.csv",
        curves="results/learning_curves.csv",
    log:
        "results/logs/results/aggregate.log",
    params:
        configfiles=CONFIGFILES,
        settings=tb_digests.results_hash(EXPERIMENT),
    shell:
        "tunebench aggregate --config {params.configfiles} --results results"
        " --out {output.metrics} --curves {output.curves} > {log} 2>&1"


rule claims:
    input:
        predictions=claims_predictions(),
        settings=RESULTS_STAMP,
    output:
        "results/claims.csv",
    log:
        "results/logs/results/claims.log",
    params:
        configfiles=CONFIGFILES,
        settings=tb_digests.results_hash(EXPERIMENT),
    shell:
        "tunebench claims --config {params.configfiles} --results results --out {output} > {log} 2>&1"


rule tables:
    input:
        unpack(claims_input),
        metrics="results/metrics.csv",
        settings=RESULTS_STAMP,
    output:
        report_tables(),
    log:
        "results/logs/results/tables.log",
    params:
        configfiles=CONFIGFILES,
        settings=tb_digests.results_hash(EXPERIMENT),
    shell:
        "tunebench tables --config {params.configfiles} --metrics {input.metrics}"
        " --out-dir results/tables > {log} 2>&1"


rule figures:
    input:
        unpack(claims_input),
        metrics="results/metrics.csv",
        curves="results/learning_curves.csv",
        settings=RESULTS_STAMP,
    output:
        report_figures(),
    log:
        "results/logs/results/figures.log",
    params:
        configfiles=CONFIGFILES,
        settings=tb_digests.results_hash(EXPERIMENT),
    shell:
        "tunebench figures --config {params.configfiles} --metrics {input.metrics}"
        " --curves {input.curves} --out-dir results/figures > {log} 2>&1"


# Not part of `all`: `snakemake benchmark` measures the hot paths on this machine (tunebench bench).
rule benchmark:
    output:
        directory("results/bench"),
    log:
        "results/logs/bench.log",
    shell:
        "tunebench bench --out-dir {output} > {log} 2>&1"
