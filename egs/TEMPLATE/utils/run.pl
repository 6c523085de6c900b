#!/usr/bin/env perl
# Runs a command locally, optionally as an array of parallel jobs (Kaldi run.pl interface).
#
# Usage: run.pl [options] [JOB=1:N] <log-file> <command> [<args>...]
#   e.g. run.pl --max-jobs-run 4 JOB=1:8 exp/foo/log/decode.JOB.log \
#          mtbi decode --part JOB data/test
# Options (before or after the JOB range; "--opt=value" also accepted):
#   --max-jobs-run N   run at most N jobs at once (default: number of CPUs)
#   --gpu N            give each job N GPUs of the pool (below) as CUDA_VISIBLE_DEVICES;
#                      0 (the default) leaves CUDA_VISIBLE_DEVICES as it is
#   --num-threads N, --mem X, --time T   accepted and ignored (for slurm.pl)
# The job variable (any name, JOB above) is replaced as a plain substring in the
# log path and in every argument. Each argument is shell-quoted unless it is a
# plain word or a standalone shell operator (| || && ; < > >> 2> 2>> &> 2>&1),
# so "cmd a \| cmd b" builds a pipeline while any other argument stays literal.
# Each job runs under bash with stdout and stderr appended to its log file.
# Exit status: 0 if every job succeeded, 1 otherwise.
#
# GPU pool: the ids in MTBI_GPUS (comma-separated, e.g. 0,1,2,3), else those in
# CUDA_VISIBLE_DEVICES, else the GPUs `nvidia-smi -L` lists. A job waits until N GPUs
# are free and takes the first free ones in pool order. All run.pl processes of a user
# share the pool through one lock file per GPU (flock) in MTBI_GPU_LOCK_DIR (default
# ${TMPDIR:-/tmp}/mtbi-gpus-$USER, plus -slurm$SLURM_JOB_ID inside a Slurm allocation; it
# must be local to this machine). The job's own
# processes hold the locks, so a GPU is free again when the last of them ends, however
# it ends, and stays taken while they run even if run.pl itself is killed.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use JobArgs qw(parse_job_args shell_quote report_failures);
use Fcntl qw(:flock F_SETFD);
use File::Basename qw(basename dirname);
use File::Path qw(make_path);
use POSIX qw(strftime WNOHANG);
use Time::HiRes ();

my $me = basename($0);

sub now { return strftime("%a %b %e %H:%M:%S %Z %Y", localtime); }

sub fail { print STDERR "$me: $_[0]\n"; exit 1; }

my ($opt, $jobvar, $start, $end, $logfile, @cmd) = parse_job_args(
  {'max-jobs-run' => 0, 'num-threads' => 1, 'mem' => '', 'gpu' => 0, 'time' => ''});
my %opt = %$opt;

my $max_jobs = $opt{'max-jobs-run'};
if ($max_jobs == 0) {
  chomp($max_jobs = `nproc 2>/dev/null` // '');
  $max_jobs = 1 unless $max_jobs =~ m/^\d+$/ && $max_jobs > 0;
}

# The GPU ids jobs may take, in the order they are taken; fails unless there are $need.
sub gpu_pool {
  my ($need) = @_;
  my ($source, $none, @ids);
  if (defined $ENV{MTBI_GPUS}) {
    ($source, $none) = ('MTBI_GPUS', 'MTBI_GPUS is empty');
    @ids = split(/,/, $ENV{MTBI_GPUS}, -1);
    my %seen;
    if (grep { !m{^[\w.:/-]+$} || $seen{$_}++ } @ids) {
      fail("MTBI_GPUS='$ENV{MTBI_GPUS}' is not a list of distinct GPU ids; write them"
        . " comma-separated, e.g. MTBI_GPUS=0,1,2,3");
    }
  } elsif (defined $ENV{CUDA_VISIBLE_DEVICES}) {
    ($source, $none) = ('CUDA_VISIBLE_DEVICES', 'CUDA_VISIBLE_DEVICES is empty');
    @ids = grep { $_ ne '' } split(/,/, $ENV{CUDA_VISIBLE_DEVICES});
  } else {
    ($source, $none) = ('nvidia-smi -L', 'nvidia-smi -L lists none');
    @ids = map { m/^GPU (\d+):/ ? $1 : () } `nvidia-smi -L 2>/dev/null`;
  }
  my $example = 'MTBI_GPUS=' . join(',', 0 .. ($need > 2 ? $need : 2) - 1);
  fail("--gpu $need but no GPU found ($none); set MTBI_GPUS to the GPU ids to use, e.g. $example")
    unless @ids;
  fail("--gpu $need but the GPU pool has only " . join(',', @ids) . " (from $source); set MTBI_GPUS"
    . " to at least $need GPU ids, e.g. $example") if @ids < $need;
  return @ids;
}

my $ngpu = $opt{gpu};
my (@pool, $lock_dir);
if ($ngpu > 0) {
  @pool = gpu_pool($ngpu);
  my $tmp = ($ENV{TMPDIR} // '') ne '' ? $ENV{TMPDIR} : '/tmp';
  my $user = $ENV{USER} // getpwuid($<) // $<;
  # Inside a Slurm allocation the ids are the allocation's own (another job's GPU 0 is another GPU).
  my $scope = ($ENV{SLURM_JOB_ID} // '') ne '' ? "-slurm$ENV{SLURM_JOB_ID}" : '';
  $lock_dir = ($ENV{MTBI_GPU_LOCK_DIR} // '') ne '' ? $ENV{MTBI_GPU_LOCK_DIR} : "$tmp/mtbi-gpus-$user$scope";
  make_path($lock_dir, {error => \my $err}) unless -d $lock_dir;
  fail("cannot create the GPU lock dir $lock_dir; set MTBI_GPU_LOCK_DIR to a writable local dir")
    unless -d $lock_dir && -w _;
}

# Locks the first $ngpu free GPUs of the pool; returns their ids, or () when fewer are free.
# The lock handles stay open in this process and, not being close-on-exec, in the job's
# processes; %held keeps them until release_gpus.
my %held;
sub take_gpus {
  my @ids;
  for my $id (@pool) {
    (my $name = $id) =~ s/[^\w.-]/_/g;
    my $file = "$lock_dir/gpu.$name.lock";
    open(my $fh, '>>', $file) or fail("cannot open the GPU lock $file: $!");
    next unless flock($fh, LOCK_EX | LOCK_NB);
    fcntl($fh, F_SETFD, 0) or fail("cannot keep the GPU lock $file open for the job: $!");
    $held{$id} = $fh;
    push @ids, $id;
    return @ids if @ids == $ngpu;
  }
  release_gpus();  # all or none, so that two waiting processes cannot block each other
  return ();
}
sub release_gpus { close($_) for values %held; %held = (); }

# Waits until $ngpu GPUs are free and takes them, calling $while_waiting between tries.
sub wait_for_gpus {
  my ($while_waiting) = @_;
  return () if $ngpu == 0;
  while (1) {
    my @ids = take_gpus();
    return @ids if @ids;
    $while_waiting->();
    Time::HiRes::sleep(0.1);
  }
}

# Runs job $id (undef for the single-job form) on the GPUs @gpus in the current process;
# returns its exit code.
sub run_job {
  my ($id, @gpus) = @_;
  my ($log, @args) = ($logfile, @cmd);
  if (defined $id) { s/\Q$jobvar\E/$id/g for $log, @args; }
  my $cmd = join(' ', map { shell_quote($_) } @args);
  my $dir = dirname($log);
  make_path($dir) unless -d $dir;
  open(my $fh, '>', $log) or die "$me: cannot write $log: $!\n";
  print $fh "# $cmd\n# Started at " . now() . "\n";
  print $fh "# Running on GPUs " . join(',', @gpus) . "\n" if @gpus;
  close($fh);
  my $t0 = time();
  my $pid = fork() // die "$me: fork failed: $!\n";
  if ($pid == 0) {
    $ENV{CUDA_VISIBLE_DEVICES} = join(',', @gpus) if @gpus;
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
  my @gpus = wait_for_gpus(sub {});
  report_failures(run_job(undef, @gpus) != 0 ? 1 : 0, $jobvar, 1, 1, $logfile);
  exit 0;
}

my ($running, $failed) = (0, 0);
# Collects one ended job, or with WNOHANG any that have ended; returns how many.
my $reap = sub {
  my ($flags) = @_;
  my $n = 0;
  while ((my $pid = waitpid(-1, $flags // 0)) > 0) {
    $running--;
    $failed++ if $? != 0;
    $n++;
    last unless $flags;
  }
  die "$me: lost track of running jobs\n" unless $n || $flags;
  return $n;
};
for my $id ($start .. $end) {
  $reap->() while $running >= $max_jobs;
  my @gpus = wait_for_gpus(sub { $reap->(WNOHANG) });
  my $pid = fork() // die "$me: fork failed: $!\n";
  if ($pid == 0) {
    my $code = eval { run_job($id, @gpus) };
    print STDERR $@ if $@;
    POSIX::_exit(defined $code && $code == 0 ? 0 : 1);
  }
  release_gpus();  # the job holds them now
  $running++;
}
$reap->() while $running > 0;
report_failures($failed, $jobvar, $start, $end, $logfile);
exit 0;
