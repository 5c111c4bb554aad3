"""A real two-host SLURM cluster on this machine, for the cluster tests.

Two network namespaces are the hosts (``node1``, ``node2``, each with its own UTS namespace so that
``hostname`` differs), joined by veth pairs to a bridge in the root namespace on 10.213.7.0/24, a
subnet that exists only while the test runs. slurmctld listens on the bridge; one slurmd runs in
each namespace; munged and every SLURM file live in the test's temporary directory. Debian's munge,
slurmctld, slurmd and slurm-client are installed when missing; if that fails the test fails.
:func:`two_host_cluster` stops every daemon and removes the namespaces and links it made,
also when the test fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

PACKAGES = ("munge", "slurmctld", "slurmd", "slurm-client")
SUBNET = "10.213.7"  # private, test-only; nothing is routed out of it
BRIDGE = "tbslurm0"
HOSTS = ("node1", "node2")
PORTS = (16817, 16818)  # slurmctld, slurmd: away from the defaults a real installation may use
PARTITION = "tbtest"


def ensure_installed() -> None:
    """Install the SLURM and munge daemons from Debian when they are missing; raise if that fails."""
    needed = ("munged", "slurmctld", "slurmd", "sbatch")
    if all(shutil.which(tool) or Path("/usr/sbin", tool).exists() for tool in needed):
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "-o", "DPkg::Lock::Timeout=600", *PACKAGES],
    ):
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
        if result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(command)} failed; the SLURM test needs {', '.join(PACKAGES)}:\n{result.stderr[-2000:]}"
            )


def _run(*command: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, check=check, timeout=60)


def _netns(host: str) -> str:
    return f"tb{host}"


def _remove_network() -> None:
    """Remove what a previous (killed) run may have left; every name here is this test's own."""
    for index, host in enumerate(HOSTS, start=1):
        for pid in _run("ip", "netns", "pids", _netns(host), check=False).stdout.split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        _run("ip", "netns", "del", _netns(host), check=False)
        _run("ip", "link", "del", f"tbveth{index}", check=False)
    _run("ip", "link", "del", BRIDGE, check=False)


def _make_network() -> None:
    _run("ip", "link", "add", BRIDGE, "type", "bridge")
    _run("ip", "addr", "add", f"{SUBNET}.1/24", "dev", BRIDGE)
    _run("ip", "link", "set", BRIDGE, "up")
    for index, host in enumerate(HOSTS, start=1):
        ns, outer, inner = _netns(host), f"tbveth{index}", f"tbveth{index}n"
        _run("ip", "netns", "add", ns)
        _run("ip", "link", "add", outer, "type", "veth", "peer", "name", inner)
        _run("ip", "link", "set", inner, "netns", ns)
        _run("ip", "link", "set", outer, "master", BRIDGE)
        _run("ip", "link", "set", outer, "up")
        _run("ip", "netns", "exec", ns, "ip", "addr", "add", f"{SUBNET}.{index + 1}/24", "dev", inner)
        _run("ip", "netns", "exec", ns, "ip", "link", "set", inner, "up")
        _run("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")


def _slurm_conf(root: Path, cpus: int, memory_mb: int) -> str:
    nodes = "".join(
        f"NodeName={host} NodeAddr={SUBNET}.{i} CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN\n"
        for i, host in enumerate(HOSTS, start=2)
    )
    return f"""ClusterName=tunebench
SlurmctldHost=tbctl({SUBNET}.1)
SlurmctldPort={PORTS[0]}
SlurmdPort={PORTS[1]}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge/munge.socket
SlurmUser=root
SlurmdUser=root
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool/%n
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd-%n.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
SlurmdParameters=config_overrides
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
JobRequeue=1
MinJobAge=600
KillWait=5
InactiveLimit=0
{nodes}PartitionName={PARTITION} Nodes={",".join(HOSTS)} Default=YES MaxTime=INFINITE State=UP
"""


class Cluster:
    """The running cluster: its config file and the environment that points SLURM's commands at it."""

    def __init__(self, root: Path):
        self.root = root
        self.conf = root / "etc" / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(command, capture_output=True, text=True, env=self.env, check=check, timeout=60)

    def logs(self) -> str:
        return "\n".join(f"--- {path.name}\n{path.read_text()[-3000:]}" for path in sorted(self.root.glob("*.log")))


def _wait_idle(cluster: Cluster, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    states = ""
    while time.monotonic() < deadline:
        states = cluster.run("sinfo", "--noheader", "--Node", "--format=%N %t", check=False).stdout
        if sorted(line.split()[1] for line in states.splitlines() if line.strip()) == ["idle", "idle"]:
            return
        time.sleep(1)
    raise RuntimeError(f"the SLURM nodes did not come up within {timeout} s:\n{states}\n{cluster.logs()}")


@contextlib.contextmanager
def two_host_cluster(root: Path, cpus: int = 2, memory_mb: int = 6000):
    """Start munged, slurmctld and a slurmd on each of two namespaced hosts; stop and remove all of it after."""
    ensure_installed()
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    cluster = Cluster(root)
    daemons: list[subprocess.Popen] = []
    _remove_network()
    try:
        (root / "munge").mkdir(mode=0o700)
        key = root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        for name in ("etc", "state", *(f"spool/{host}" for host in HOSTS)):
            (root / name).mkdir(parents=True)
        # The hosts resolve each other by name (the rendezvous address of a multi-node job is one).
        (root / "hosts").write_text(
            f"127.0.0.1 localhost\n{SUBNET}.1 tbctl\n"
            + "".join(f"{SUBNET}.{i} {host}\n" for i, host in enumerate(HOSTS, start=2))
        )
        cluster.conf.write_text(_slurm_conf(root, cpus, memory_mb))
        _make_network()
        munge = root / "munge"
        daemons.append(
            subprocess.Popen(
                [
                    "munged",
                    "--foreground",
                    "--force",
                    f"--key-file={key}",
                    f"--socket={munge}/munge.socket",
                    f"--pid-file={munge}/munged.pid",
                    f"--log-file={munge}/munged.log",
                    f"--seed-file={munge}/munged.seed",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        for _ in range(50):
            if (munge / "munge.socket").exists():
                break
            time.sleep(0.1)
        # slurmctld accepts to run only on the host its config names.
        daemons.append(
            subprocess.Popen(
                ["unshare", "--uts", "sh", "-c", 'hostname tbctl && exec slurmctld -D -i -f "$SLURM_CONF"'],
                env=cluster.env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        for host in HOSTS:
            # nsenter joins only the host's network namespace (ip netns exec would also hide the
            # cgroup mounts slurmd needs); private UTS and mount namespaces give it its host name,
            # /etc/hosts and /etc/slurm (the plugin's job step hands no SLURM_CONF to srun, which
            # then reads the default path, as on a real cluster).
            daemons.append(
                subprocess.Popen(
                    [
                        "nsenter",
                        f"--net=/var/run/netns/{_netns(host)}",
                        "unshare",
                        "--uts",
                        "--mount",
                        "sh",
                        "-c",
                        f"mount --bind {root}/hosts /etc/hosts && mount --bind {root}/etc /etc/slurm "
                        f"&& hostname {host} && exec slurmd -D -N {host}",
                    ],
                    env=cluster.env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        _wait_idle(cluster)
        yield cluster
    finally:
        for daemon in reversed(daemons):
            if daemon.poll() is None:
                daemon.terminate()
        for daemon in reversed(daemons):
            try:
                daemon.wait(timeout=15)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
        _remove_network()


#: A stand-in for apptainer (tests/apptainer/apptainer: what it is and is not is in its docstring): this
#: machine has no apptainer, and Snakemake refuses a profile naming it where the command is missing.
APPTAINER_STANDIN = Path(__file__).parent / "apptainer"
