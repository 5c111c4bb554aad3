# Settings stamps: one small file per job recording the settings its outputs depend on, named after their
# digest (tunebench.config.digests), an input of that job and a target of `all`. A config edit changes the
# digest; the new stamp is missing, so its job writes it and every job downstream runs again, even in a
# results/ copied without Snakemake's metadata. The stamps of other settings beside it go, so that going
# back to earlier settings writes theirs anew. Written by jobs, never while the workflow is parsed: a dry
# run, or a run that another's lock refuses, leaves results/ as it was. Each job is a shell one-liner, local
# to the main process: a run directive would start a new Snakemake per stamp.


localrules:
    settings_data,
    settings_train,
    settings_generate,
    settings_score,
    settings_results,


rule settings_data:
    output:
        "results/settings/data/{task}/{digest}.json",
    log:
        "results/logs/settings/data/{task}/{digest}.log",
    params:
        stamp=stamp_text(tb_digests.data_settings),
    shell:
        STAMP_COMMAND


rule settings_train:
    output:
        "results/settings/train/{task}/{model}/{run}/{digest}.json",
    log:
        "results/logs/settings/train/{task}/{model}/{run}/{digest}.log",
    params:
        stamp=stamp_text(tb_digests.train_settings),
    shell:
        STAMP_COMMAND


rule settings_generate:
    output:
        "results/settings/generate/{task}/{model}/{run}/{digest}.json",
    log:
        "results/logs/settings/generate/{task}/{model}/{run}/{digest}.log",
    params:
        stamp=stamp_text(tb_digests.generate_settings),
    shell:
        STAMP_COMMAND


rule settings_score:
    output:
        "results/settings/score/{task}/{model}/{run}/{digest}.json",
    log:
        "results/logs/settings/score/{task}/{model}/{run}/{digest}.log",
    params:
        stamp=stamp_text(tb_digests.score_settings),
    shell:
        STAMP_COMMAND


rule settings_results:
    output:
        "results/settings/results/{digest}.json",
    log:
        "results/logs/settings/results/{digest}.log",
    params:
        stamp=stamp_text(tb_digests.results_settings),
    shell:
        STAMP_COMMAND
