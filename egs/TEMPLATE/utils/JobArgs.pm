# What run.pl and slurm.pl share: their command line (options, JOB range, log file, command),
# shell quoting of the command, and the failure report.
package JobArgs;
use strict;
use warnings;
use Exporter 'import';
use File::Basename qw(basename);

our @EXPORT_OK = qw(parse_job_args shell_quote report_failures);

my $me = basename($0);

sub usage_error {
  print STDERR "$me: $_[0]\n",
    "Usage: $me [--max-jobs-run N] [--num-threads N] [--mem X] [--gpu N] [--time T]"
    . " [JOB=1:N] <log-file> <command> [<args>...]\n";
  exit 1;
}

# Quotes an argument for bash unless it is a plain word or a standalone shell operator
# (| || && ; < > >> 2> 2>> &> 2>&1), so "cmd a \| cmd b" still builds a pipeline.
sub shell_quote {
  my ($arg) = @_;
  return $arg if $arg =~ m{^[A-Za-z0-9_\-+=.,/:@%^]+$};
  return $arg if $arg =~ m{^(?:\||\|\||&&|;|<|>|>>|2>|2>>|&>|2>&1)$};
  $arg =~ s/'/'\\''/g;
  return "'$arg'";
}

# Parses @ARGV; returns (\%opt, $jobvar, $start, $end, $logfile, @cmd). $jobvar is undef
# for the single-job form. %$defaults gives the options and their default values.
sub parse_job_args {
  my ($defaults) = @_;
  my %opt = %$defaults;
  my ($jobvar, $start, $end);
  while (@ARGV) {
    if ($ARGV[0] =~ m/^--([\w-]+)(?:=(.*))?$/s) {
      my ($name, $value) = ($1, $2);
      shift @ARGV;
      usage_error("unknown option --$name") unless exists $opt{$name};
      unless (defined $value) {
        usage_error("option --$name requires a value") unless @ARGV;
        $value = shift @ARGV;
      }
      if ($name =~ m/^(max-jobs-run|num-threads|gpu)$/ && $value !~ m/^\d+$/) {
        usage_error("option --$name expects a non-negative integer, got '$value'");
      }
      $opt{$name} = $value;
    } elsif (!defined $jobvar && $ARGV[0] =~ m/^([A-Za-z_]\w*)=(\d+)(?::(\d+))?$/) {
      ($jobvar, $start, $end) = ($1, $2, defined $3 ? $3 : $2);
      usage_error("invalid job range $ARGV[0]") if $end < $start;
      shift @ARGV;
    } else {
      last;
    }
  }
  usage_error("expected a log file and a command") if @ARGV < 2;
  my ($logfile, @cmd) = @ARGV;
  if (defined $jobvar && index($logfile, $jobvar) < 0 && $end > $start) {
    usage_error("running jobs $start:$end but the log file '$logfile' does not contain $jobvar");
  }
  return (\%opt, $jobvar, $start, $end, $logfile, @cmd);
}

# Prints Kaldi's failure line and exits 1 when $failed > 0.
sub report_failures {
  my ($failed, $jobvar, $start, $end, $logfile) = @_;
  return if $failed == 0;
  if (!defined $jobvar) {
    print STDERR "$me: job failed, log is in $logfile\n";
  } else {
    (my $pattern = $logfile) =~ s/\Q$jobvar\E/*/g;
    print STDERR "$me: $failed / " . ($end - $start + 1) . " failed, log is in $pattern\n";
  }
  exit 1;
}

1;
