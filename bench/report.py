"""The arithmetic of bench/run.sh: reads the load tools' output and writes the report.

    report.py h2load LOG [BODY_BYTES]   one run of h2load: value, ok, note, cipher (a line each)
    report.py wrk LOG [BODY_BYTES]      one run of wrk: the same, the cipher line empty
    report.py table --records TSV --machine FILE --aead FILE --out MD --plot DAT [--docs MD]
                    [--h2floor FILE]

With BODY_BYTES the value is payload throughput in MB/s (10^6 bytes) instead of requests/s.
`table` takes every run's record (workload, server, run, value, ok, note, cipher and, for the
load-tool runs, busy: the server's CPU time over the run's wall time), prints the table (median of
the runs, min-max spread, nook/peer ratios) and the same figures per second of server CPU
(value / busy), writes the Markdown results file, the ratios for the bar charts (PLOT, and
PLOT with "-cpu" before its extension for the per-CPU ones) and, with --docs, puts the tables
into docs/performance.md between its "results" markers. Written for Debian's /usr/bin/python3, standard library only.
"""

import argparse
import re
import statistics
import sys

SERVERS = ["nook", "nginx", "h2o"]
PEERS = ["nginx", "h2o"]

# workload -> (figure, what the figure is; "lower" marks the one where less is better)
WORKLOADS = {
    "h2-tls": ("req/s", "h2load -c 64 -m 16 -t 1, GET / (13-byte body), HTTP/2 over TLS"),
    "h2c": ("req/s", "the same over cleartext HTTP/2 (prior knowledge)"),
    "h1-tls": ("req/s", "h2load --h1 -c 64 -t 1, GET /, HTTP/1.1 over TLS"),
    "h1-plain": ("req/s", "wrk -t1 -c64, GET /, cleartext HTTP/1.1"),
    "h2-tls-64k": ("MB/s", "as h2-tls, a 64 KiB file from the static route"),
    "h1-plain-1m": ("MB/s", "as h1-plain, a 1 MiB file from the static route"),
    "handshakes": ("conn/CPU-s",
                   "new TLS connections, one request each, per second of server CPU"),
    "idle-memory": ("KiB/conn", "RSS growth per idle HTTP/2 TLS connection (lower is better)"),
    "idle-memory-h1": ("KiB/conn", "RSS growth per idle HTTP/1.1 TLS connection after one "
                       "request (lower is better)"),
}

# OpenSSL's suite names (as h2load prints them) -> the line of bench/aesgcm.c that bounds them.
SUITE_TO_AEAD = [("AES128-GCM", "AES-128-GCM"), ("AES256-GCM", "AES-256-GCM"),
                 ("CHACHA20-POLY1305", "CHACHA20-POLY1305")]


def read(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def emit(value, ok, notes, cipher=""):
    """One field a line: bash reads them with mapfile, and empty fields survive."""
    print(value, 1 if ok else 0, "; ".join(notes), cipher, sep="\n")


def as_throughput(per_second, body_bytes):
    return per_second * body_bytes / 1e6 if body_bytes else per_second


def parse_h2load(text, body_bytes):
    notes = []
    finished = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", text)
    counts = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                       r"(\d+) failed, (\d+) errored, (\d+) timeout", text)
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    cipher = re.search(r"^Cipher: (\S+)", text, re.M)
    if not finished or not counts:
        emit(0, False, ["no h2load summary (crashed or timed out)"])
        return
    _total, _started, _done, succeeded, failed, errored, timeout = map(int, counts.groups())
    if failed or errored or timeout:
        notes.append(f"{failed} failed, {errored} errored, {timeout} timed out")
    if succeeded == 0:
        notes.append("no request succeeded")
    if codes and any(int(n) for n in codes.groups()[1:]):
        notes.append("non-2xx: %s 3xx, %s 4xx, %s 5xx" % codes.groups()[1:])
    value = as_throughput(float(finished.group(1)), body_bytes)
    emit(f"{value:.2f}", not notes, notes, cipher.group(1) if cipher else "")


def parse_wrk(text, body_bytes):
    notes = []
    rate = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if not rate:
        emit(0, False, ["no wrk summary (crashed or timed out)"])
        return
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if non2xx and int(non2xx.group(1)):
        notes.append(f"{non2xx.group(1)} non-2xx/3xx")
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if sock and any(int(n) for n in sock.groups()):
        notes.append("socket errors: connect %s, read %s, write %s, timeout %s" % sock.groups())
    value = as_throughput(float(rate.group(1)), body_bytes)
    emit(f"{value:.2f}", not notes, notes)


# --- the table -----------------------------------------------------------------------------


def load_records(path):
    """{(workload, server): [(value, ok, note, cipher), ...]} in run order, and the same keys
    to [(value, ok, busy), ...] for the runs that measured the server's CPU time."""
    runs, busy = {}, {}
    for line in read(path).splitlines():
        if not line.strip():
            continue
        fields = (line.split("\t") + [""] * 8)[:8]
        workload, server, _run, value, ok, note, cipher, cpu = fields
        runs.setdefault((workload, server), []).append((float(value), ok == "1", note, cipher))
        if cpu:
            busy.setdefault((workload, server), []).append((float(value), ok == "1", float(cpu)))
    return runs, busy


def fmt(x):
    if x is None:
        return "–"
    if x >= 1000:
        return f"{x:,.0f}"
    if x >= 100:
        return f"{x:.0f}"
    return f"{x:.1f}"


def summary(runs):
    """(median, min, max, all_ok) over the runs that produced a figure; None if none did."""
    values = [v for v, ok, _, _ in runs if ok or v > 0]
    if not values:
        return None
    return statistics.median(values), min(values), max(values), all(ok for _, ok, _, _ in runs)


def cell(s):
    if s is None:
        return "failed !"
    med, lo, hi, ok = s
    spread = f" ({fmt(lo)}–{fmt(hi)})" if hi > lo else ""
    return f"{fmt(med)}{spread}{'' if ok else ' !'}"


def build_rows(records, workloads, per_cpu=False):
    rows, ratios = [], []
    for w in workloads:
        stats = {s: summary(records.get((w, s), [])) for s in SERVERS}
        row = [w, WORKLOADS[w][0].replace("/s", "/CPU-s") if per_cpu else WORKLOADS[w][0]]
        ratio_row = [w]
        for s in SERVERS:
            row.append(cell(stats[s]))
            if s in PEERS:
                r = None
                if stats["nook"] and stats[s] and stats[s][0] > 0:
                    r = stats["nook"][0] / stats[s][0]
                row.append(f"{r:.2f}" if r is not None else "–")
                ratio_row.append(r)
        rows.append(row)
        ratios.append(ratio_row)
    return rows, ratios


def per_cpu_runs(busy):
    """The runs as figures per second of server CPU (value / busy), for summary()."""
    return {k: [(v / b if b > 0 else 0.0, ok, "", "") for v, ok, b in runs]
            for k, runs in busy.items()}


def busy_line(busy, workloads):
    """How busy each server was in each workload: the median share of the run's wall time."""
    parts = []
    for w in workloads:
        shares = [f"{s} {100 * statistics.median(b for _, _, b in busy[(w, s)]):.0f}%"
                  for s in SERVERS if busy.get((w, s))]
        parts.append(f"{w}: " + ", ".join(shares))
    return "; ".join(parts)


def markdown_table(rows):
    head = ["workload", "figure", "nook", "nginx", "nook/nginx", "h2o", "nook/h2o"]
    out = ["| " + " | ".join(head) + " |", "|---|---|---:|---:|---:|---:|---:|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def text_table(rows):
    head = ["workload", "figure", "nook", "nginx", "nook/nginx", "h2o", "nook/h2o"]
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    line = lambda r: "  ".join(c.ljust(widths[i]) if i < 2 else c.rjust(widths[i])
                               for i, c in enumerate(r))
    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(r) for r in rows])


def aead_figures(path):
    """({cipher name: MB/s}, library line) from bench/aesgcm's output."""
    figures, library = {}, ""
    for line in read(path).splitlines():
        m = re.match(r"(\S+) ([\d.]+) MB/s", line)
        if m:
            figures[m.group(1)] = float(m.group(2))
        elif line.startswith("library "):
            library = line[len("library "):]
    return figures, library


def limit_section(records, aead, library):
    lines = [f"mbedTLS's own sealing speed ({library}, 16 KiB records, one thread, bench/aesgcm.c):",
             ""]
    lines += [f"- {name}: {mbps:,.0f} MB/s" for name, mbps in aead.items()]
    runs = records.get(("h2-tls-64k", "nook"), [])
    s = summary(runs)
    ciphers = sorted({c for _, _, _, c in runs if c})
    if s and ciphers:
        cipher = ciphers[0]
        limit = next((aead.get(a) for key, a in SUITE_TO_AEAD if key in cipher), None)
        lines.append("")
        if limit:
            lines.append(f"nook's h2-tls-64k payload throughput, {s[0]:,.0f} MB/s over {cipher}, is "
                         f"**{100 * s[0] / limit:.0f}%** of what mbedTLS seals with that cipher "
                         f"alone ({limit:,.0f} MB/s). At 100% the server would do nothing but "
                         f"encrypt; the gap is everything else it does per byte (HTTP/2 "
                         f"framing, reading the file, system calls).")
        else:
            lines.append(f"nook's h2-tls-64k ran over {cipher}, which bench/aesgcm.c does not "
                         f"measure.")
    return "\n".join(lines)


def floor_figures(path):
    """([requests per CPU-second, one per run], library) from bench/h2floor's output."""
    figures, library = [], ""
    for line in read(path).splitlines():
        m = re.match(r"server \d+ requests, .*: [\d.]+ ns each, ([\d.]+) per CPU-second", line)
        if m:
            figures.append(float(m.group(1)))
        elif line.startswith("library "):
            library = line[len("library "):]
    return figures, library


def floor_section(busy, figures, library):
    """nghttp2 alone against the h2c figures per second of server CPU."""
    if not figures:
        return ""
    floor = statistics.median(figures)
    spread = f" ({fmt(min(figures))}–{fmt(max(figures))})" if len(figures) > 1 else ""
    lines = [f"{library} alone, one thread, serving the h2c workload's requests through memory "
             f"(bench/h2floor.c: no sockets, no event loop, callbacks that only answer): "
             f"**{fmt(floor)}**{spread} requests per CPU-second, {1e9 / floor:.0f} ns each."]
    per_cpu = per_cpu_runs(busy)
    h2c = {s: summary(per_cpu.get(("h2c", s), [])) for s in SERVERS}
    if h2c["h2o"] and h2c["nook"]:
        nook_ns, h2o_ns = 1e9 / h2c["nook"][0], 1e9 / h2c["h2o"][0]
        lines += ["", f"In h2c h2o's whole server spent {h2o_ns:.0f} ns of CPU per request (user "
                  f"and system time) and nook {nook_ns:.0f} ns. To match h2o, a server on nghttp2 "
                  f"has **{h2o_ns - 1e9 / floor:.0f} ns** per request left for everything besides "
                  f"nghttp2: the system calls that move the bytes, the event loop and its own "
                  f"code. nook spends {nook_ns - 1e9 / floor:.0f} ns on them."]
    return "\n".join(lines)


def details_section(records, workloads):
    lines = ["| workload | server | runs | negotiated | notes |", "|---|---|---|---|---|"]
    for w in workloads:
        for s in SERVERS:
            runs = records.get((w, s), [])
            if not runs:
                continue
            values = ", ".join(fmt(v) + ("" if ok else " !") for v, ok, _, _ in runs)
            ciphers = ", ".join(sorted({c for _, _, _, c in runs if c}))
            notes = "; ".join(sorted({n for _, _, n, _ in runs if n}))
            lines.append(f"| {w} | {s} | {values} | {ciphers} | {notes} |")
    return "\n".join(lines)


def machine_section(path):
    lines = []
    for line in read(path).splitlines():
        if "=" in line:
            key, value = line.split("=", 1)
            lines.append(f"| {key} | {value} |")
    return "| | |\n|---|---|\n" + "\n".join(lines)


LEGEND = ("Each cell: the median of the runs, then (min–max) when they differ; **!** marks a "
          "figure where at least one run had failed, errored or timed-out requests, non-2xx "
          "answers, socket errors or a check that did not hold (see \"Every run\"). nook/peer above 1 means nook did more — "
          "except for idle-memory rows, where below 1 means nook used less.")


def write_plot_data(path, ratios):
    with open(path, "w", encoding="utf-8") as f:
        for w, *rs in ratios:
            label = w + ("\\n(lower is better)" if w.startswith("idle-memory") else "")
            f.write(f'"{label}" ' + " ".join("?" if r is None else f"{r:.4f}" for r in rs) + "\n")


def update_docs(path, table_md, png_rel, stamp, cpu_block="", floor=""):
    text = read(path)
    begin, end = "<!-- results:begin -->", "<!-- results:end -->"
    if begin not in text or end not in text:
        print(f"report: {path} has no results markers; not updated", file=sys.stderr)
        return
    block = (f"{begin}\nRun of {stamp} (the whole file: "
             f"[{png_rel.rsplit('/', 1)[-1].replace('.png', '.md')}]"
             f"({png_rel.replace('.png', '.md')})).\n\n{table_md}\n\n{LEGEND}\n\n"
             f"![nook/peer per workload]({png_rel})\n"
             + (f"\n{cpu_block}\n" if cpu_block else "")
             + (f"\nThe floor: {floor}\n" if floor else "") + end)
    head, rest = text.split(begin, 1)
    tail = rest.split(end, 1)[1]
    with open(path, "w", encoding="utf-8") as f:
        f.write(head + block + tail)


CPU_LEGEND = ("The same runs, each figure divided by the share of the run's wall time the "
              "server spent on a CPU (all its threads and processes, user and system time, from "
              "/proc/PID/task/*/schedstat): what one core of the server does. A one-thread "
              "client cannot always keep a fast server busy, and then the table above measures "
              "the client as much as the server; this one does not. It leaves out handshakes "
              "(already per CPU-second) and idle memory.")


def cpu_section(busy, order):
    """The per-CPU table (Markdown and text), the busy shares and the ratios for the chart;
    empty without CPU records."""
    workloads = [w for w in order if any((w, s) in busy for s in SERVERS)]
    if not workloads:
        return "", "", "", []
    rows, ratios = build_rows(per_cpu_runs(busy), workloads, per_cpu=True)
    return markdown_table(rows), text_table(rows), busy_line(busy, workloads), ratios


def cpu_name(path):
    """The per-CPU chart's file (data or PNG) beside the throughput one: NAME-cpu.EXT."""
    stem, dot, ext = path.rpartition(".")
    return f"{stem}-cpu{dot}{ext}"


def table(args):
    records, busy = load_records(args.records)
    order = list(WORKLOADS)
    workloads = [w for w in order if any((w, s) in records for s in SERVERS)]
    rows, ratios = build_rows(records, workloads)
    print(text_table(rows))
    cpu_md, cpu_text, busy_text, cpu_ratios = cpu_section(busy, order)
    if cpu_text:
        print("\nPer second of server CPU (how busy each server was: " + busy_text + "):\n")
        print(cpu_text)
    cpu_body = cpu_block = ""
    if cpu_md:
        cpu_body = (f"{cpu_md}\n\n{CPU_LEGEND} Median server CPU, as a share of each run: "
                    f"{busy_text}.")
        cpu_block = f"Per second of server CPU:\n\n{cpu_body}"
        if args.docs_png:
            cpu_block += f"\n\n![nook/peer per second of server CPU]({cpu_name(args.docs_png)})"
        cpu_body += f"\n\n![nook/peer per second of server CPU]({cpu_name(args.png_name)})"
    aead, library = aead_figures(args.aead)
    limit = limit_section(records, aead, library)
    print()
    print(limit.replace("**", ""))
    floor = floor_section(busy, *floor_figures(args.h2floor)) if args.h2floor else ""
    if floor:
        print()
        print(floor.replace("**", ""))

    figures = "\n".join(f"- **{w}** ({WORKLOADS[w][0]}): {WORKLOADS[w][1]}" for w in workloads)
    md = [f"# Benchmark run {args.stamp}", "", args.title, "", markdown_table(rows), "", LEGEND,
          "", f"![nook/peer per workload]({args.png_name})", ""]
    if cpu_block:
        md += ["## Per second of server CPU", "", cpu_body, ""]
    md += ["## Workloads", "", figures, "",
          "## The limit: AEAD speed", "", limit, ""]
    if floor:
        md += ["## The floor: nghttp2 alone", "", floor, ""]
    md += ["## Every run", "", details_section(records, workloads), "", "## Machine", "",
           machine_section(args.machine), ""]
    with open(args.out, "w", encoding="utf-8") as f:
        f.write("\n".join(md))
    write_plot_data(args.plot, ratios)
    if cpu_ratios:
        write_plot_data(cpu_name(args.plot), cpu_ratios)
    if args.docs:
        update_docs(args.docs, markdown_table(rows), args.docs_png, args.stamp, cpu_block, floor)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for tool in ("h2load", "wrk"):
        p = sub.add_parser(tool)
        p.add_argument("log")
        p.add_argument("body_bytes", nargs="?", type=int, default=0)
    t = sub.add_parser("table")
    for opt in ("records", "machine", "aead", "out", "plot", "stamp", "title", "png_name"):
        t.add_argument("--" + opt.replace("_", "-"), required=True)
    t.add_argument("--docs")
    t.add_argument("--docs-png")
    t.add_argument("--h2floor")
    args = ap.parse_args()
    if args.cmd == "h2load":
        parse_h2load(read(args.log), args.body_bytes)
    elif args.cmd == "wrk":
        parse_wrk(read(args.log), args.body_bytes)
    else:
        table(args)


if __name__ == "__main__":
    main()
