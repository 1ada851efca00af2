"""CPU inference benchmark of issue 16 (chapter 14c_cpu): DeepLabv3+ ResNet-101 and Xception-65 at output stride 16 and
the CPU default model, at 513x513, random-but-fixed weights (seed 0, random BN statistics).

For each model, in one run and timed interleaved (every candidate once per round, medians over the rounds): the
model as it is (fp32 eager), `for_cpu(model)` (fp32 prepared), `for_cpu(model, 'bf16')`, the prepared model under
`torch.compile` (inductor with freezing; only the models named by --compile), ONNX Runtime and OpenVINO on the
`torch.onnx` export of the same model, torchvision's DeepLabv3-ResNet-101 (same weights policy) as the per-Multiply-Add
reference, and the machine's yardstick. In fp32 that is the CPU's peak, measured: fused multiply-adds on registers only (bench/fma_peak.c,
compiled here with the system's C compiler) on one core, times the cores, which no convolution can beat. Beside it, for
reference, the best kernels of each library: a 2048^3 matrix product, a large oneDNN 1x1 convolution (1024 channels on
64x64), a oneDNN 3x3 one (256 channels) and, where installed, both convolutions under ONNX Runtime. Kernels alone were
not a peak: on an AVX2-only AMD EPYC, ONNX Runtime ran the full models at 102-125% of the best of them. Where no C
compiler is found, or in bf16 (where native), the yardstick falls back to the best kernel, and a row above it is flagged. Then time per image against image size for ResNet-101 and a
per-operator profile of the prepared fp32 ResNet-101. Writes bench.json, bench.txt and profile.txt to --out.

    python bench/cpu_inference.py                 # about 5-8 minutes on 2 cores
    python bench/cpu_inference.py --compile deeplabv3plus_resnet101   # also torch.compile (+1-2 minutes idle)
    python bench/cpu_inference.py --repeats 3 --models deeplabv3plus_xception_tiny --sizes 129 257   # a quick look
    python bench/cpu_inference.py --table-only    # rewrite bench.txt from bench.json, timing nothing

Peers are optional (pip install 'deeplab_nb[bench]'): a missing one is reported and skipped.
"""
import argparse, ctypes, importlib.util, json, logging, os, shutil, subprocess, sys, tempfile, time, warnings
from pathlib import Path

import torch

from deeplab_nb.cpu import export_onnx, for_cpu, _median_times, native_bf16, _peak_rate, _yardsticks
from deeplab_nb.study_runner import _cpu_model
from deeplab_nb.model import build_model
from deeplab_nb.resnet import _randomize_batchnorm
from deeplab_nb.separable import count_madds

MODELS = ('deeplabv3plus_resnet101', 'deeplabv3plus_xception65', 'deeplabv3plus_xception_tiny')


def yardsticks():
    "precision -> its yardsticks (name -> (call, FLOPs)): fp32 always, bf16 where the CPU computes it natively."
    return {'fp32': _yardsticks(torch.float32), **({'bf16': _yardsticks(torch.bfloat16)} if native_bf16() else {})}


def ort_session(path, threads):
    "An ONNX Runtime session of the .onnx file `path` on the CPU, with `threads` intra-op threads."
    import onnxruntime
    options = onnxruntime.SessionOptions(); options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])


def extra_yardsticks(folder, threads, channels=1024, side=64, channels_3x3=256):
    """fp32 kernels beyond chapter 14c's two (torch's sgemm, oneDNN's large 1x1 convolution): oneDNN's 3x3 convolution
    (256 channels, the ResNet's most common 3x3) and, where ONNX Runtime is installed, its own kernels (MLAS) on the same
    1x1 and 3x3 convolutions. On an AVX2-only AMD EPYC, ONNX Runtime ran the full models at 102-107% of the better of
    sgemm and oneDNN's 1x1 convolution, so those two are not that machine's peak: the yardstick must be the best kernel of
    any library the table compares."""
    shapes = {f'fp32 conv1x1 {channels}ch {side}^2': (channels, 1), f'fp32 conv3x3 {channels_3x3}ch {side}^2': (channels_3x3, 3)}
    convs = {name: torch.nn.Conv2d(c, c, k, padding=k // 2, bias=False).eval() for name, (c, k) in shapes.items()}
    flop = {name: 2 * k * k * c * c * side * side for name, (c, k) in shapes.items()}
    images = {name: torch.randn(1, c, side, side) for name, (c, _) in shapes.items()}
    name3 = f'fp32 conv3x3 {channels_3x3}ch {side}^2'
    out = {name3: ((lambda: convs[name3](images[name3])), flop[name3])}
    if importlib.util.find_spec('onnxruntime'):
        for k, (name, conv) in enumerate(convs.items()):
            path = Path(folder) / f'yardstick_{k}.onnx'
            with torch.no_grad():
                torch.onnx.export(conv, (images[name],), str(path), dynamo=True, input_names=['x'], verbose=False)
            session = ort_session(path, threads)
            out[f'{name} ONNX Runtime'] = ((lambda session=session, feed={'x': images[name].numpy()}: session.run(None, feed)), flop[name])
    return out


def fma_peak(folder, threads, seconds=0.2):
    """The CPU's fp32 peak as a yardstick {name: (call, FLOPs)}: bench/fma_peak.c compiled with `cc -O2 -march=native`
    and called through ctypes on one thread, sized to run about `seconds`, its FLOPs counted `threads` times: one core's
    rate at the clock a single busy core reaches, times the cores. No program on `threads` cores can beat it (an
    all-core clock is never above a one-core clock). Timed on one thread because a thread that another runtime leaves
    spinning after its call (OpenMP, ONNX Runtime's pool) takes a core from a many-thread loop, which then reads low:
    measured in the benchmark, the 2-thread loop ran at 176 GFLOP/s, 1% under ResNet-101 itself, against 200 when run
    alone. {} (with the reason on stderr) without a C compiler."""
    compiler = shutil.which('cc') or shutil.which('gcc') or shutil.which('clang')
    library = Path(folder) / 'fma_peak.so'
    try:
        if compiler is None: raise OSError('no C compiler (cc, gcc, clang) on PATH')
        subprocess.run([compiler, '-O2', '-march=native', '-shared', '-fPIC', '-pthread', str(Path(__file__).with_name('fma_peak.c')),
                        '-o', str(library)], check=True, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError) as e:
        print(f'fp32 peak not measured ({getattr(e, "stderr", None) or e}): the fp32 yardstick is the best kernel', file=sys.stderr)
        return {}
    lib = ctypes.CDLL(str(library))
    lib.fma_peak.argtypes, lib.fma_flops.argtypes, lib.fma_flops.restype = [ctypes.c_long, ctypes.c_int], [ctypes.c_long, ctypes.c_int], ctypes.c_double
    start = time.perf_counter(); lib.fma_peak(1_000_000, 1); elapsed = time.perf_counter() - start  # calibrate
    iterations = max(1, int(1_000_000 * seconds / elapsed))
    return {f'fp32 FMA peak (1 core x {threads})': ((lambda: lib.fma_peak(iterations, 1)), threads * lib.fma_flops(iterations, 1))}


def precision(candidate):
    "The precision a candidate computes in, whose yardstick it is measured against."
    return 'bf16' if 'bf16' in candidate else 'fp32'


def fixed_model(name):
    "The model `name` (21 classes, OS 16) with random-but-fixed weights and BN statistics, in eval mode."
    torch.manual_seed(0)
    return _randomize_batchnorm(build_model(name, num_classes=21)).eval()


def torchvision_deeplabv3():
    "torchvision's DeepLabv3-ResNet-101 (21 classes, no aux head), random-but-fixed weights, returning the logits only."
    import torchvision
    torch.manual_seed(0)
    net = _randomize_batchnorm(torchvision.models.segmentation.deeplabv3_resnet101(weights=None, weights_backbone=None,
                                                                                   num_classes=21, aux_loss=False)).eval()
    return lambda x: net(x)['out'], net


def compiled(model, image):
    "`model` under torch.compile (inductor, freezing), compiled for `image`; its compile seconds and largest logit error relative to `model`."
    net = torch.compile(model, options={'freezing': True})
    start = time.perf_counter()
    with torch.no_grad(): out = net(image)
    seconds = time.perf_counter() - start
    with torch.no_grad(): reference = model(image)
    return net, seconds, ((out.float() - reference.float()).abs().max() / reference.float().abs().max()).item()


def onnx_runners(onnx_path, image, threads):
    "name -> call for ONNX Runtime (fp32) and OpenVINO (f32, and bf16 where native), whichever are installed."
    runners, notes = {}, {}
    if importlib.util.find_spec('onnxruntime'):
        import onnxruntime
        session = ort_session(onnx_path, threads)
        runners['ONNX Runtime fp32'] = lambda session=session, feed={'image': image.numpy()}: session.run(None, feed)
        notes['onnxruntime'] = onnxruntime.__version__
    else: notes['onnxruntime'] = 'not installed'
    if importlib.util.find_spec('openvino'):
        import openvino
        core = openvino.Core()
        for precision in ('f32', 'bf16') if native_bf16() else ('f32',):
            net = core.compile_model(str(onnx_path), 'CPU', {'INFERENCE_PRECISION_HINT': precision,
                                                             'INFERENCE_NUM_THREADS': threads, 'PERFORMANCE_HINT': 'LATENCY'})
            runners[f'OpenVINO {precision}'] = (lambda request=net.create_infer_request(), feed={0: image.numpy()}:
                                                request.infer(feed))
        notes['openvino'] = openvino.__version__
    else: notes['openvino'] = 'not installed'
    return runners, notes


def bench_model(name, size, repeats, compile_it, tv, folder, threads):
    "One model: Multiply-Adds and every candidate's median latency, timed in the same rounds as the yardsticks and torchvision."
    model, image = fixed_model(name), torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    madds = count_madds(model, image)
    sticks = yardsticks()
    sticks['fp32'].update(extra_yardsticks(folder, threads))
    sticks['fp32'].update(fma_peak(folder, threads))
    calls = {**{stick: call for kind in sticks.values() for stick, (call, _) in kind.items()},
             'torchvision DeepLabv3-R101 fp32 eager': lambda: tv[0](image), 'fp32 eager': lambda: model(image)}
    compile_seconds, compile_error = {}, {}
    prepared = for_cpu(model)
    calls['fp32 prepared'] = lambda: prepared(image)
    if native_bf16():
        prepared_bf16 = for_cpu(model, 'bf16')
        calls['bf16 prepared'] = lambda: prepared_bf16(image)
    if compile_it:
        net, compile_seconds['fp32'], compile_error['fp32'] = compiled(prepared, image)
        calls['fp32 prepared + torch.compile'] = lambda: net(image)
        if native_bf16():
            net_bf16, compile_seconds['bf16'], compile_error['bf16'] = compiled(prepared_bf16, image)
            calls['bf16 prepared + torch.compile'] = lambda: net_bf16(image)
    start = time.perf_counter()
    onnx_path = export_onnx(model, Path(folder) / f'{name}.onnx', (size, size))
    export_seconds = time.perf_counter() - start
    peers, versions = onnx_runners(onnx_path, image, threads)
    calls.update(peers)
    seconds = _median_times(calls, repeats)
    return dict(model=name, size=size, madds=madds, seconds=seconds, compile_seconds=compile_seconds, compile_error=compile_error,
                onnx_export_seconds=export_seconds, versions=versions,
                yardstick_flop={kind: {stick: flop for stick, (_, flop) in sticks[kind].items()} for kind in sticks})


def rows(result, tv_madds):
    "The table rows of one model: latency, GFLOP/s, % of its precision's peak (None for a run without yardsticks), vs torchvision per Multiply-Add, vs ONNX Runtime."
    seconds, flop = result['seconds'], 2 * result['madds']
    sticks = result.get('yardstick_flop', {})  # recorded before 2026-12-07: no yardstick but sgemm, and no percentage
    peak = {kind: _peak_rate(seconds, {stick: (None, f) for stick, f in flops.items()}) for kind, flops in sticks.items()}
    tv_seconds_per_madd = seconds['torchvision DeepLabv3-R101 fp32 eager'] / tv_madds
    ort = seconds.get('ONNX Runtime fp32')
    out = []
    for candidate, latency in seconds.items():
        if candidate.startswith(('sgemm', 'torchvision')) or any(candidate in flops for flops in sticks.values()): continue
        rate = precision(candidate) in peak and 100 * flop / latency / peak[precision(candidate)]
        out.append(dict(candidate=candidate, seconds=latency, gflops=flop / latency / 1e9,
                        percent_peak=rate if rate is not False else None,
                        vs_torchvision_per_madd=tv_seconds_per_madd / (latency / result['madds']),
                        vs_onnxruntime=None if ort is None else ort / latency,
                        vs_fp32_eager=seconds['fp32 eager'] / latency))
    return out


def size_sweep(name, sizes, repeats):
    "Median time per image at each size for the model as it is, prepared fp32 and prepared bf16 (interleaved)."
    model = fixed_model(name)
    prepared, sweep = for_cpu(model), {}
    prepared_bf16 = for_cpu(model, 'bf16') if native_bf16() else None
    for size in sizes:
        image = torch.rand(1, 3, size, size)
        calls = {'fp32 eager': lambda: model(image), 'fp32 prepared': lambda: prepared(image)}
        if prepared_bf16 is not None: calls['bf16 prepared'] = lambda: prepared_bf16(image)
        sweep[size] = _median_times(calls, repeats)
    return dict(model=name, seconds=sweep)


def profile(name, size):
    "Per-operator (and per input shape) CPU time of the prepared fp32 model: where the time goes."
    from torch.profiler import ProfilerActivity, profile as torch_profile
    prepared, image = for_cpu(fixed_model(name)), torch.rand(1, 3, size, size)
    with torch.no_grad():
        prepared(image)
        with torch_profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof: prepared(image)
    averages = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in averages)
    by_op = averages.table(sort_by='self_cpu_time_total', row_limit=12)
    by_shape = prof.key_averages(group_by_input_shape=True).table(sort_by='self_cpu_time_total', row_limit=15)
    conv = sum(e.self_cpu_time_total for e in averages if 'conv' in e.key)
    return dict(model=name, size=size, total_ms=total / 1e3, convolution_share=conv / total), by_op, by_shape


def table(results, tv_madds):
    "The printed table; a row above its precision's peak is flagged, since the yardstick then is not the peak."
    lines = [f"{'model':28} {'GMAC':>6} {'candidate':32} {'latency s':>9} {'GFLOP/s':>8} {'% peak':>7} "
             f"{'vs tv/MAdd':>10} {'vs ORT':>7} {'vs eager':>8}"]
    for result in results:
        for row in rows(result, tv_madds):
            ort = '' if row['vs_onnxruntime'] is None else f"{row['vs_onnxruntime']:.2f}x"
            percent = '-' if row['percent_peak'] is None else f"{row['percent_peak']:.0f}%"
            lines.append(f"{result['model']:28} {result['madds'] / 1e9:6.1f} {row['candidate']:32} {row['seconds']:9.3f} "
                         f"{row['gflops']:8.1f} {percent:>7} {row['vs_torchvision_per_madd']:9.2f}x "
                         f"{ort:>7} {row['vs_fp32_eager']:7.2f}x" + ('  ABOVE THE YARDSTICK' if (row['percent_peak'] or 0) > 100 else ''))
        for kind, flops in result.get('yardstick_flop', {}).items():
            lines.append(f"{'':28} {kind} yardstick in the same rounds: " + ', '.join(
                f"{stick} {flop / result['seconds'][stick] / 1e9:.1f}" for stick, flop in flops.items()) + ' GFLOP/s')
        if 'yardstick_flop' not in result:
            lines.append(f"{'':28} no yardstick in this run (recorded before the yardstick kernels): % peak needs a re-run")
    return '\n'.join(lines)


def save(out, record):
    "Write what is measured so far (a run cut short still leaves its finished models)."
    (out / 'bench.json').write_text(json.dumps(record, indent=1))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--models', nargs='+', default=MODELS)
    parser.add_argument('--size', type=int, default=513)
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--compile', nargs='*', default=[],
                        help='models also timed under torch.compile (compiling takes 30-60 s per model and precision on 2 idle cores, minutes under load)')
    parser.add_argument('--sizes', nargs='*', type=int, default=[129, 257, 385, 513], help='size sweep (ResNet-101)')
    parser.add_argument('--sweep-model', default='deeplabv3plus_resnet101')
    parser.add_argument('--threads', type=int, default=os.cpu_count())
    parser.add_argument('--out', default='data/results/cpu_inference')
    parser.add_argument('--table-only', action='store_true', help='rewrite bench.txt from the recorded bench.json; time nothing')
    args = parser.parse_args(argv)
    if args.table_only:
        record = json.loads((Path(args.out) / 'bench.json').read_text())
        tv_madds = record['environment']['torchvision_deeplabv3_madds']
        record['rows'] = {r['model']: rows(r, tv_madds) for r in record['results']}
        text = table(record['results'], tv_madds)
        save(Path(args.out), record)
        (Path(args.out) / 'bench.txt').write_text(text + '\n')
        print(text)
        return record
    warnings.filterwarnings('ignore'); logging.getLogger('torch.onnx').setLevel(logging.ERROR)
    torch.set_num_threads(args.threads)
    out = Path(args.out); out.mkdir(parents=True, exist_ok=True)
    started, load_before = time.time(), os.getloadavg()
    tv = torchvision_deeplabv3()
    tv_madds = count_madds(tv[1], torch.rand(1, 3, args.size, args.size))
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models:
            results.append(bench_model(name, args.size, args.repeats, name in args.compile, tv, folder, args.threads))
            print(f'{name}: done at {time.time() - started:.0f} s', file=sys.stderr, flush=True)
            save(out, dict(results=results, rows={r['model']: rows(r, tv_madds) for r in results}, partial=True))
    sweep = size_sweep(args.sweep_model, args.sizes, args.repeats) if args.sizes else None
    save(out, dict(results=results, rows={r['model']: rows(r, tv_madds) for r in results}, sweep=sweep, partial=True))
    summary, by_op, by_shape = profile(args.sweep_model, args.size)
    text = table(results, tv_madds)
    environment = dict(torch=torch.__version__, threads=args.threads, native_bf16=native_bf16(),
                       avx512_bf16=torch.cpu._is_avx512_bf16_supported(), amx=torch.cpu._is_amx_tile_supported(),
                       cpu=_cpu_model(), load_average_before=load_before,
                       load_average_after=os.getloadavg(), seconds=time.time() - started,
                       torchvision_deeplabv3_madds=tv_madds, date=time.strftime('%Y-%m-%d %H:%M'))
    print(text); print(f"load average before {load_before}, after {environment['load_average_after']}; "
                       f"{environment['seconds']:.0f} s")
    record = dict(environment=environment, results=results, rows={r['model']: rows(r, tv_madds) for r in results},
                  sweep=sweep, profile=summary)
    save(out, record)
    (out / 'bench.txt').write_text(text + '\n')
    (out / 'profile.txt').write_text(f"prepared fp32 {args.sweep_model} {args.size}x{args.size}, one pass, "
                                     f"{args.threads} threads\n\nby operator\n{by_op}\nby operator and input shape\n{by_shape}")
    return record


if __name__ == '__main__': main()
