# Evaluation stage: one job per evaluated run (task × model × baseline[-VARIANT] or METHOD[-TAG]).
# A prompted baseline needs only the data; a fine-tuned run also waits for its best.json and reads
# the checkpoint next to it (results/train/{task}/{model}/{run}/, the command's default).
# Threads, memory, wall time and the GPUs of one node come from the config's per-size resources.evaluate table.
# An API baseline whose requests failed for some rows runs again on the next invocation (failed_rows).
from tunebench.stages import api as tb_api


rule evaluate:
    input:
        unpack(eval_inputs),
    output:
        predictions="results/eval/{task}/{model}/{run}/predictions.jsonl",
        metrics="results/eval/{task}/{model}/{run}/metrics.json",
    log:
        "results/logs/eval/{task}/{model}/{run}.log",
    benchmark:
        "results/benchmarks/eval/{task}/{model}/{run}.tsv"
    threads: job_resource("evaluate", "threads", 1)
    resources:
        mem_mb=job_slurm("evaluate", "mem_mb"),
        runtime=job_slurm("evaluate", "runtime"),
        nodes=job_slurm("evaluate", "nodes"),
        gres=job_slurm("evaluate", "gres"),
        gpus=job_slurm("evaluate", "gpus"),
    params:
        configfiles=CONFIGFILES,
        settings=eval_settings_hash,
        failed_rows=tb_api.retry_param,
    shell:
        "tunebench evaluate --config {params.configfiles} --task {wildcards.task} --model {wildcards.model}"
        " --run {wildcards.run} --data-dir $(dirname {input.data[0]})"
        " --out-dir $(dirname {output.metrics}) --threads {threads} --api-cache results/api_cache > {log} 2>&1"
