"""Tests for the recipe launchers in egs/TEMPLATE/utils: parse_options.sh, run.pl, slurm.pl.

The scripts are run for real with subprocess. Slurm cannot run here, so the
slurm.pl tests put a fake ``sbatch`` first on PATH that runs the array tasks
locally, one after another, with SLURM_ARRAY_TASK_ID set.
"""

import json
import os
import re
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

UTILS = Path(__file__).resolve().parents[1] / "egs" / "TEMPLATE" / "utils"
PARSE_OPTIONS = UTILS / "parse_options.sh"
RUN_PL = UTILS / "run.pl"
SLURM_PL = UTILS / "slurm.pl"

HOSTILE = "a b;rm -rf x $(touch y) `touch z` 'q' \"d\" * \\n"
ENDED = re.compile(r"^# Ended \(code (\d+)\) at .+, elapsed time \d+ seconds$")
ACCOUNTING = re.compile(r"^# Accounting: time=\d+ threads=(\d+)$")


def run(cmd, cwd, env=None, timeout=20):
    return subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def write_exe(path, text):
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_scripts_are_executable_with_shebangs():
    for script, interp in [(PARSE_OPTIONS, "bash"), (RUN_PL, "perl"), (SLURM_PL, "perl")]:
        assert os.access(script, os.X_OK), script
        assert script.read_text().splitlines()[0] == f"#!/usr/bin/env {interp}"


# --------------------------------------------------------------------------- parse_options.sh

CALLER = """\
#!/usr/bin/env bash
{strict}
nj=4
foo_bar=default
use_gpu=false
text=""
help_message="Usage: caller.sh [options] <dir>
  --nj N    number of jobs"
. {parse_options}
printf '%s=%s\\0' nj "$nj" foo_bar "$foo_bar" use_gpu "$use_gpu" text "$text"
for a in "$@"; do printf 'ARG=%s\\0' "$a"; done
printf 'LEAKED=%s\\0' "$(compgen -v __po_; declare -F | grep __po_)"
"""


@pytest.fixture
def caller(tmp_path):
    def make(strict=""):
        script = tmp_path / "caller.sh"
        write_exe(script, CALLER.format(strict=strict, parse_options=PARSE_OPTIONS))
        return script

    return make


def parse(caller_script, *args):
    """Runs the caller script; returns (vars dict, positional args list, completed process)."""
    proc = run([caller_script, *args], cwd=caller_script.parent)
    values, positional = {}, []
    for item in proc.stdout.split("\0")[:-1]:
        key, _, value = item.partition("=")
        if key == "ARG":
            positional.append(value)
        else:
            values[key] = value
    return values, positional, proc


def test_parse_options_defaults_and_no_leaks(caller):
    values, positional, proc = parse(caller())
    assert proc.returncode == 0, proc.stderr
    assert values == {"nj": "4", "foo_bar": "default", "use_gpu": "false", "text": "", "LEAKED": ""}
    assert positional == []


def test_parse_options_dash_underscore_and_equals_forms(caller):
    script = caller()
    values, _, proc = parse(script, "--foo-bar", "x", "--nj", "8")
    assert proc.returncode == 0, proc.stderr
    assert (values["foo_bar"], values["nj"]) == ("x", "8")
    values, _, _ = parse(script, "--foo_bar", "y")
    assert values["foo_bar"] == "y"
    values, _, proc = parse(script, "--nj=16", "--foo-bar=a=b c", "--text=")
    assert proc.returncode == 0, proc.stderr
    assert (values["nj"], values["foo_bar"], values["text"]) == ("16", "a=b c", "")


def test_parse_options_unknown_option(caller):
    values, _, proc = parse(caller(), "--nj", "2", "--no-such", "1")
    assert proc.returncode == 1
    assert proc.stderr == "parse_options.sh: unknown option --no-such\n"
    assert values == {}  # the calling script stopped
    _, _, proc = parse(caller(), "--bad$name=1")
    assert proc.returncode == 1
    assert proc.stderr == "parse_options.sh: unknown option --bad$name\n"


def test_parse_options_missing_value(caller):
    _, _, proc = parse(caller(), "--nj")
    assert proc.returncode == 1
    assert "--nj requires a value" in proc.stderr


def test_parse_options_boolean_validation(caller):
    values, _, proc = parse(caller(), "--use-gpu", "true")
    assert proc.returncode == 0 and values["use_gpu"] == "true"
    values, _, proc = parse(caller(), "--use-gpu", "yes")
    assert proc.returncode == 1
    assert proc.stderr == 'parse_options.sh: expected "true" or "false": --use-gpu yes\n'
    assert values == {}


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_parse_options_help(caller, flag):
    values, _, proc = parse(caller(), "--nj", "3", flag, "--no-such")
    assert proc.returncode == 0
    assert proc.stderr == "Usage: caller.sh [options] <dir>\n  --nj N    number of jobs\n"
    assert values == {}


def test_parse_options_values_are_not_evaluated(caller, tmp_path):
    script = caller()
    for value in [HOSTILE, "*", "--looks-like-an-option", "%s\\t"]:
        values, _, proc = parse(script, "--text", value)
        assert proc.returncode == 0, proc.stderr
        assert values["text"] == value
    values, _, _ = parse(script, f"--text={HOSTILE}")
    assert values["text"] == HOSTILE
    assert not (tmp_path / "y").exists() and not (tmp_path / "z").exists()


def test_parse_options_config_file(caller, tmp_path):
    conf = tmp_path / "opts.conf"
    conf.write_text("# a comment\n\n  --nj 3\n--foo-bar=from conf; $(touch y)\n--text   two  words \n")
    values, _, proc = parse(caller(), "--config", conf)
    assert proc.returncode == 0, proc.stderr
    assert values["nj"] == "3"
    assert values["foo_bar"] == "from conf; $(touch y)"
    assert values["text"] == "two  words"
    assert not (tmp_path / "y").exists()
    # Command-line options win over the config, whatever their position.
    values, _, _ = parse(caller(), "--nj", "5", f"--config={conf}", "--text", "cli")
    assert (values["nj"], values["text"], values["foo_bar"]) == ("5", "cli", "from conf; $(touch y)")

    conf.write_text("--nope 1\n")
    _, _, proc = parse(caller(), "--config", conf)
    assert proc.returncode == 1 and proc.stderr == "parse_options.sh: unknown option --nope\n"
    _, _, proc = parse(caller(), "--config", tmp_path / "missing.conf")
    assert proc.returncode == 1 and "missing config" in proc.stderr


def test_parse_options_positional_args_remain(caller):
    values, positional, proc = parse(caller(), "--nj", "2", "data/a", "b c", "--nj", "3")
    assert proc.returncode == 0, proc.stderr
    assert values["nj"] == "2"
    assert positional == ["data/a", "b c", "--nj", "3"]
    values, positional, _ = parse(caller(), "--nj", "6", "--", "--nj", "7")
    assert values["nj"] == "6" and positional == ["--nj", "7"]


def test_parse_options_under_strict_mode(caller):
    values, positional, proc = parse(caller("set -euo pipefail"), "--foo-bar", "s", "pos")
    assert proc.returncode == 0, proc.stderr
    assert values["foo_bar"] == "s" and positional == ["pos"]


# --------------------------------------------------------------------------- run.pl


def read_log(path):
    lines = path.read_text().splitlines()
    assert lines[1].startswith("# Started at ")
    assert ACCOUNTING.match(lines[-2]), lines
    ended = ENDED.match(lines[-1])
    assert ended, lines
    return lines, int(ended.group(1))


def record_gpus(wait):
    """A job that records when it ran and on which GPUs: "start <time> <CUDA_VISIBLE_DEVICES>",
    then "end <time>" after the shell command ``wait``."""
    return f'echo "start $(date +%s.%N) ${{CUDA_VISIBLE_DEVICES-unset}}"; {wait}; echo "end $(date +%s.%N)"'


def gated_job():
    """Like record_gpus, but the job ends when the test makes the file go.<JOB>."""
    return record_gpus("until [ -e go.JOB ]; do sleep 0.02; done")


@pytest.fixture
def gates(tmp_path):
    """The dir of the gated jobs' go.<JOB> files; at the end it ends the jobs a failed test left waiting."""
    yield tmp_path
    for name in ["JOB", *range(1, 5)]:
        (tmp_path / f"go.{name}").touch()


def wait_for(condition, what, timeout=30.0):
    """Poll ``condition`` until it holds; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout:.0f} s")
        time.sleep(0.02)


def wait_for_file(path, text):
    wait_for(lambda: path.exists() and text in path.read_text(), f"{text!r} in {path}")


def wait_until_waiting_for_a_job(pid):
    """Wait until the run.pl process ``pid`` blocks in waitpid (/proc/<pid>/wchan): with
    --max-jobs-run jobs running, it waits there for one to end before it starts another."""
    wait_for(lambda: Path(f"/proc/{pid}/wchan").read_text() == "do_wait", f"run.pl {pid} waiting for a job to end")


def wait_for_gpu_retries(pid, tries=3):
    """Wait until the run.pl process ``pid`` has tried and failed to take its GPUs ``tries`` more
    times: it sleeps 0.1 s after each failed try, and each sleep counts as a voluntary context
    switch in /proc/<pid>/status."""
    def switches():
        return int(re.search(r"^voluntary_ctxt_switches:\s+(\d+)$", Path(f"/proc/{pid}/status").read_text(), re.M)[1])
    first = switches()
    wait_for(lambda: switches() >= first + tries, f"{tries} tries of run.pl {pid} to take a GPU")


def rendezvous(tmp_path, jobs, name="arrived"):
    """An executable ``./<name> JOB`` for the command of run.pl's jobs: it marks job JOB arrived and
    waits until all ``jobs`` jobs have (up to 20 s; else it fails), so it ends only if they run at
    once."""
    return write_exe(tmp_path / name, f"""#!/usr/bin/env bash
touch "{name}.$1"
for _ in $(seq 1000); do
    [ "$(ls {name}.* | wc -l)" -ge {jobs} ] && exit 0
    sleep 0.02
done
echo "job $1: only $(ls {name}.* | wc -l) of {jobs} jobs ran at once" >&2
exit 1
""")


def test_run_pl_parallel_jobs(tmp_path):
    rendezvous(tmp_path, 4)
    proc = run(
        [RUN_PL, "--max-jobs-run", "4", "JOB=1:4", "log/sub/foo.JOB.log",
         "echo", "task", "JOB", ";", "./arrived", "JOB", "|", "cat"],
        cwd=tmp_path, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr + "".join(p.read_text() for p in (tmp_path / "log/sub").iterdir())
    assert proc.stderr == ""
    assert sorted(p.name for p in (tmp_path / "log/sub").iterdir()) == [
        f"foo.{i}.log" for i in range(1, 5)
    ]
    for i in range(1, 5):
        lines, code = read_log(tmp_path / f"log/sub/foo.{i}.log")
        assert lines[0] == f"# echo task {i} ; ./arrived {i} | cat"
        assert lines[2:-2] == [f"task {i}"]
        assert code == 0
        assert ACCOUNTING.match(lines[-2]).group(1) == "1"


def test_run_pl_max_jobs_run_limits_parallelism(tmp_path, gates):
    """Two jobs at once: the third starts when the first ends, the fourth when the second does."""
    proc = subprocess.Popen([str(RUN_PL), "JOB=1:4", "--max-jobs-run", "2", "log/s.JOB.log", "bash", "-c", gated_job()],
                            cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    log = tmp_path / "log"
    wait_for_file(log / "s.1.log", "start")
    wait_for_file(log / "s.2.log", "start")
    wait_until_waiting_for_a_job(proc.pid)
    assert not (log / "s.3.log").exists(), "job 3 started while jobs 1 and 2 ran"
    (tmp_path / "go.1").touch()
    wait_for_file(log / "s.3.log", "start")
    wait_until_waiting_for_a_job(proc.pid)
    assert not (log / "s.4.log").exists(), "job 4 started while jobs 2 and 3 ran"
    for i in (2, 3, 4):
        (tmp_path / f"go.{i}").touch()
    assert proc.wait(timeout=30) == 0, proc.stderr.read()
    assert [read_log(log / f"s.{i}.log")[1] for i in range(1, 5)] == [0, 0, 0, 0]


def test_run_pl_failure_reporting(tmp_path):
    proc = run(
        [RUN_PL, "JOB=1:3", "log/fail.JOB.log", "bash", "-c", "echo out JOB; echo err JOB >&2; exit $((JOB == 2 ? 3 : 0))"],
        cwd=tmp_path,
    )
    assert proc.returncode == 1
    assert proc.stderr == "run.pl: 1 / 3 failed, log is in log/fail.*.log\n"
    lines, code = read_log(tmp_path / "log/fail.2.log")
    assert code == 3
    assert lines[2:-2] == ["out 2", "err 2"]
    assert read_log(tmp_path / "log/fail.1.log")[1] == 0
    assert read_log(tmp_path / "log/fail.3.log")[1] == 0

    proc = run([RUN_PL, "JOB=1:2", "log/all.JOB.log", "false"], cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr == "run.pl: 2 / 2 failed, log is in log/all.*.log\n"


def test_run_pl_hostile_arguments_are_literal(tmp_path):
    (tmp_path / "x").mkdir()
    args = [HOSTILE, "it's", "", "$HOME", "a|b", "x>y"]
    proc = run([RUN_PL, "log/h.log", "printf", "[%s]\\n", *args], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines, code = read_log(tmp_path / "log/h.log")
    assert code == 0
    assert lines[2:-2] == [f"[{a}]" for a in args]
    assert (tmp_path / "x").is_dir()
    assert not (tmp_path / "y").exists() and not (tmp_path / "z").exists()

    # Same through the JOB form: the job number is substituted, the rest stays literal.
    proc = run([RUN_PL, "J=1:2", "log/h.J.log", "printf", "[%s]\\n", f"J {HOSTILE}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for i in (1, 2):
        lines, _ = read_log(tmp_path / f"log/h.{i}.log")
        assert lines[2:-2] == [f"[{i} {HOSTILE}]"]
    assert not (tmp_path / "y").exists() and not (tmp_path / "z").exists()


def test_run_pl_single_job(tmp_path):
    proc = run([RUN_PL, "--mem", "4G", "--gpu", "0", "--time=1:00:00", "--num-threads", "2",
                "new/dir/single.log", "echo", "hello", "JOB"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines, code = read_log(tmp_path / "new/dir/single.log")
    assert lines[0] == "# echo hello JOB"
    assert lines[2:-2] == ["hello JOB"]
    assert code == 0

    proc = run([RUN_PL, "one.log", "bash", "-c", "exit 7"], cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr == "run.pl: job failed, log is in one.log\n"
    assert read_log(tmp_path / "one.log")[1] == 7


def test_run_pl_usage_errors(tmp_path):
    for args in (["--bogus", "1", "l.log", "true"], ["JOB=1:3", "l.log", "true"],
                 ["--max-jobs-run", "x", "l.log", "true"], ["l.log"]):
        proc = run([RUN_PL, *args], cwd=tmp_path)
        assert proc.returncode == 1, args
        assert proc.stderr.startswith("run.pl: "), args
    assert not (tmp_path / "l.log").exists()


# --------------------------------------------------------------------------- run.pl GPU pool


@pytest.fixture
def gpu_env(tmp_path, gates):
    env = dict(os.environ, MTBI_GPU_LOCK_DIR=str(tmp_path / "locks"))
    for name in ("MTBI_GPUS", "CUDA_VISIBLE_DEVICES"):
        env.pop(name, None)
    return env


def gpu_jobs(log_paths):
    """(start, end, GPU ids) of each job log written by record_gpus, after checking its header."""
    jobs = []
    for path in log_paths:
        lines, code = read_log(path)
        assert code == 0, lines
        _, started, gpus = lines[3].split()
        assert lines[2] == f"# Running on GPUs {gpus}"
        jobs.append((float(started), float(lines[4].split()[1]), gpus))
    return jobs


def assert_no_gpu_shared(jobs):
    for i, (start_a, end_a, gpus_a) in enumerate(jobs):
        for start_b, end_b, gpus_b in jobs[i + 1:]:
            if start_a < end_b and start_b < end_a:
                assert not set(gpus_a.split(",")) & set(gpus_b.split(",")), jobs


def test_run_pl_gpu_jobs_take_the_first_free_gpus(tmp_path, gpu_env):
    # The test ends the jobs in the order 1, 2: job 3 can only take GPU 0, then job 4 GPU 1.
    # Job slots for all four: job 3 waits for a GPU, not for a slot.
    gpu_env["MTBI_GPUS"] = "0,1"
    proc = subprocess.Popen([str(RUN_PL), "--gpu", "1", "--max-jobs-run", "4", "JOB=1:4", "log/g.JOB.log",
                             "bash", "-c", gated_job()], cwd=tmp_path, env=gpu_env, stderr=subprocess.PIPE, text=True)
    log = tmp_path / "log"
    wait_for_file(log / "g.1.log", "start")
    wait_for_file(log / "g.2.log", "start")
    wait_for_gpu_retries(proc.pid)
    assert not (log / "g.3.log").exists(), "job 3 started with no GPU free"
    (tmp_path / "go.1").touch()
    wait_for_file(log / "g.3.log", "start")
    (tmp_path / "go.2").touch()
    wait_for_file(log / "g.4.log", "start")
    (tmp_path / "go.3").touch()
    (tmp_path / "go.4").touch()
    assert proc.wait(timeout=30) == 0, proc.stderr.read()
    jobs = gpu_jobs([log / f"g.{i}.log" for i in range(1, 5)])
    assert [gpus for _, _, gpus in jobs] == ["0", "1", "0", "1"]
    assert_no_gpu_shared(jobs)


def test_run_pl_gpu_pairs_are_disjoint(tmp_path, gpu_env):
    gpu_env["MTBI_GPUS"] = "0,1,2,3"
    proc = subprocess.Popen([str(RUN_PL), "--gpu", "2", "--max-jobs-run", "3", "JOB=1:3", "log/p.JOB.log",
                             "bash", "-c", gated_job()], cwd=tmp_path, env=gpu_env, stderr=subprocess.PIPE, text=True)
    log = tmp_path / "log"
    wait_for_file(log / "p.1.log", "start")
    wait_for_file(log / "p.2.log", "start")  # while job 1 runs
    wait_for_gpu_retries(proc.pid)
    assert not (log / "p.3.log").exists(), "job 3 started with no pair free"
    (tmp_path / "go.2").touch()
    wait_for_file(log / "p.3.log", "start")
    (tmp_path / "go.1").touch()
    (tmp_path / "go.3").touch()
    assert proc.wait(timeout=30) == 0, proc.stderr.read()
    jobs = gpu_jobs([log / f"p.{i}.log" for i in range(1, 4)])
    assert [gpus for _, _, gpus in jobs] == ["0,1", "2,3", "2,3"]
    assert_no_gpu_shared(jobs)


def test_run_pl_processes_share_the_gpu_pool(tmp_path, gpu_env):
    # The first two jobs to start, of either process, wait for each other: both GPUs are taken.
    gpu_env["MTBI_GPUS"] = "0,1"
    rendezvous(tmp_path, 2)
    procs = [
        subprocess.Popen([str(RUN_PL), "--gpu", "1", "JOB=1:3", f"{name}/j.JOB.log", "bash", "-c",
                          record_gpus(f"./arrived {name}JOB; sleep 0.3")], cwd=tmp_path, env=gpu_env,
                         stderr=subprocess.PIPE, text=True)
        for name in ("a", "b")
    ]
    for proc in procs:
        assert proc.wait(timeout=60) == 0, proc.stderr.read()
    jobs = gpu_jobs([tmp_path / f"{name}/j.{i}.log" for name in ("a", "b") for i in (1, 2, 3)])
    assert {gpus for _, _, gpus in jobs} == {"0", "1"}
    assert_no_gpu_shared(jobs)


def test_run_pl_gpu_0_leaves_cuda_visible_devices_alone(tmp_path, gpu_env):
    gpu_env["MTBI_GPUS"] = "not a list"  # not read without --gpu
    for cvd, flags in [(None, []), ("5,7", ["--gpu", "0"]), ("5,7", [])]:
        env = dict(gpu_env, **({"CUDA_VISIBLE_DEVICES": cvd} if cvd else {}))
        proc = run([RUN_PL, *flags, "JOB=1:2", "log/c.JOB.log", "bash", "-c", "echo ${CUDA_VISIBLE_DEVICES-unset}"],
                   cwd=tmp_path, env=env)
        assert proc.returncode == 0, proc.stderr
        for i in (1, 2):
            lines, _ = read_log(tmp_path / f"log/c.{i}.log")
            assert lines[2:-2] == [cvd or "unset"]
    assert not (tmp_path / "locks").exists()


def test_run_pl_gpu_pool_default(tmp_path, gpu_env):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    write_exe(bindir / "nvidia-smi", '#!/bin/sh\n[ "$1" = -L ] && printf "%s\\n" '
              '"GPU 0: NVIDIA H100 (UUID: GPU-aa)" "GPU 1: NVIDIA H100 (UUID: GPU-bb)"\n')
    gpu_env["PATH"] = f"{bindir}{os.pathsep}{gpu_env['PATH']}"
    cases = [({}, ["0", "1"]), ({"CUDA_VISIBLE_DEVICES": "4,6"}, ["4", "6"]),
             ({"CUDA_VISIBLE_DEVICES": "4,6", "MTBI_GPUS": "GPU-bb,2"}, ["GPU-bb", "2"])]
    for n, (extra, expected) in enumerate(cases):  # the two jobs wait for each other: both hold a GPU
        rendezvous(tmp_path, 2, f"arrived{n}")
        proc = run([RUN_PL, "--gpu", "1", "--max-jobs-run", "2", "JOB=1:2", "log/d.JOB.log", "bash", "-c",
                    record_gpus(f"./arrived{n} JOB")], cwd=tmp_path, env=dict(gpu_env, **extra), timeout=60)
        assert proc.returncode == 0, proc.stderr
        jobs = gpu_jobs([tmp_path / f"log/d.{i}.log" for i in (1, 2)])
        assert [gpus for _, _, gpus in jobs] == expected, extra


def test_run_pl_gpu_errors(tmp_path, gpu_env):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    write_exe(bindir / "nvidia-smi", "#!/bin/sh\necho 'No devices were found'\nexit 6\n")
    gpu_env["PATH"] = f"{bindir}{os.pathsep}{gpu_env['PATH']}"
    cases = [
        ({"MTBI_GPUS": "0,1"}, "3", "run.pl: --gpu 3 but the GPU pool has only 0,1 (from MTBI_GPUS); "
         "set MTBI_GPUS to at least 3 GPU ids, e.g. MTBI_GPUS=0,1,2"),
        ({}, "1", "run.pl: --gpu 1 but no GPU found (nvidia-smi -L lists none); "
         "set MTBI_GPUS to the GPU ids to use, e.g. MTBI_GPUS=0,1"),
        ({"CUDA_VISIBLE_DEVICES": ""}, "1", "run.pl: --gpu 1 but no GPU found (CUDA_VISIBLE_DEVICES is empty); "
         "set MTBI_GPUS to the GPU ids to use, e.g. MTBI_GPUS=0,1"),
        ({"MTBI_GPUS": "0,0"}, "1", "run.pl: MTBI_GPUS='0,0' is not a list of distinct GPU ids; "
         "write them comma-separated, e.g. MTBI_GPUS=0,1,2,3"),
        ({"MTBI_GPUS": "0, 1"}, "1", "run.pl: MTBI_GPUS='0, 1' is not a list of distinct GPU ids; "
         "write them comma-separated, e.g. MTBI_GPUS=0,1,2,3"),
    ]
    for extra, ngpu, message in cases:
        proc = run([RUN_PL, "--gpu", ngpu, "JOB=1:2", "log/e.JOB.log", "true"], cwd=tmp_path,
                   env=dict(gpu_env, **extra))
        assert (proc.returncode, proc.stderr) == (1, message + "\n"), extra
        assert not (tmp_path / "log").exists()


def test_run_pl_killed_job_frees_its_gpu(tmp_path, gpu_env):
    gpu_env["MTBI_GPUS"] = "0"
    # The job's processes hold the GPU: killing run.pl alone leaves it taken until the job ends.
    first = subprocess.Popen([str(RUN_PL), "--gpu", "1", "log/a.log", "bash", "-c", gated_job()],
                             cwd=tmp_path, env=gpu_env)
    wait_for_file(tmp_path / "log/a.log", "start")
    first.kill()
    first.wait()
    second = subprocess.Popen([str(RUN_PL), "--gpu", "1", "log/b.log", "bash", "-c", "echo up; sleep 30"],
                              cwd=tmp_path, env=gpu_env, start_new_session=True)
    try:
        wait_for_gpu_retries(second.pid)
        assert not (tmp_path / "log/b.log").exists(), "the GPU was given while its job still ran"
        (tmp_path / "go.JOB").touch()  # ends the first job (a single job has no JOB to replace)
        wait_for_file(tmp_path / "log/b.log", "up")
        assert (tmp_path / "log/b.log").read_text().splitlines()[2] == "# Running on GPUs 0"
        # Killing a run (run.pl and its job, as Ctrl-C or a scheduler does) frees its GPU at once.
        third = subprocess.Popen([str(RUN_PL), "--gpu", "1", "log/c.log", "echo", "done"], cwd=tmp_path, env=gpu_env)
        wait_for_gpu_retries(third.pid)
        assert third.poll() is None and not (tmp_path / "log/c.log").exists()
        os.killpg(second.pid, 9)
        assert third.wait(timeout=30) == 0
    finally:
        (tmp_path / "go.JOB").touch()
        if second.poll() is None:
            os.killpg(second.pid, 9)
        second.wait()
    lines, code = read_log(tmp_path / "log/c.log")
    assert (lines[2:-2], code) == (["# Running on GPUs 0", "done"], 0)

    # A job killed inside an array frees its GPU for the next job of the same run.pl.
    proc = run([RUN_PL, "--gpu", "1", "JOB=1:2", "log/k.JOB.log", "bash", "-c", "[ JOB = 2 ] || kill -9 $$"],
               cwd=tmp_path, env=gpu_env)
    assert proc.stderr == "run.pl: 1 / 2 failed, log is in log/k.*.log\n"
    assert read_log(tmp_path / "log/k.1.log")[1] == 137
    assert read_log(tmp_path / "log/k.2.log")[1] == 0


# --------------------------------------------------------------------------- slurm.pl

FAKE_SBATCH = """\
#!{python}
# Fake sbatch: records its arguments, then runs the array tasks locally.
import json, os, re, subprocess, sys
args = sys.argv[1:]
with open(os.environ["FAKE_SBATCH_RECORD"], "a") as f:
    f.write(json.dumps(args) + "\\n")
if os.environ.get("FAKE_SBATCH_FAIL"):
    print("sbatch: error: invalid partition specified", file=sys.stderr)
    sys.exit(1)
assert "--wait" in args
(array,) = [a for a in args if a.startswith("--array=")]
(output,) = [a[len("--output="):] for a in args if a.startswith("--output=")]
first, last = map(int, re.fullmatch(r"--array=(\\d+)-(\\d+)(?:%\\d+)?", array).groups())
killed = os.environ.get("FAKE_SBATCH_KILL", "").split()
cwd = os.getcwd()
print("Submitted batch job 42")
status = 0
for task in range(first, last + 1):
    if str(task) in killed:  # like a task killed by Slurm (OOM, time limit)
        status = 1
        continue
    env = dict(os.environ, SLURM_ARRAY_TASK_ID=str(task))
    with open(os.path.join(cwd, output.replace("%a", str(task))), "w") as out:
        # Run elsewhere than the submit dir: the task script must cd itself.
        rc = subprocess.run(["bash", os.path.join(cwd, args[-1])], cwd="/", env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    status = max(status, rc)
sys.exit(status)
"""


@pytest.fixture
def slurm_env(tmp_path):
    bindir = tmp_path / "fakebin"
    bindir.mkdir()
    write_exe(bindir / "sbatch", FAKE_SBATCH.format(python=sys.executable))
    env = dict(os.environ)
    env["PATH"] = f"{bindir}{os.pathsep}{env['PATH']}"
    env["FAKE_SBATCH_RECORD"] = str(tmp_path / "sbatch_calls.jsonl")
    env["MTBI_SLURM_SYNC_WAIT"] = "0"
    env.pop("MTBI_SBATCH_OPTS", None)
    return env


def sbatch_calls(tmp_path):
    return [json.loads(line) for line in (tmp_path / "sbatch_calls.jsonl").read_text().splitlines()]


def test_slurm_pl_array_job(tmp_path, slurm_env):
    (tmp_path / "x").mkdir()
    slurm_env["MTBI_SBATCH_OPTS"] = "--partition=p1  --qos=high"
    proc = run(
        [SLURM_PL, "--mem", "2G", "--gpu", "1", "--time", "10", "--num-threads", "2",
         "--max-jobs-run", "2", "JOB=1:3", "exp/log/train.JOB.log",
         "printf", "[%s]\\n", "JOB", f"JOB {HOSTILE}", "|", "cat"],
        cwd=tmp_path, env=slurm_env,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    # Without a conf/slurm.conf: the built-in site settings, the options in their order.
    (call,) = sbatch_calls(tmp_path)
    assert call == ["--job-name=train", "--mem=2G", "--cpus-per-task=2", "--time=10", "--gres=gpu:1",
                    "--array=1-3%2", "--wait", "--output=exp/log/q/train.%a.out",
                    "--partition=p1", "--qos=high", "exp/log/q/train.sh"]
    assert os.access(tmp_path / call[-1], os.X_OK)
    for i in (1, 2, 3):
        lines, code = read_log(tmp_path / f"exp/log/train.{i}.log")
        assert code == 0
        assert lines[0].startswith(f"# printf '[%s]\\n' {i} '{i} a b;rm -rf x")
        assert lines[0].endswith(" | cat")
        assert lines[2].startswith("# Running on ")
        body = lines[3:-2]
        assert body[0] == f"[{i}]"
        assert "\n".join(body[1:]) == f"[{i} {HOSTILE}]"
        assert ACCOUNTING.match(lines[-2]).group(1) == "2"
        assert (tmp_path / f"exp/log/q/done.train.{i}").read_text() == "0\n"
        assert (tmp_path / f"exp/log/q/train.{i}.out").read_text() == ""
    assert (tmp_path / "x").is_dir()
    assert not (tmp_path / "y").exists() and not (tmp_path / "z").exists()


def test_slurm_pl_failure_reporting(tmp_path, slurm_env):
    proc = run([SLURM_PL, "JOB=2:4", "log/dec.JOB.log", "bash", "-c", "exit $((JOB == 3 ? 5 : 0))"],
               cwd=tmp_path, env=slurm_env)
    assert proc.returncode == 1
    assert proc.stderr == "slurm.pl: 1 / 3 failed, log is in log/dec.*.log\n"
    (call,) = sbatch_calls(tmp_path)
    assert call == ["--job-name=dec", "--array=2-4", "--wait", "--output=log/q/dec.%a.out", "log/q/dec.sh"]
    assert (tmp_path / "log/q/done.dec.3").read_text() == "5\n"
    assert read_log(tmp_path / "log/dec.3.log")[1] == 5
    assert read_log(tmp_path / "log/dec.4.log")[1] == 0


def test_slurm_pl_killed_task_and_stale_done_file(tmp_path, slurm_env):
    qdir = tmp_path / "log/q"
    qdir.mkdir(parents=True)
    (qdir / "done.a.2").write_text("0\n")  # left over from an earlier successful run
    slurm_env["FAKE_SBATCH_KILL"] = "2"
    proc = run([SLURM_PL, "JOB=1:3", "log/a.JOB.log", "true"], cwd=tmp_path, env=slurm_env)
    assert proc.returncode == 1
    assert proc.stderr == "slurm.pl: 1 / 3 failed, log is in log/a.*.log\n"
    assert not (qdir / "done.a.2").exists()


def test_slurm_pl_single_job(tmp_path, slurm_env):
    proc = run([SLURM_PL, "one.log", "echo", "a;b"], cwd=tmp_path, env=slurm_env)
    assert proc.returncode == 0, proc.stderr
    assert sbatch_calls(tmp_path)[0] == ["--job-name=one", "--array=1-1", "--wait", "--output=q/one.%a.out", "q/one.sh"]
    lines, code = read_log(tmp_path / "one.log")
    assert (lines[0], lines[3:-2], code) == ("# echo 'a;b'", ["a;b"], 0)
    assert (tmp_path / "q/done.one.1").read_text() == "0\n"

    proc = run([SLURM_PL, "two.log", "false"], cwd=tmp_path, env=slurm_env)
    assert proc.returncode == 1
    assert proc.stderr == "slurm.pl: job failed, log is in two.log\n"


def test_slurm_pl_submission_failure(tmp_path, slurm_env):
    slurm_env["FAKE_SBATCH_FAIL"] = "1"
    proc = run([SLURM_PL, "JOB=1:2", "log/s.JOB.log", "true"], cwd=tmp_path, env=slurm_env)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        "slurm.pl: sbatch exited with code 1, see log/q/s.log",
        "slurm.pl: 2 / 2 failed, log is in log/s.*.log",
    ]
    assert "invalid partition" in (tmp_path / "log/q/s.log").read_text()


def test_slurm_pl_without_sbatch(tmp_path):
    env = dict(os.environ, PATH=str(tmp_path / "empty"))
    perl = subprocess.run(["which", "perl"], capture_output=True, text=True).stdout.strip()
    proc = run([perl, SLURM_PL, "JOB=1:2", "log/s.JOB.log", "true"], cwd=tmp_path, env=env)
    assert proc.returncode == 1
    assert len(proc.stderr.splitlines()) == 1
    assert proc.stderr.startswith("slurm.pl: sbatch not found on PATH")
    assert not (tmp_path / "log").exists()


# A GPU cluster's site file (egs/TEMPLATE/conf/slurm.conf explains the format).
SITE_CONF = """\
# test cluster
command sbatch --export=ALL --account=speech
option name=* --job-name=$0
option time=* --time=$0   # per job
default time=24:00:00

option mem=* --mem=$0
option num_threads=* --cpus-per-task=$0
default gpu=0
option gpu=0 --partition=cpu
option gpu=* --partition gpu --gres=gpu:a100:$0 --cpus-per-gpu 8 --mem-per-gpu 60G
"""


def test_slurm_pl_site_conf(tmp_path, slurm_env):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf/slurm.conf").write_text(SITE_CONF)
    slurm_env["CUDA_VISIBLE_DEVICES"] = "0,1,2,3"  # as Slurm sets it in a job with 4 GPUs
    slurm_env["MTBI_SBATCH_OPTS"] = "--qos=high"
    proc = run([SLURM_PL, "--gpu", "4", "--time", "2:00:00", "JOB=1:2", "exp/log/train.JOB.log", "true"],
               cwd=tmp_path, env=slurm_env)
    assert proc.returncode == 0, proc.stderr
    lines, _ = read_log(tmp_path / "exp/log/train.1.log")
    assert lines[2] == f"# Running on {socket.gethostname()}, GPUs 0,1,2,3"
    slurm_env.pop("CUDA_VISIBLE_DEVICES")
    slurm_env.pop("MTBI_SBATCH_OPTS")
    # A CPU job: the gpu=0 line, whether --gpu 0 is given or comes from "default gpu=0".
    for gpu in (["--gpu", "0"], []):
        proc = run([SLURM_PL, *gpu, "--mem", "4G", "--num-threads", "2", "JOB=1:1", "log/feats.JOB.log", "true"],
                   cwd=tmp_path, env=slurm_env)
        assert proc.returncode == 0, proc.stderr
    assert sbatch_calls(tmp_path) == [
        ["--export=ALL", "--account=speech", "--job-name=train", "--time=2:00:00",
         "--partition", "gpu", "--gres=gpu:a100:4", "--cpus-per-gpu", "8", "--mem-per-gpu", "60G",
         "--array=1-2", "--wait", "--output=exp/log/q/train.%a.out", "--qos=high", "exp/log/q/train.sh"],
    ] + 2 * [
        ["--export=ALL", "--account=speech", "--job-name=feats", "--time=24:00:00", "--mem=4G",
         "--cpus-per-task=2", "--partition=cpu", "--array=1-1", "--wait", "--output=log/q/feats.%a.out",
         "log/q/feats.sh"],
    ]


def test_slurm_pl_config_option_and_the_shipped_example(tmp_path, slurm_env):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf/slurm.conf").write_text("this line is not read\n")
    (tmp_path / "other.conf").write_text("command sbatch\noption name=* -J $0\noption gpu=* -G $0\n")
    proc = run([SLURM_PL, "--config", "other.conf", "--gpu", "2", "a.log", "true"], cwd=tmp_path, env=slurm_env)
    assert proc.returncode == 0, proc.stderr
    example = UTILS.parent / "conf" / "slurm.conf"
    for args in (["--gpu", "8"], []):
        proc = run([SLURM_PL, f"--config={example}", *args, "b.log", "true"], cwd=tmp_path, env=slurm_env)
        assert proc.returncode == 0, proc.stderr
    assert sbatch_calls(tmp_path) == [
        ["-J", "a", "-G", "2", "--array=1-1", "--wait", "--output=q/a.%a.out", "q/a.sh"],
        ["--export=ALL", "--job-name=b", "--time=2-00:00:00", "--partition=gpu", "--gres=gpu:a100:8",
         "--cpus-per-gpu=8", "--mem-per-gpu=60G", "--array=1-1", "--wait", "--output=q/b.%a.out", "q/b.sh"],
        ["--export=ALL", "--job-name=b", "--time=2-00:00:00", "--partition=cpu",
         "--array=1-1", "--wait", "--output=q/b.%a.out", "q/b.sh"],
    ]
    # New recipes (setup.sh) get a copy of the example, theirs to edit; the recipes' own copies are valid.
    subprocess.run([UTILS.parent / "setup.sh", tmp_path / "new_mtbi"], check=True, capture_output=True)
    copied = tmp_path / "new_mtbi/conf/slurm.conf"
    assert not copied.is_symlink() and copied.read_text() == example.read_text()
    for recipe in ("librispeech_mtbi", "commonvoice_mtbi"):
        conf = UTILS.parents[1] / recipe / "conf" / "slurm.conf"
        proc = run([SLURM_PL, f"--config={conf}", "--gpu", "1", "c.log", "true"], cwd=tmp_path, env=slurm_env)
        assert not conf.is_symlink() and proc.returncode == 0, (recipe, proc.stderr)


@pytest.mark.parametrize("conf, args, message", [
    (SITE_CONF.replace("option gpu=*", "option gpus=*"), [],
     "conf/slurm.conf:11: unknown option 'gpus'; the options are gpu, mem, name, num_threads, time"),
    (SITE_CONF.replace("default gpu=0", "partition gpu"), [],
     "conf/slurm.conf:9: cannot read 'partition gpu'; expected 'command sbatch ...', "
     "'option NAME=VALUE [sbatch options]' or 'default NAME=VALUE'"),
    (SITE_CONF.replace("--time=$0", "--time=$1"), [],
     "conf/slurm.conf:4: 'option time=*' needs $0 where the value goes, e.g. 'option mem=* --mem=$0'"),
    (SITE_CONF.replace("default gpu=0", "default gpu=one"), [],
     "conf/slurm.conf:9: gpu=one: expected a whole number"),
    (SITE_CONF.replace("default time=24:00:00", "default time=1:00:00 --qos=high"), [],
     "conf/slurm.conf:5: a default takes no sbatch options; write them on an 'option time=...' line"),
    (SITE_CONF.replace("default time=24:00:00", "default time=*"), [],
     "conf/slurm.conf:5: 'default time=*' needs a value, e.g. 'default time=24:00:00'"),
    (SITE_CONF.replace("command sbatch", "# command sbatch"), [],
     "conf/slurm.conf has no 'command sbatch ...' line"),
    (SITE_CONF.replace("option mem=*", "# option mem=*"), ["--mem", "4G"],
     "--mem 4G is not described in conf/slurm.conf; add an 'option mem=* ...$0...' or 'option mem=4G ...' line"),
    (SITE_CONF.replace("command sbatch", "command /no/such/sbatch"), [],
     "/no/such/sbatch not found (Slurm is required; use run.pl to run locally)"),
    (None, ["--config", "missing.conf"],
     "cannot read the site file missing.conf: No such file or directory"),
])
def test_slurm_pl_site_conf_errors(tmp_path, slurm_env, conf, args, message):
    if conf is not None:
        (tmp_path / "conf").mkdir()
        (tmp_path / "conf/slurm.conf").write_text(conf)
    proc = run([SLURM_PL, *args, "JOB=1:2", "log/s.JOB.log", "true"], cwd=tmp_path, env=slurm_env)
    assert (proc.returncode, proc.stderr) == (1, f"slurm.pl: {message}\n")
    assert not (tmp_path / "sbatch_calls.jsonl").exists()
    assert not (tmp_path / "log").exists()
