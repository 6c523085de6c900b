#!/usr/bin/env perl
# Runs a command locally, optionally as an array of parallel jobs (Kaldi run.pl interface).
#
# Usage: run.pl [options] [JOB=1:N] <log-file> <command> [<args>...]
#   e.g. run.pl --max-jobs-run 4 JOB=1:8 exp/foo/log/decode.JOB.log \
#          mtbi decode --part JOB data/test
# Options (before or after the JOB range; "--opt=value" also accepted):
#   --max-jobs-run N   run at most N jobs at once (default: number of CPUs)
#   --num-threads N, --mem X, --gpu N, --time T   accepted and ignored (for slurm.pl)
# The job variable (any name, JOB above) is replaced as a plain substring in the
# log path and in every argument. Each argument is shell-quoted unless it is a
# plain word or a standalone shell operator (| || && ; < > >> 2> 2>> &> 2>&1),
# so "cmd a \| cmd b" builds a pipeline while any other argument stays literal.
# Each job runs under bash with stdout and stderr appended to its log file.
# Exit status: 0 if every job succeeded, 1 otherwise.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use JobArgs qw(parse_job_args shell_quote report_failures);
use File::Basename qw(basename dirname);
use File::Path qw(make_path);
use POSIX qw(strftime);

my $me = basename($0);

sub now { return strftime("%a %b %e %H:%M:%S %Z %Y", localtime); }

my ($opt, $jobvar, $start, $end, $logfile, @cmd) = parse_job_args(
  {'max-jobs-run' => 0, 'num-threads' => 1, 'mem' => '', 'gpu' => 0, 'time' => ''});
my %opt = %$opt;

my $max_jobs = $opt{'max-jobs-run'};
if ($max_jobs == 0) {
  chomp($max_jobs = `nproc 2>/dev/null` // '');
  $max_jobs = 1 unless $max_jobs =~ m/^\d+$/ && $max_jobs > 0;
}

# Runs job $id (undef for the single-job form) in the current process; returns its exit code.
sub run_job {
  my ($id) = @_;
  my ($log, @args) = ($logfile, @cmd);
  if (defined $id) { s/\Q$jobvar\E/$id/g for $log, @args; }
  my $cmd = join(' ', map { shell_quote($_) } @args);
  my $dir = dirname($log);
  make_path($dir) unless -d $dir;
  open(my $fh, '>', $log) or die "$me: cannot write $log: $!\n";
  print $fh "# $cmd\n# Started at " . now() . "\n";
  close($fh);
  my $t0 = time();
  my $pid = fork() // die "$me: fork failed: $!\n";
  if ($pid == 0) {
    open(STDOUT, '>>', $log) && open(STDERR, '>&', \*STDOUT) && exec('bash', '-c', $cmd);
    print STDERR "$me: cannot run bash with output to $log: $!\n";
    POSIX::_exit(127);
  }
  waitpid($pid, 0);
  my $status = $?;
  my $code = ($status & 127) ? 128 + ($status & 127) : $status >> 8;
  my $elapsed = time() - $t0;
  open($fh, '>>', $log) or die "$me: cannot write $log: $!\n";
  print $fh "# Accounting: time=$elapsed threads=1\n",
    "# Ended (code $code) at " . now() . ", elapsed time $elapsed seconds\n";
  close($fh);
  return $code;
}

if (!defined $jobvar) {
  report_failures(run_job(undef) != 0 ? 1 : 0, $jobvar, 1, 1, $logfile);
  exit 0;
}

my ($running, $failed) = (0, 0);
my $reap = sub {
  wait() > 0 or die "$me: lost track of running jobs\n";
  $running--;
  $failed++ if $? != 0;
};
for my $id ($start .. $end) {
  $reap->() while $running >= $max_jobs;
  my $pid = fork() // die "$me: fork failed: $!\n";
  if ($pid == 0) {
    my $code = eval { run_job($id) };
    print STDERR $@ if $@;
    POSIX::_exit(defined $code && $code == 0 ? 0 : 1);
  }
  $running++;
}
$reap->() while $running > 0;
report_failures($failed, $jobvar, $start, $end, $logfile);
exit 0;
