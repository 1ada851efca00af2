"""Training speed of the bundled job (`deeplab_nb_train`'s default recipe), measured as ratios within one run.

Compares, on this machine and in this process, the recipe as it was (NCHW, images decoded from PNG on every step)
with the current defaults (channels-last, decoded images kept in memory), then bf16 autocast, then how to use two
cores: one run on two threads, or two single-thread runs side by side. The variants are interleaved (A B A B ...)
so that a change in machine load hits them alike; each figure is the median over the repeats. It then splits the
current step into its phases (data, forward, loss, backward, optimiser) and times the ways of going faster that were
tried and not kept: a DataLoader worker process, `torch.compile` (after its compilation), and two data-parallel
processes of one thread each (DDP over gloo, batch norm synchronised so that the arithmetic stays the batch-8 one).
Run it on an idle machine: `python bench/train_speed.py [--out data/results/train_speed.json]`.
"""
import argparse, json, multiprocessing as mp, os, platform, statistics, tempfile, time
import torch
import deeplab_nb
from deeplab_nb.study_runner import _cpu_model  # the study records the CPU the same way
from deeplab_nb.training import TrainConfig, Trainer

VARIANTS = {  # name -> TrainConfig changes from the defaults
    'before (NCHW, decode every step)': dict(channels_last=False, cache_data=False),
    'now (channels-last, in memory)': dict(),
    'now + bf16 autocast': dict(amp='bf16'),
}

def seconds_per_step(trainer, steps):
    start = time.perf_counter()
    for _ in range(steps): trainer.step()
    return (time.perf_counter() - start) / steps

def interleaved(variants, folder, steps, warmup, repeats):
    """({name: median seconds per step}, {name: trainer}) of `variants` (name -> TrainConfig changes; `compiled=True`:
    the model under torch.compile), timed in turn (A B A B ...) after `warmup` steps each (which compile)."""
    trainers = {}
    for i, (name, changes) in enumerate(variants.items()):
        changes = dict(changes); compiled = changes.pop('compiled', False)
        trainers[name] = Trainer(TrainConfig(run_dir=f'{folder}/{i}', val_split=None, steps=10_000, **changes), progress=False)
        if compiled: trainers[name].model = torch.compile(trainers[name].model)
    for trainer in trainers.values(): seconds_per_step(trainer, warmup)
    rows = {}
    for _ in range(repeats):
        for name, trainer in trainers.items(): rows.setdefault(name, []).append(seconds_per_step(trainer, steps))
    return {name: statistics.median(times) for name, times in rows.items()}, trainers

def phases(trainer, steps):
    "({phase: median milliseconds}, median milliseconds of the whole step) over `steps` steps of `Trainer.step`'s calls, timed one by one."
    rows = []
    for _ in range(steps):
        t0 = time.perf_counter()
        images, masks = trainer._next_batch()
        images = images.contiguous(memory_format=torch.channels_last)
        t1 = time.perf_counter(); logits = trainer.model(images)
        t2 = time.perf_counter(); loss = trainer.loss(logits, masks)
        t3 = time.perf_counter(); trainer.optimizer.zero_grad(set_to_none=True); loss.backward()
        t4 = time.perf_counter(); trainer.optimizer.step(); trainer.scheduler.step(); trainer.step_count += 1; loss.item()
        t5 = time.perf_counter()
        rows.append([t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4])
    split = {name: 1000 * statistics.median(r[i] for r in rows) for i, name in enumerate(('data', 'forward', 'loss', 'backward', 'optimiser'))}
    return split, 1000 * statistics.median(sum(r) for r in rows)

def _ddp_run(rank, steps, warmup, port, out):
    "Worker of the data-parallel measurement: rank `rank` of 2 single-thread processes (gloo), seconds per step."
    os.environ.update(RANK=str(rank), WORLD_SIZE='2', LOCAL_RANK=str(rank), MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as d:
        trainer = Trainer(TrainConfig(run_dir=d, val_split=None, steps=steps + warmup), progress=False)
        seconds_per_step(trainer, warmup)
        torch.distributed.barrier()
        out[rank] = seconds_per_step(trainer, steps)
        torch.distributed.destroy_process_group()

def data_parallel(steps, warmup):
    "Seconds per step of one run split over two single-thread processes (the batch of 8 as 2 x 4, synchronised BN)."
    with mp.Manager() as manager:
        out = manager.dict()
        procs = [mp.get_context('spawn').Process(target=_ddp_run, args=(r, steps, warmup, 29500 + os.getpid() % 1000, out)) for r in (0, 1)]
        for p in procs: p.start()
        for p in procs: p.join()
        return max(out.values())

def _single_thread_run(args):
    "Worker of the side-by-side measurement: one single-thread run, seconds per step."
    steps, warmup = args
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as d:
        trainer = Trainer(TrainConfig(run_dir=d, val_split=None, steps=steps + warmup), progress=False)
        seconds_per_step(trainer, warmup)
        return seconds_per_step(trainer, steps)

def main(steps=40, warmup=5, repeats=5, out=None, compile=True):
    load_before = os.getloadavg()  # 1, 5 and 15 minutes, before any work: the benchmark itself keeps both cores busy
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as d:
        results, trainers = interleaved(VARIANTS, d, steps, warmup, repeats)
        split, phase_step = phases(trainers['now (channels-last, in memory)'], steps * repeats)
    # the ways tried and not kept, each against the current defaults in the same interleaved way
    tried = {'now': {}, 'a DataLoader worker process': dict(workers=1)}
    if compile: tried['torch.compile (inductor)'] = dict(compiled=True)
    with tempfile.TemporaryDirectory() as d: times, _ = interleaved(tried, d, steps, warmup, repeats)
    now = results['now (channels-last, in memory)']
    alternatives = {name: t / times['now'] for name, t in times.items() if name != 'now'}
    alternatives['two processes x 1 thread (DDP, gloo)'] = data_parallel(steps, warmup) / now
    # two cores: one run on 2 threads (measured above, 'now') vs two 1-thread runs at once (total steps/s)
    with mp.get_context('spawn').Pool(2) as pool: pair = pool.map(_single_thread_run, [(steps * 2, warmup)] * 2)
    base = results['before (NCHW, decode every step)']
    print(f"{'variant (2 threads)':<36}{'s/step':>9}{'steps/s':>9}{'vs before':>11}")
    for name, s in results.items(): print(f'{name:<36}{s:>9.4f}{1 / s:>9.2f}{base / s:>10.2f}x')
    print('phases of one step now (ms): ' + ', '.join(f'{k} {v:.1f}' for k, v in split.items()) + f' (sum {sum(split.values()):.1f}; whole step in the same loop {phase_step:.1f})')
    for name, ratio in alternatives.items(): print(f'tried: {name:<40} {ratio:.2f}x the time of a step now')
    print(f"two single-thread runs side by side: {pair[0]:.4f} and {pair[1]:.4f} s/step each, "
          f"{1 / pair[0] + 1 / pair[1]:.2f} steps/s together vs {1 / now:.2f} for one 2-thread run "
          f"({(1 / pair[0] + 1 / pair[1]) * now:.2f}x)")
    record = dict(seconds_per_step=results, side_by_side_single_thread=pair, steps=steps, repeats=repeats,
                  speedup=base / now, two_runs_vs_one=(1 / pair[0] + 1 / pair[1]) * now,
                  bf16_vs_fp32=now / results['now + bf16 autocast'], phases_ms=split, phases_step_ms=phase_step,
                  tried_time_vs_now=alternatives,
                  torch=torch.__version__, deeplab_nb=deeplab_nb.__version__, cpu=platform.processor() or platform.machine(),
                  cpu_model=_cpu_model(), cores=os.cpu_count(), load_average_before=load_before, load_average_after=os.getloadavg())
    if out: open(out, 'w').write(json.dumps(record, indent=1) + '\n'); print('written', out)
    return record

if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--steps', type=int, default=40); parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--out', default=None)
    parser.add_argument('--no-compile', action='store_true', help='skip torch.compile (its compilation takes minutes)')
    args = parser.parse_args()
    main(args.steps, repeats=args.repeats, out=args.out, compile=not args.no_compile)
