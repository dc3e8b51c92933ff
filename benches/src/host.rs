//! Which CPU a result was measured on. A KVM guest's model name is often
//! just "AMD EPYC" or "Intel(R) Xeon(R) Processor", which hides what moves
//! this project's numbers from host to host: the microarchitecture (family
//! and model: Zen 1, 3 and 4 have all shown up as "AMD EPYC") and whether
//! the ICRC can take the wide carry-less-multiply path (VPCLMULQDQ,
//! AVX-512), which sets the in-memory fabric's bound. docs/benchmarks.md
//! compares hosts by these facts.

/// The facts of the first CPU in a `/proc/cpuinfo` text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuFacts {
    pub model_name: String,
    pub vendor: String,
    pub family: Option<u32>,
    pub model: Option<u32>,
    /// Those of [`CRC_FLAGS`] the CPU has, in that order.
    pub crc_flags: Vec<&'static str>,
}

/// The CPU flags that pick crc32fast's path, widest last.
pub const CRC_FLAGS: [&str; 4] = ["pclmulqdq", "avx2", "vpclmulqdq", "avx512f"];

impl CpuFacts {
    /// Parses the first processor's block; fields it lacks stay empty.
    pub fn parse(cpuinfo: &str) -> CpuFacts {
        let mut f = CpuFacts::default();
        for line in cpuinfo.lines() {
            if line.trim().is_empty() {
                break; // the first processor's block ends here
            }
            let Some((k, v)) = line.split_once(':') else { continue };
            let v = v.trim();
            match k.trim() {
                "model name" => f.model_name = v.to_string(),
                "vendor_id" => f.vendor = v.to_string(),
                "cpu family" => f.family = v.parse().ok(),
                "model" => f.model = v.parse().ok(),
                "flags" => {
                    let have: Vec<&str> = v.split_whitespace().collect();
                    f.crc_flags = CRC_FLAGS.into_iter().filter(|c| have.contains(c)).collect();
                }
                _ => {}
            }
        }
        f
    }

    /// This machine's, or empty facts where `/proc/cpuinfo` cannot be read.
    pub fn this_machine() -> CpuFacts {
        std::fs::read_to_string("/proc/cpuinfo").map(|s| CpuFacts::parse(&s)).unwrap_or_default()
    }

    /// "AuthenticAMD family 25 model 17", or what of it is known.
    pub fn id(&self) -> String {
        let mut parts = vec![self.vendor.clone()];
        if let Some(n) = self.family {
            parts.push(format!("family {n}"));
        }
        if let Some(n) = self.model {
            parts.push(format!("model {n}"));
        }
        parts.retain(|p| !p.is_empty());
        parts.join(" ")
    }

    /// The one line `softrdma-perf host` prints and the bench scripts put
    /// in their headers: "AMD EPYC (AuthenticAMD family 25 model 17;
    /// pclmulqdq avx2 vpclmulqdq avx512f), 2 CPUs".
    pub fn line(&self, cpus: usize) -> String {
        format!("{} ({}; {}), {cpus} CPUs", self.model_name, self.id(), self.crc_flags.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Trimmed from the two kinds of host this project has run on.
    const AMD: &str = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n\
model name\t: AMD EPYC\nflags\t\t: fpu sse2 pclmulqdq avx avx2 avx512f vaes vpclmulqdq\n\n\
processor\t: 1\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 1\n";
    const INTEL_NO_VPCLMUL: &str = "processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\n\
model\t\t: 85\nmodel name\t: Intel(R) Xeon(R) Processor\nflags\t\t: fpu pclmulqdq avx2 avx512f\n";

    #[test]
    fn reads_the_first_processor_only() {
        let f = CpuFacts::parse(AMD);
        assert_eq!(f.model_name, "AMD EPYC");
        assert_eq!(f.id(), "AuthenticAMD family 25 model 17");
        assert_eq!(f.crc_flags, ["pclmulqdq", "avx2", "vpclmulqdq", "avx512f"]);
        assert_eq!(f.line(2), "AMD EPYC (AuthenticAMD family 25 model 17; pclmulqdq avx2 vpclmulqdq avx512f), 2 CPUs");
    }

    #[test]
    fn lists_only_the_flags_present() {
        let f = CpuFacts::parse(INTEL_NO_VPCLMUL);
        assert_eq!(f.id(), "GenuineIntel family 6 model 85");
        assert_eq!(f.crc_flags, ["pclmulqdq", "avx2", "avx512f"]);
    }

    #[test]
    fn unreadable_text_gives_empty_facts() {
        let f = CpuFacts::parse("garbage without colons\nmodel : not-a-number\n");
        assert_eq!(f, CpuFacts::default());
        assert_eq!(f.id(), "");
    }
}
