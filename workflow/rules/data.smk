# Data stage: one rule per dataset. Each reads the mirror (data.mirror or TUNEBENCH_DATA_MIRROR)
# or the hub, or generates its rows (multiplication), or reads a task's own files (tasks declared
# in the config), and writes three splits and a manifest.
for _task in EXPERIMENT.tasks.names():

    rule:
        name:
            f"data_{_task}"
        input:
            staged_hub,
            settings=tb_digests.data_stamp(EXPERIMENT, _task),
            sources=tb_custom_tasks.source_files(EXPERIMENT, _task),
        output:
            splits=data_files(_task),
            manifest=f"results/data/{_task}/manifest.json",
        log:
            f"results/logs/data/{_task}.log",
        benchmark:
            f"results/benchmarks/data/{_task}.tsv"
        params:
            task=_task,
            configfiles=CONFIGFILES,
            settings=tb_digests.data_hash(EXPERIMENT, _task),
        shell:
            "tunebench data {params.task} --config {params.configfiles} --out-dir $(dirname {output.manifest}) > {log} 2>&1"
