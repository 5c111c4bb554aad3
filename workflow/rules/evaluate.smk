# Evaluation stage, two jobs per evaluated run (task × model × baseline[-VARIANT] or METHOD[-TAG]).
# generate: the model's outputs on the test split (generations.jsonl, generation.json). A prompted baseline
# needs only the data; a fine-tuned run also waits for its best.json and reads the checkpoint next to it
# (results/train/{task}/{model}/{run}/, the command's default). Threads, memory, wall time and the GPUs of
# one node come from the config's per-size resources.evaluate table. An API baseline whose requests failed
# for some rows runs again on the next invocation (failed_rows).
# score: verdicts and metrics from those outputs (predictions.jsonl, metrics.json). It takes seconds and no
# model, so it is a local rule (run where Snakemake runs, never queued on a cluster); a scorer's settings or
# code re-run it alone, never the generation.
from tunebench.stages import api as tb_api


localrules:
    score,


rule generate:
    input:
        unpack(generate_inputs),
    output:
        generations="results/eval/{task}/{model}/{run}/generations.jsonl",
        facts="results/eval/{task}/{model}/{run}/generation.json",
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
        settings=generate_settings_hash,
        failed_rows=tb_api.retry_param,
    shell:
        "tunebench evaluate --generate-only --config {params.configfiles} --task {wildcards.task}"
        " --model {wildcards.model} --run {wildcards.run} --data-dir $(dirname {input.data[0]})"
        " --out-dir $(dirname {output.facts}) --threads {threads} --api-cache results/api_cache > {log} 2>&1"


rule score:
    input:
        generations="results/eval/{task}/{model}/{run}/generations.jsonl",
        facts="results/eval/{task}/{model}/{run}/generation.json",
        test="results/data/{task}/test.jsonl",
        settings=score_stamp,
    output:
        predictions="results/eval/{task}/{model}/{run}/predictions.jsonl",
        metrics="results/eval/{task}/{model}/{run}/metrics.json",
    log:
        "results/logs/score/{task}/{model}/{run}.log",
    threads: 1
    params:
        configfiles=CONFIGFILES,
        settings=score_settings_hash,
    shell:
        "tunebench score {wildcards.task} --generations $(dirname {input.facts}) --config {params.configfiles}"
        " --data-dir $(dirname {input.test}) > {log} 2>&1"
