#!/usr/bin/env python3
"""Joins tbcount.c's block counts with QEMU's `-d in_asm,op_opt` log.

    profile.py COUNTS OPLOG FRAMES [TOP]

Prints per frame (FRAMES = frames the counted run carried): blocks run,
guest instructions, helper calls by name, hash lookups of the next block
(lookup_tb_ptr) by what ended the block, and the functions with the most
lookups. The op log may come from a shorter run of the same binary: it is
only needed to know what each block calls.
"""
import collections
import re
import sys

counts, oplog, frames = sys.argv[1], sys.argv[2], float(sys.argv[3])
top = int(sys.argv[4]) if len(sys.argv) > 4 else 25

# Block start address -> (last guest instruction, helper calls).
blocks = {}
pc, last, calls, state = None, None, collections.Counter(), None
def close():
    if pc is not None:
        blocks[pc] = (last, calls)
for line in open(oplog, errors="replace"):
    if line.startswith("IN:"):
        close()
        pc, last, calls, state = None, None, collections.Counter(), "in"
        continue
    if line.startswith("OP after"):
        state = "op"
        continue
    if state == "in":
        m = re.match(r"0x([0-9a-f]+):\s+(?:[0-9a-f]{2} )+\s*(.*)", line)
        if m:
            if pc is None:
                pc = int(m.group(1), 16)
            last = m.group(2).strip()
    elif state == "op":
        m = re.search(r"call ([a-z_0-9]+)", line)
        if m:
            calls[m.group(1)] += 1
close()

runs = insns = 0
helpers, causes, where = collections.Counter(), collections.Counter(), collections.Counter()
for line in open(counts):
    addr, n, c, sym = line.split(None, 3)
    addr, n, c, sym = int(addr, 16), int(n), int(c), sym.strip()
    runs += c
    insns += n * c
    if addr not in blocks:
        continue
    last, calls = blocks[addr]
    for h, k in calls.items():
        helpers[h] += k * c
    lookups = calls.get("lookup_tb_ptr", 0)
    if lookups:
        op = (last or "?").split()[0]
        if op.startswith("j") and op != "jmpq":
            op = "conditional jump to another page"
        elif op in ("jmpq", "callq"):
            op += " (indirect)" if "*" in (last or "") else " (to another page)"
        elif op != "retq":
            op = "block ended at a page boundary"
        causes[op] += lookups * c
        where[sym[:90]] += lookups * c

print(f"per frame: {runs / frames:.0f} blocks, {insns / frames:.0f} guest instructions")
print("helper calls per frame:", ", ".join(f"{h} {k / frames:.1f}" for h, k in helpers.most_common(10)))
print("lookups per frame by cause:", ", ".join(f"{h} {k / frames:.1f}" for h, k in causes.most_common()))
for sym, k in where.most_common(top):
    print(f"{k / frames:7.1f}  {sym}")
