# Offline staging: with hf_home set, this local rule downloads every hub model and dataset the
# config needs into it (items already there are kept) before any data job; every job then runs
# with HF_HUB_OFFLINE=1 (common.smk). The login node reaches the hub; compute nodes need not.


localrules:
    fetch,


rule fetch:
    output:
        touch("results/staging/fetched"),
    log:
        "results/logs/fetch.log",
    params:
        configfiles=CONFIGFILES,
        hf_home=config["hf_home"],
    shell:
        "HF_HUB_OFFLINE=0 tunebench fetch --config {params.configfiles} --hf-home {params.hf_home:q} > {log} 2>&1"
