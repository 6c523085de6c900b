#!/usr/bin/env perl
# Runs a command as a Slurm array job and waits for it (run.pl interface, Kaldi slurm.pl role).
#
# Usage: slurm.pl [options] [JOB=1:N] <log-file> <command> [<args>...]
#   e.g. slurm.pl --gpu 1 JOB=1:8 exp/foo/log/train.JOB.log mtbi train --part JOB
# Options (before or after the JOB range; "--opt=value" also accepted):
#   --max-jobs-run N   at most N array tasks at once (sbatch --array=1-N%max)
#   --gpu N, --mem X, --num-threads N, --time T
#                      GPUs, memory, CPU threads and time limit of each job, turned into
#                      sbatch options by the site file (below)
#   --config FILE      the site file (default: conf/slurm.conf of the current dir, if any)
# Site file, in the format of Kaldi's slurm.pl (egs/TEMPLATE/conf/slurm.conf explains one):
#   command sbatch [OPTS]      the submit command and the options of every job
#   option NAME=* ARGS         ARGS when the job has a value for NAME; $0 is replaced by it
#   option NAME=VALUE [ARGS]   ARGS (maybe none) for that one value; wins over NAME=*
#   default NAME=VALUE         the value of NAME when the command line gives none
# NAME is gpu, mem, num_threads, time, or name (the job name, always set). The ARGS of the
# lines chosen go to sbatch in the order of the file. Without a site file slurm.pl uses
# $builtin_conf below: the command line's resources, no partition.
# Environment: MTBI_SBATCH_OPTS holds extra sbatch options (split on whitespace; after the
#   site file's, so they win); MTBI_SLURM_SYNC_WAIT is how many seconds to wait for exit-code
#   files that are not yet visible after sbatch returns (default 20, for NFS caching).
# Writes <logdir>/q/<name>.sh (the array task script), <name>.log (sbatch output),
# <name>.<task>.out (Slurm output of each task) and done.<name>.<task> (exit codes),
# where <name> is the log file name without ".log" and the job variable.
# Command quoting, log format, failure report and exit status are those of run.pl.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use JobArgs qw(parse_job_args shell_quote report_failures);
use Cwd qw(getcwd);
use File::Basename qw(basename dirname);
use File::Path qw(make_path);
use File::Spec;
use POSIX ();

my $me = basename($0);

# Without a site file: only what the job asks for, on the cluster's default partition.
my $builtin_conf = <<'CONF';
command sbatch
option name=* --job-name=$0
option mem=* --mem=$0
option num_threads=* --cpus-per-task=$0
option time=* --time=$0
option gpu=0
option gpu=* --gres=gpu:$0
CONF

sub fail { print STDERR "$me: $_[0]\n"; exit 1; }

# Options not given on the command line stay undef (the site file may give a default).
my ($opt, $jobvar, $start, $end, $logfile, @cmd) = parse_job_args(
  {'max-jobs-run' => 0, 'num-threads' => undef, 'mem' => undef, 'gpu' => undef, 'time' => undef,
   'config' => undef});
my %opt = %$opt;

# Reads a site file ($text, named $file in errors); returns the submit command (a word list),
# the option lines ([name, value, [words], line number] each) and the defaults (name => value).
sub read_site_conf {
  my ($file, $text) = @_;
  my %known = map { $_ => 1 } qw(gpu mem name num_threads time);
  my ($command, @rules, %default);
  my $n = 0;
  for my $line (split(/\n/, $text)) {
    $n++;
    (my $body = $line) =~ s/#.*//;
    $body =~ s/^\s+|\s+$//g;
    next if $body eq '';
    my $bad = sub { fail("$file:$n: $_[0]") };
    if ($body =~ m/^command\s+(.+)$/) {
      $command = [split(' ', $1)];
    } elsif ($body =~ m/^(option|default)\s+(\w+)=(\S+)(?:\s+(.*))?$/) {
      my ($kind, $name, $value, $args) = ($1, $2, $3, $4 // '');
      $bad->("unknown option '$name'; the options are " . join(', ', sort keys %known))
        unless $known{$name};
      $bad->("$name=$value: expected a whole number") if $name =~ m/^(gpu|num_threads)$/
        && $value !~ m/^\d+$/ && !($kind eq 'option' && $value eq '*');
      if ($kind eq 'default') {
        $bad->("a default takes no sbatch options; write them on an 'option $name=...' line")
          if $args ne '';
        $bad->("'default $name=*' needs a value, e.g. 'default time=24:00:00'") if $value eq '*';
        $default{$name} = $value;
      } else {
        $bad->("'option $name=*' needs \$0 where the value goes, e.g. 'option mem=* --mem=\$0'")
          if $value eq '*' && $args !~ m/\$0/;
        push @rules, [$name, $value, [split(' ', $args)], $n];
      }
    } else {
      $bad->("cannot read '$body'; expected 'command sbatch ...', 'option NAME=VALUE [sbatch options]'"
        . " or 'default NAME=VALUE'");
    }
  }
  fail("$file has no 'command sbatch ...' line") unless $command;
  return ($command, \@rules, \%default);
}

# The sbatch options of a job with the option values %value: for each option, the words of
# its exact-value line, else of its * line with $0 replaced (the last such line, as in Kaldi),
# in the order of the file.
sub site_options {
  my ($file, $rules, %value) = @_;
  my %line = map { ("$_->[0]=$_->[1]" => $_) } @$rules;
  my @chosen;
  for my $name (sort keys %value) {
    my $rule = $line{"$name=$value{$name}"} // $line{"$name=*"};
    if ($rule) {
      push @chosen, $rule;
    } elsif ($name ne 'name') {
      (my $flag = $name) =~ s/_/-/g;
      fail("--$flag $value{$name} is not described in $file; add an 'option $name=* ...\$0...'"
        . " or 'option $name=$value{$name} ...' line");
    }
  }
  my @words;
  for my $rule (sort { $a->[3] <=> $b->[3] } @chosen) {
    my ($name, undef, $args) = @$rule;
    push @words, map { (my $word = $_) =~ s/\$0/$value{$name}/g; $word } @$args;
  }
  return @words;
}

my $conf = $opt{config} // 'conf/slurm.conf';
my $conf_text = $builtin_conf;
if (defined $opt{config} || -e $conf) {
  open(my $in, '<', $conf) or fail("cannot read the site file $conf: $!");
  $conf_text = do { local $/; <$in> };
  close($in);
} else {
  $conf = "${me}'s built-in site settings";
}
my ($submit, $rules, $default) = read_site_conf($conf, $conf_text);

my $sbatch = $submit->[0];
my $found = $sbatch =~ m{/} ? -x $sbatch
  : grep { $_ ne '' && -x File::Spec->catfile($_, $sbatch) } split(/:/, $ENV{PATH} // '');
unless ($found) {
  fail("$sbatch not found" . ($sbatch =~ m{/} ? '' : ' on PATH')
    . " (Slurm is required; use run.pl to run locally)");
}
($start, $end) = (1, 1) unless defined $jobvar;

my $qdir = dirname($logfile) eq '.' ? 'q' : dirname($logfile) . '/q';
my $name = basename($logfile);
$name =~ s/\.log$//;
if (defined $jobvar) {
  $name =~ s/\Q$jobvar\E//g;
  $name =~ s/\.{2,}/./g;
  $name =~ s/^\.|\.$//g;
}
$name = 'job' if $name eq '';

my %value = (name => $name);
for my $option (qw(gpu mem num_threads time)) {
  (my $flag = $option) =~ s/_/-/g;
  $value{$option} = $opt{$flag} // $default->{$option};
  delete $value{$option} unless defined $value{$option};
}
my @site_opts = site_options($conf, $rules, %value);

make_path($qdir) unless -d $qdir;
my $script = "$qdir/$name.sh";
my $donefile = "$qdir/done.$name";
unlink map { "$donefile.$_" } $start .. $end;

my $subst = defined $jobvar ? "cmd=\${cmd//$jobvar/\$JOB}\nlog=\${log//$jobvar/\$JOB}\n" : '';
my $threads = $value{num_threads} || 1;
open(my $fh, '>', $script) or die "$me: cannot write $script: $!\n";
print $fh <<"EOF";
#!/usr/bin/env bash
# Generated by $me: one Slurm array task (JOB = SLURM_ARRAY_TASK_ID).
cd @{[shell_quote(getcwd())]} || exit 1
JOB=\${SLURM_ARRAY_TASK_ID:?not running as a Slurm array task}
cmd=@{[shell_quote(join(' ', map { shell_quote($_) } @cmd))]}
log=@{[shell_quote($logfile)]}
${subst}mkdir -p "\$(dirname "\$log")" || exit 1
{
  printf "# %s\\n" "\$cmd"; echo "# Started at \$(date)"
  echo "# Running on \$HOSTNAME\${CUDA_VISIBLE_DEVICES:+, GPUs \$CUDA_VISIBLE_DEVICES}"
} > "\$log"
t0=\$(date +%s)
bash -c "\$cmd" >> "\$log" 2>&1
ret=\$?
t1=\$(date +%s)
{
  echo "# Accounting: time=\$((t1 - t0)) threads=$threads"
  echo "# Ended (code \$ret) at \$(date), elapsed time \$((t1 - t0)) seconds"
} >> "\$log"
echo "\$ret" > @{[shell_quote($donefile)]}."\$JOB"
exit "\$ret"
EOF
close($fh);
chmod(0755, $script);

my @sbatch = (@$submit, @site_opts,
  "--array=$start-$end" . ($opt{'max-jobs-run'} ? "%$opt{'max-jobs-run'}" : ''),
  '--wait', "--output=$qdir/$name.%a.out", split(' ', $ENV{MTBI_SBATCH_OPTS} // ''), $script);

my $sbatch_log = "$qdir/$name.log";
my $pid = fork() // die "$me: fork failed: $!\n";
if ($pid == 0) {
  open(STDOUT, '>', $sbatch_log) && open(STDERR, '>&', \*STDOUT) && exec(@sbatch);
  print STDERR "$me: cannot run $sbatch with output to $sbatch_log: $!\n";
  POSIX::_exit(127);
}
waitpid($pid, 0);
my $sbatch_code = ($? & 127) ? 128 + ($? & 127) : $? >> 8;

# Returns the exit codes of the tasks whose done files exist (re-reading $qdir
# each time so that NFS shows files written on other hosts).
sub read_codes {
  my %code;
  if (opendir(my $dh, $qdir)) { closedir($dh); }
  for my $id ($start .. $end) {
    open(my $in, '<', "$donefile.$id") or next;
    chomp($code{$id} = <$in> // '');
  }
  return %code;
}
my %code = read_codes();
# Wait for missing files only if the job ran (a failed submission leaves none).
my $wait = ($sbatch_code == 0 || %code) ? $ENV{MTBI_SLURM_SYNC_WAIT} // 20 : 0;
while (keys(%code) < $end - $start + 1 && $wait-- > 0) {
  sleep 1;
  %code = read_codes();
}
if ($sbatch_code != 0 && !%code) {
  print STDERR "$me: sbatch exited with code $sbatch_code, see $sbatch_log\n";
}

my $failed = grep { ($code{$_} // '') ne '0' } $start .. $end;
report_failures($failed, $jobvar, $start, $end, $logfile);
exit 0;
