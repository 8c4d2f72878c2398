#!/usr/bin/env python3
"""Paper estimate of the sieve kernels' throughput from their SASS (NVIDIA) and ISA (AMD).

Called by scripts/gpu-estimate.sh, which fetches the tools and the kernel source. For every
kernel that runs at the pipeline shape it reads the compiled code, finds the loops marked
`// est:NAME` in kernels/gpu/sieve.cu (by the source line of their instructions), costs each
loop body in instructions, multiplies by the trips the shape implies, and turns the total into
seeds/s with a throughput model:

  * issue: NVIDIA 64 integer lanes/clk/SM = 2 warp instructions/clk/SM (sm_86, sm_90); AMD
    gfx1030 2 SIMD32 per CU, one wave32 instruction each per clk (scalar s_* instructions are
    counted too: an upper bound on issue slots);
  * memory pipe: 1 shared/global warp instruction per clk per SM/CU;
  * latency: with W resident warps per SM, each warp's instructions cost ~LAT cycles when no
    other warp can cover them (dependent chains: init_genrand, the generator step), so the
    rate is at most W * clk / (instructions * LAT) per SM.

The predicted rate is the lowest of the three and the "bound" column names it. Everything is
an estimate; scripts/gpu-check.sh prints the measured rate beside it on a GPU machine.
"""
import argparse
import json
import math
import os
import re
import subprocess
import sys
from collections import defaultdict

# Device models: (name, units, GHz, max warps per unit, regs per unit, smem per unit bytes,
# lanes of issue per clk per unit, warp width).
DEVICES = {
    "sm_90": dict(label="H200 (sm_90)", units=132, ghz=1.98, max_warps=64, regs=65536,
                  smem=227 * 1024, max_blocks=32, lanes=64, warp=32),
    "sm_86": dict(label="RTX 3080 Ti (sm_86)", units=80, ghz=1.67, max_warps=48, regs=65536,
                  smem=100 * 1024, max_blocks=16, lanes=64, warp=32),
    "gfx1030": dict(label="RX 6600 (gfx1030)", units=28, ghz=2.49, max_warps=32, regs=None,
                    smem=64 * 1024, max_blocks=16, lanes=64, warp=32),
}
LAT = 4.0  # cycles of a dependent integer instruction (sm_86/sm_90 ~4, RDNA2 ~5 per wave)
BLOCK = 256

# The pipeline shape. Its modulus is taken below 2^32/3 (a game's roll, say): the 32- or 64-bit
# Barrett path, the one the stream kernels are compiled for with SEEDQ_ONLY_REDUCTION.
SHAPE = dict(k=512, skip_min=0, skip_max=20, threshold=0.01, offset=0)
BITS64 = {"xorshift64", "xoshiro256pp", "sfc64"}


def reduction_define(family):
    return f"-DSEEDQ_ONLY_REDUCTION={2 if family in BITS64 else 1}"


def need(shape):
    return math.ceil(shape["threshold"] * shape["k"] - 1e-12)


def landings_per_block(shape, block):
    """Landings of the shape per block of `block` outputs (absolute output numbers)."""
    counts = defaultdict(int)
    k, off = shape["k"], shape["offset"]
    for t in range(shape["skip_min"], shape["skip_max"] + 1):
        for i in range(k):
            j = off + t + i * (t + 1)
            counts[j // block] += 1
    return counts


def trips(kernel, shape):
    """Trips of every est: loop of `kernel` per warp iteration (what one lane runs), and the
    seeds a warp iteration covers (1: a warp per seed; 32: a lane per seed; 256: a lane per 8
    consecutive seeds)."""
    k = shape["k"]
    nskips = shape["skip_max"] - shape["skip_min"] + 1
    stream = k * (shape["skip_max"] + 1)
    if kernel == "stream":
        hit = len({shape["offset"] + t + i * (t + 1)
                   for t in range(shape["skip_min"], shape["skip_max"] + 1) for i in range(k)})
        return dict(stream_seed=1, vote=math.ceil(stream / 64), output=stream, hit=hit,
                    landing=k * nskips), 32
    if kernel == "mt_stream":
        # A group seeds 32 seeds at once (one init_genrand chain per lane, 77 trips of 8 words
        # after the first 8), then takes them one at a time: per seed, one twist per block up
        # to the last one a draw lands on, and per block with landings its entries (padded to
        # whole rounds of 32) 32 at a time.
        per_block = landings_per_block(shape, 624)
        last = max(per_block)
        rounds = sum(math.ceil(n / 32) for n in per_block.values())
        pairs = shape["skip_max"] - shape["skip_min"] + 1
        return dict(mt_batch=1 / 32, mt_init=(624 // 8 - 1) / 32, mt_seed=1,
                    mt_reset=math.ceil(pairs / 32), mt_block=len(per_block), mt_twist=last + 1,
                    mt_test=rounds), 1
    if kernel == "jump":
        return dict(skip=nskips, draw=k * nskips), 32
    if kernel == "lcg_batch":
        return dict(lcg_skip=nskips, lcg_draw=k * nskips), 256
    raise ValueError(kernel)


# Which kernel entry runs each family at the pipeline shape, and its model.
KERNELS = [
    ("mt19937", "seedq_sieve_mt19937_stream", "mt_stream"),
    ("xorshift32", "seedq_sieve_xorshift32", "stream"),
    ("xorshift64", "seedq_sieve_xorshift64", "stream"),
    ("xorshift128", "seedq_sieve_xorshift128", "stream"),
    ("xoshiro256pp", "seedq_sieve_xoshiro256pp", "stream"),
    ("sfc64", "seedq_sieve_sfc64", "stream"),
    ("lcg32", "seedq_sieve_lcg32", "lcg_batch"),
    ("java_lcg", "seedq_sieve_java_lcg", "jump"),
    ("pcg32", "seedq_sieve_pcg32", "jump"),
    ("minstd", "seedq_sieve_minstd", "jump"),
    ("philox4x32", "seedq_sieve_philox4x32", "jump"),
]


def est_tags(source_path):
    tags = {}
    for n, line in enumerate(open(source_path, encoding="utf-8"), 1):
        m = re.search(r"// est:(\w+)", line)
        if m:
            tags[n] = m.group(1)
    return tags


class Inst:
    __slots__ = ("addr", "text", "line", "label")

    def __init__(self, addr, text, line):
        self.addr, self.text, self.line = addr, text, line


def parse_sass(text, function):
    """Instructions of `function` from `nvdisasm -g` output: (insts, labels addr map)."""
    insts, labels = [], {}
    inside, line, pending = False, None, []
    for raw in text.splitlines():
        if raw.startswith("\t.section\t.text."):
            inside = raw.split()[1].rstrip(",") == f".text.{function}" or \
                raw.split("\t")[2].startswith(f".text.{function},")
            continue
        if not inside:
            continue
        m = re.match(r'\s*//## File ".*", line (\d+)', raw)
        if m:
            line = int(m.group(1))
            continue
        m = re.match(r"^(\.L_x_\d+):", raw)
        if m:
            pending.append(m.group(1))
            continue
        m = re.match(r"\s*/\*([0-9a-f]{4,})\*/\s+(.*?);", raw)
        if m:
            inst = Inst(int(m.group(1), 16), m.group(2).strip(), line)
            for lab in pending:
                labels[lab] = len(insts)
            pending = []
            insts.append(inst)
    return insts, labels


def sass_branch_target(text):
    m = re.search(r"BRA(?:\.\w+)*\s+(?:!?U?P\w+,\s*)?`\((\.L_x_\d+)\)", text)
    return m.group(1) if m else None


def parse_amdgcn(text, function):
    """Instructions of `function` from hipcc's assembly (.loc lines give the source line)."""
    insts, labels = [], {}
    inside, line, pending = False, None, []
    file_ids = {}
    for raw in text.splitlines():
        s = raw.strip()
        m = re.match(r'\.file\s+(\d+)\s+"([^"]*)"(?:\s+"([^"]*)")?', s)
        if m:
            file_ids[int(m.group(1))] = (m.group(3) or m.group(2))
            continue
        if re.match(rf"^{function}:", s):
            inside = True
            continue
        if inside and (s.startswith(".Lfunc_end") or s.startswith(".size")):
            break
        if not inside:
            continue
        m = re.match(r"\.loc\s+(\d+)\s+(\d+)", s)
        if m:
            fid = int(m.group(1))
            name = file_ids.get(fid, "")
            line = int(m.group(2)) if name.endswith(".cu") or name.endswith(".hip") else line
            continue
        m = re.match(r"^(\.LBB\d+_\d+):", s)
        if m:
            pending.append(m.group(1))
            continue
        if not s or s.startswith((".", ";", "//")) or s.endswith(":"):
            continue
        inst = Inst(len(insts), s.split(";")[0].strip(), line)
        for lab in pending:
            labels[lab] = len(insts)
        pending = []
        insts.append(inst)
    return insts, labels


def amd_branch_target(text):
    m = re.match(r"s_(?:c)?branch\w*\s+(\.LBB\d+_\d+)", text)
    return m.group(1) if m else None


def blocks_of(insts, labels, target_of, arch_amd):
    """Basic blocks [(first, last)] and successor lists."""
    starts = {0} | set(labels.values())
    for i, inst in enumerate(insts):
        if target_of(inst.text) or is_exit(inst.text, arch_amd):
            starts.add(i + 1)
    starts = sorted(x for x in starts if x < len(insts))
    blocks = [(a, (starts[n + 1] if n + 1 < len(starts) else len(insts)) - 1)
              for n, a in enumerate(starts)]
    index = {a: n for n, (a, _) in enumerate(blocks)}
    succ = []
    for n, (a, b) in enumerate(blocks):
        last = insts[b].text
        out = []
        lab = target_of(last)
        # BRA.DIV leads to the fallback for a diverged warp (never taken by these warp-uniform
        # loops): left out of the paths costed.
        if lab and lab in labels and "BRA.DIV" not in last:
            out.append(index[labels[lab]])
        if not is_exit(last, arch_amd) and not (lab and is_unconditional(last, arch_amd)):
            if n + 1 < len(blocks):
                out.append(n + 1)
        succ.append(out)
    return blocks, succ


def is_exit(text, amd):
    if amd:
        return text.startswith("s_endpgm")
    return re.match(r"^(@!?U?P\w+\s+)?EXIT\b", text) is not None and not text.startswith("@")


def is_unconditional(text, amd):
    if amd:
        return text.startswith("s_branch")
    return not text.startswith("@")


def natural_loops(blocks, succ):
    """{header: body block set} of the natural loops: back edges u -> h where h dominates u,
    over the blocks reachable from the entry."""
    n = len(blocks)
    reach, stack = {0}, [0]
    while stack:
        x = stack.pop()
        for y in succ[x]:
            if y not in reach:
                reach.add(y)
                stack.append(y)
    pred = defaultdict(list)
    for u in reach:
        for v in succ[u]:
            pred[v].append(u)
    order = sorted(reach)
    dom = {x: set(reach) for x in reach}
    dom[0] = {0}
    changed = True
    while changed:
        changed = False
        for x in order:
            if x == 0:
                continue
            ps = [dom[p] for p in pred[x] if p in reach]
            new = set.intersection(*ps) | {x} if ps else {x}
            if new != dom[x]:
                dom[x], changed = new, True
    loops_ = defaultdict(set)
    for u in order:
        for h in succ[u]:
            if h in dom[u]:
                body, stack = {h, u}, [u]
                while stack:
                    x = stack.pop()
                    if x == h:
                        continue
                    for p in pred[x]:
                        if p not in body:
                            body.add(p)
                            stack.append(p)
                loops_[h] |= body
    del n
    return loops_, dom


def loop_costs(insts, labels, target_of, tags, amd=False):
    """Per tag: (instructions per trip, memory instructions per trip) of the loop's own body:
    nested tagged loops excluded (costed under their own tag), nested untagged loops counted
    once, blocks on `est:rare` lines (a match, at most `need` times per seed) left out."""
    blocks, succ = blocks_of(insts, labels, target_of, amd)
    loops_, dom = natural_loops(blocks, succ)
    hit_lines = {ln for ln, name in tags.items() if name == "hit"}
    rare = {ln for ln, name in tags.items() if name == "rare"}

    def lines(body):
        return {insts[i].line for b in body for i in range(blocks[b][0], blocks[b][1] + 1)}

    # Each loop takes the tag whose line has the most of its own instructions (those outside
    # every loop nested in it), innermost loops first; a tag goes to one loop only.
    tagged = {}
    for h, body in sorted(loops_.items(), key=lambda x: len(x[1])):
        inner = set()
        for h2, body2 in loops_.items():
            if h2 != h and body2 < body:
                inner |= body2
        per_line = defaultdict(int)
        for b in body - inner:
            for i in range(blocks[b][0], blocks[b][1] + 1):
                per_line[insts[i].line] += 1
        # A tag may sit on several lines: its weight is their instructions together.
        weight = defaultdict(int)
        for ln, name in tags.items():
            if name not in ("rare", "NAME", "hit") and name not in tagged and per_line.get(ln):
                weight[name] += per_line[ln]
        if weight:
            tagged[max(weight, key=lambda n: (weight[n], n))] = body
    costs = {}
    for name, body in tagged.items():
        nested = set()
        for other, obody in tagged.items():
            if other != name and obody < body:
                nested |= obody
        own_blocks = body - nested
        # A path entered at an `est:hit` line: the blocks it dominates are costed under "hit".
        entries = [b for b in own_blocks
                   if any(insts[i].line in hit_lines for i in range(blocks[b][0], blocks[b][1] + 1))]
        entry = min(entries, key=lambda b: len(dom.get(b, ())), default=None)
        # A path is a part of the loop: an entry dominating the whole loop is no split.
        if entry is not None and all(entry in dom.get(b, ()) for b in own_blocks):
            entry = None
        # A match's path: blocks mostly on `est:rare` lines, and every block they dominate.
        rare_entries = {b for b in own_blocks
                        if sum(1 for i in range(blocks[b][0], blocks[b][1] + 1) if insts[i].line in rare) * 2
                        > blocks[b][1] - blocks[b][0] + 1}
        split = defaultdict(list)
        for b in own_blocks:
            idx = range(blocks[b][0], blocks[b][1] + 1)
            if rare_entries & dom.get(b, set()):
                continue
            part = "hit" if entry is not None and entry in dom.get(b, ()) else name
            split[part].extend(idx)
        for part, keep in split.items():
            costs[part] = (len(keep), sum(1 for i in keep if is_mem(insts[i].text)))
    return costs


def is_mem(text):
    op = text.split()[0] if text.split() else ""
    if op.startswith("@"):
        op = text.split()[1]
    return bool(re.match(r"(LDS|STS|LDG|STG|ATOMS|ATOMG|RED|LD\b|ST\b|ds_|global_|buffer_|flat_)", op))


def occupancy_nv(dev, regs, smem, threads_per_block=BLOCK):
    warps_per_block = threads_per_block // 32
    regs_per_warp = math.ceil(max(regs, 1) * 32 / 256) * 256
    by_regs = dev["regs"] // (regs_per_warp * warps_per_block)
    by_smem = dev["smem"] // (smem + 1024) if smem else dev["max_blocks"]
    blocks = min(by_regs, by_smem, dev["max_blocks"], dev["max_warps"] // warps_per_block)
    return blocks * warps_per_block


def occupancy_amd(dev, vgprs, lds):
    # wave32: 1024 VGPRs per lane per SIMD (granule 8), at most 16 waves per SIMD, 2 SIMDs.
    per_simd = min(16, 1024 // (math.ceil(max(vgprs, 1) / 8) * 8))
    waves = 2 * per_simd
    if lds:
        blocks = dev["smem"] // lds
        waves = min(waves, blocks * (BLOCK // 32))
    return min(waves, dev["max_warps"])


def predict(dev, costs, model, warps, shape):
    trip, seeds_per_iter = trips(model, shape)
    missing = [t for t in trip if t not in costs]
    # Warp instructions of one warp iteration (every lane runs the same stream).
    insts = sum(costs.get(t, (0, 0))[0] * n for t, n in trip.items())
    mem = sum(costs.get(t, (0, 0))[1] * n for t, n in trip.items())
    per_seed = insts / seeds_per_iter
    outputs = shape["k"] * (shape["skip_max"] + 1)
    clk = dev["units"] * dev["ghz"] * 1e9
    rates = {
        "issue": clk * (dev["lanes"] / 32) / max(per_seed, 1e-9),
        "LSU": clk * 1.0 / max(mem / seeds_per_iter, 1e-9),
        # W resident warps each needing insts*LAT cycles per iteration when nothing overlaps.
        "latency": clk * warps * seeds_per_iter / max(insts * LAT, 1e-9),
    }
    bound = min(rates, key=rates.get)
    return dict(insts_per_seed=per_seed, insts_per_output=per_seed / outputs, bound=bound,
                rate=rates[bound], missing=missing)


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def nvrtc_compile(lib, src, opts, out):
    import ctypes
    nvrtc = ctypes.CDLL(lib)
    prog = ctypes.c_void_p()
    code = open(src, "rb").read()
    if nvrtc.nvrtcCreateProgram(ctypes.byref(prog), code, b"sieve.cu", 0, None, None) != 0:
        raise RuntimeError("nvrtcCreateProgram failed")
    arr = (ctypes.c_char_p * len(opts))(*[o.encode() for o in opts])
    rc = nvrtc.nvrtcCompileProgram(prog, len(opts), arr)
    n = ctypes.c_size_t()
    if rc != 0:
        nvrtc.nvrtcGetProgramLogSize(prog, ctypes.byref(n))
        log = ctypes.create_string_buffer(n.value)
        nvrtc.nvrtcGetProgramLog(prog, log)
        raise RuntimeError("NVRTC: " + log.value.decode(errors="replace"))
    nvrtc.nvrtcGetPTXSize(prog, ctypes.byref(n))
    ptx = ctypes.create_string_buffer(n.value)
    nvrtc.nvrtcGetPTX(prog, ptx)
    open(out, "wb").write(ptx.value)


def ptxas_resources(stderr):
    """{function: (registers, shared bytes, spill+stack bytes)} from `ptxas -v`."""
    res, fn = {}, None
    for line in stderr.splitlines():
        m = re.search(r"Compiling entry function '(\w+)'", line)
        if m:
            fn = m.group(1)
            res[fn] = [0, 0, 0]
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m and fn:
            res[fn][2] = sum(int(x) for x in m.groups())
        m = re.search(r"Used (\d+) registers", line)
        if m and fn:
            res[fn][0] = int(m.group(1))
            m2 = re.search(r"(\d+) bytes smem", line)
            res[fn][1] = int(m2.group(1)) if m2 else 0
    return res


def analyse_nvidia(arch, args, rows):
    dev = DEVICES[arch]
    cc = arch[3:]
    for family, entry, model in KERNELS:
        stem = os.path.join(args.src, f"{family}-sm_{cc}")
        base = [l.strip() for l in open(stem + ".opts") if l.strip()]
        # Twice: as the backend compiles it (registers, shared memory, spills: what runs), and
        # with only the shape's reduction instantiated and line info (the loops costed).
        builds = {}
        for kind, opts in (("full", base), ("costed", base + ["-lineinfo", reduction_define(family)])):
            ptx = os.path.join(args.work, f"{family}-{arch}-{kind}.ptx")
            cubin = os.path.join(args.work, f"{family}-{arch}-{kind}.cubin")
            try:
                nvrtc_compile(args.nvrtc, stem + ".cu", opts, ptx)
            except Exception as e:  # noqa: BLE001 - reported as the row's reason
                builds[kind] = f"NVRTC failed: {e}"
                continue
            r = run([args.ptxas, "-v", "-lineinfo", "--gpu-name", arch, "-o", cubin, ptx])
            builds[kind] = (ptx, cubin, r) if r.returncode == 0 else f"ptxas failed: {r.stderr[-300:]}"
        if any(isinstance(b, str) for b in builds.values()):
            rows[(family, arch)] = dict(skipped="; ".join(b for b in builds.values() if isinstance(b, str)))
            continue
        ptx, _, full = builds["full"]
        _, cubin, _ = builds["costed"]
        resources = ptxas_resources(full.stderr)
        sass = run([args.nvdisasm, "-g", "-c", cubin]).stdout
        spills = {f: v[2] for f, v in resources.items() if v[2]}
        regs, smem, _ = resources.get(entry, [0, 0, 0])
        insts, labels = parse_sass(sass, entry)
        costs = loop_costs(insts, labels, sass_branch_target, est_tags(stem + ".cu"))
        warps = occupancy_nv(dev, regs, smem)
        p = predict(dev, costs, model, warps, SHAPE)
        rows[(family, arch)] = dict(entry=entry, regs=regs, smem=smem, warps=warps,
                                    occupancy=warps / dev["max_warps"], spills=spills,
                                    local=".local" in open(ptx).read(), costs=costs, **p)


def hip_resources(stderr):
    res, fn = {}, None
    for line in stderr.splitlines():
        m = re.search(r"Function Name: (\w+)", line)
        if m:
            fn = m.group(1)
            res[fn] = {}
            continue
        m = re.search(r"remark:\s+([A-Za-z][A-Za-z /\[\]]*?): (\d+)", line)
        if m and fn:
            res[fn][m.group(1).strip()] = int(m.group(2))
    return res


def analyse_amd(arch, args, rows):
    dev = DEVICES[arch]
    for family, entry, model in KERNELS:
        src = os.path.join(args.src, f"{family}-sm_90.cu")
        define = [l.strip() for l in open(os.path.join(args.src, f"{family}-sm_90.opts"))
                  if l.strip().startswith("-D")]
        asm = os.path.join(args.work, f"{family}-{arch}.s")
        env = {**os.environ, "ROCM_PATH": os.environ.get("ROCM_PATH", "/usr")}
        hip = [args.hipcc, "-x", "hip", "-O3", "-std=c++17", "--cuda-device-only", "-S",
               f"--offload-arch={arch}", "-Rpass-analysis=kernel-resource-usage", *define, src]
        # As build.rs compiles it (resources), then the shape's reduction only, with line info.
        full = run(hip + ["-o", asm + ".full"], env=env)
        r = run(hip + ["-g", reduction_define(family), "-o", asm], env=env)
        if full.returncode != 0 or r.returncode != 0:
            bad = full if full.returncode != 0 else r
            rows[(family, arch)] = dict(skipped=f"hipcc failed: {bad.stderr.strip()[-300:]}")
            continue
        res = hip_resources(full.stderr).get(entry, {})
        vgprs = res.get("VGPRs", 0)
        lds = res.get("LDS Size [bytes/block]", 0)
        scratch = res.get("ScratchSize [bytes/lane]", 0)
        text = open(asm, encoding="utf-8", errors="replace").read()
        insts, labels = parse_amdgcn(text, entry)
        costs = loop_costs(insts, labels, amd_branch_target, est_tags(src), amd=True)
        warps = occupancy_amd(dev, vgprs, lds)
        p = predict(dev, costs, model, warps, SHAPE)
        rows[(family, arch)] = dict(entry=entry, regs=vgprs, smem=lds, warps=warps,
                                    occupancy=warps / dev["max_warps"],
                                    spills={entry: scratch} if scratch else {}, local=False,
                                    costs=costs, **p)


def fmt_rate(r):
    return f"{r / 1e6:,.1f}M" if r < 1e9 else f"{r / 1e9:,.2f}G"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", required=True, help="gpu_source example output")
    ap.add_argument("--work", required=True)
    ap.add_argument("--nvrtc")
    ap.add_argument("--ptxas")
    ap.add_argument("--nvdisasm")
    ap.add_argument("--hipcc")
    ap.add_argument("--skip-nvidia", default="")
    ap.add_argument("--skip-amd", default="")
    ap.add_argument("--json")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    rows = {}
    archs = ["sm_90", "sm_86", "gfx1030"]
    for arch in ("sm_90", "sm_86"):
        if args.skip_nvidia:
            for f, _, _ in KERNELS:
                rows[(f, arch)] = dict(skipped=args.skip_nvidia)
        else:
            analyse_nvidia(arch, args, rows)
    if args.skip_amd:
        for f, _, _ in KERNELS:
            rows[(f, "gfx1030")] = dict(skipped=args.skip_amd)
    else:
        analyse_amd("gfx1030", args, rows)

    sh = SHAPE
    print(f"pipeline shape: k={sh['k']}, skips {sh['skip_min']}..={sh['skip_max']}, threshold "
          f"{sh['threshold']} (need {need(sh)}), offset {sh['offset']}; "
          f"stream {sh['k'] * (sh['skip_max'] + 1)} outputs per seed; no early exit assumed")
    print("columns: registers (VGPRs on gfx1030) / shared bytes per block, resident warps per "
          "SM|CU (occupancy), warp instructions per output, bound, predicted seeds/s")
    hdr = f"{'kernel':<28}" + "".join(f"| {DEVICES[a]['label']:<44}" for a in archs)
    print(hdr)
    print("-" * len(hdr))
    # "?" after a rate: a marked loop was not found in the code, so its cost is missing and the
    # rate is too high. The gfx1030 column's loop attribution (from .loc lines of hipcc's
    # assembly) has not been checked by hand the way the SASS one was: read it with care.
    problems = []
    for family, entry, _ in KERNELS:
        cells = []
        for a in archs:
            r = rows.get((family, a), dict(skipped="not run"))
            if "skipped" in r:
                cells.append(f"skipped: {r['skipped']}"[:44])
                continue
            if r["spills"] or r["local"]:
                problems.append(f"{family} {a}: spills/local memory {r['spills']}")
            if r["missing"]:
                problems.append(f"{family} {a}: loops not found in the code: {r['missing']}")
            flag = "?" if r["missing"] else " "
            cells.append(f"{r['regs']:>3}r/{r['smem'] // 1024:>2}K {r['warps']:>2}w({r['occupancy']:.0%}) "
                         f"{r['insts_per_output']:5.2f}i/o {r['bound']:<7} {fmt_rate(r['rate']):>7}/s{flag}")
        name = f"{family} ({entry.replace('seedq_sieve_', '')})"
        print(f"{name:<28}" + "".join(f"| {c:<44}" for c in cells))
    # The lab cluster: 2x RTX 3080 Ti + 24x RX 6600 over 2^32 seeds, per family.
    print()
    print("26-GPU lab cluster (2x RTX 3080 Ti + 24x RX 6600), 2^32 seeds at the pipeline shape:")
    for family, _, _ in KERNELS:
        a, b = rows.get((family, "sm_86"), {}), rows.get((family, "gfx1030"), {})
        if "rate" in a and "rate" in b:
            total = 2 * a["rate"] + 24 * b["rate"]
            print(f"  {family:<13} {fmt_rate(total):>8} seeds/s -> {2**32 / total:8.1f} s")
        else:
            print(f"  {family:<13} skipped: needs both the sm_86 and the gfx1030 column")
    if args.verbose:
        print()
        for (family, a), r in sorted(rows.items()):
            if "costs" in r:
                print(f"{family} {a}: loop costs (instructions, memory instructions) per trip: {r['costs']}")
    if problems:
        print()
        for p in problems:
            print("WARNING:", p)
    if args.json:
        out = {f"{f}/{a}": {k: v for k, v in r.items() if k != "costs"} for (f, a), r in rows.items()}
        json.dump(out, open(args.json, "w"), indent=1, default=str)
    return 1 if any("spills" in p for p in problems) else 0


if __name__ == "__main__":
    sys.exit(main())
