"""Tests for the recipe launchers in egs/TEMPLATE/utils: parse_options.sh, run.pl, slurm.pl.

The scripts are run for real with subprocess. Slurm cannot run here, so the
slurm.pl tests put a fake ``sbatch`` first on PATH that runs the array tasks
locally, one after another, with SLURM_ARRAY_TASK_ID set.
"""

import json
import os
import re
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


def test_run_pl_parallel_jobs(tmp_path):
    start = time.monotonic()
    proc = run(
        [RUN_PL, "--max-jobs-run", "4", "JOB=1:4", "log/sub/foo.JOB.log",
         "echo", "task", "JOB", ";", "sleep", "0.6", "|", "cat"],
        cwd=tmp_path,
    )
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert elapsed < 1.8, f"jobs did not run in parallel ({elapsed:.2f}s)"
    assert sorted(p.name for p in (tmp_path / "log/sub").iterdir()) == [
        f"foo.{i}.log" for i in range(1, 5)
    ]
    for i in range(1, 5):
        lines, code = read_log(tmp_path / f"log/sub/foo.{i}.log")
        assert lines[0] == f"# echo task {i} ; sleep 0.6 | cat"
        assert lines[2:-2] == [f"task {i}"]
        assert code == 0
        assert ACCOUNTING.match(lines[-2]).group(1) == "1"


def test_run_pl_max_jobs_run_limits_parallelism(tmp_path):
    start = time.monotonic()
    proc = run([RUN_PL, "JOB=1:4", "--max-jobs-run", "2", "log/s.JOB.log", "sleep", "0.5"], cwd=tmp_path)
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr
    assert 0.95 <= elapsed < 2.5


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
    proc = run([RUN_PL, "--mem", "4G", "--gpu", "1", "--time=1:00:00", "--num-threads", "2",
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
    (call,) = sbatch_calls(tmp_path)
    assert call[:2] == ["--array=1-3%2", "--wait"]
    for expected in ["--mem=2G", "--time=10", "--cpus-per-task=2", "--gres=gpu:1",
                     "--partition=p1", "--qos=high", "--job-name=train",
                     "--output=exp/log/q/train.%a.out"]:
        assert expected in call
    assert call[-1] == "exp/log/q/train.sh"
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
    assert call[0] == "--array=2-4"
    assert not any(a.startswith(("--gres", "--mem", "--time", "--cpus")) for a in call)
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
    assert sbatch_calls(tmp_path)[0][0] == "--array=1-1"
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
