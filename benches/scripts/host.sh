# Sourced by the other scripts: one line saying which machine a log is
# from. A KVM guest's model name alone ("AMD EPYC") hides the
# microarchitecture, which moves every figure (docs/benchmarks.md, "Machine
# and conditions"); family, model and the CRC-relevant flags tell hosts apart,
# as the JSON facts of softrdma-perf do (benches/src/host.rs).
host_line() {
    awk -F': *' '
        /^$/ { exit }
        /^vendor_id/ { v = $2 } /^cpu family/ { f = $2 } /^model[ \t]*:/ { m = $2 }
        /^model name/ { n = $2 }
        /^flags/ { k = split($2, a, " "); for (i = 1; i <= k; i++) have[a[i]] = 1 }
        END {
            crc = ""
            split("pclmulqdq avx2 vpclmulqdq avx512f", want, " ")
            for (i = 1; i <= 4; i++) if (want[i] in have) crc = crc " " want[i]
            printf "%s (%s family %s model %s;%s)", n, v, f, m, crc
        }' /proc/cpuinfo
    printf ', %s CPUs\n' "$(nproc)"
}
