# Training stage: one job per fine-tuning run (task × model × METHOD[-TAG]). Threads, memory, wall
# time and GPUs come from the config's per-size, per-method table; full fine-tuning starts one
# process per GPU through accelerate. A killed job resumes from results/train/.../{run}.resume/,
# which is not an output, so the clean-up of incomplete outputs leaves it for the re-run.


rule train:
    input:
        unpack(train_inputs),
    output:
        best="results/train/{task}/{model}/{run}/best.json",
        history="results/train/{task}/{model}/{run}/history.jsonl",
        summary="results/train/{task}/{model}/{run}/run.json",
        settings="results/train/{task}/{model}/{run}/config.json",
        checkpoint=directory("results/train/{task}/{model}/{run}/checkpoint"),
    log:
        "results/logs/train/{task}/{model}/{run}.log",
    benchmark:
        "results/benchmarks/train/{task}/{model}/{run}.tsv"
    threads: train_resource("threads", 1)
    resources:
        mem_mb=train_resource("mem_mb", 8000),
        runtime=train_resource("runtime", 240),
        gpu=train_resource("gpu", 0),
        gpu_model=train_resource("gpu_model", ""),
    params:
        configfiles=CONFIGFILES,
        settings=train_settings_hash,
    shell:
        "tunebench train --config {params.configfiles} --task {wildcards.task} --model {wildcards.model}"
        " --run {wildcards.run} --out-dir $(dirname {output.best}) --data-dir $(dirname {input.data[0]})"
        " > {log} 2>&1"
