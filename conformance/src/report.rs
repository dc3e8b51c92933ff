//! Results of a run: one line per case, the summary, JSON and JUnit XML.

use std::fmt::Write as _;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail,
    Skip,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Pass => "PASS",
            Outcome::Fail => "FAIL",
            Outcome::Skip => "SKIP",
        }
    }
}

#[derive(Debug, Clone)]
pub struct CaseReport {
    pub name: String,
    pub citation: String,
    pub outcome: Outcome,
    pub message: String,
    pub duration: Duration,
}

impl CaseReport {
    /// `PASS name (citation)` or `FAIL name (citation) [reason]`.
    pub fn line(&self) -> String {
        let mut s = format!("{} {} ({})", self.outcome.as_str(), self.name, self.citation);
        if !self.message.is_empty() {
            let _ = write!(s, " [{}]", self.message);
        }
        s
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
}

pub fn summary(reports: &[CaseReport]) -> Summary {
    let n = |o| reports.iter().filter(|r| r.outcome == o).count();
    Summary { passed: n(Outcome::Pass), failed: n(Outcome::Fail), skipped: n(Outcome::Skip) }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} passed, {} failed, {} skipped", self.passed, self.failed, self.skipped)
    }
}

fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// `[{"name", "citation", "result", "message", "duration_ms"}, …]`.
pub fn json(reports: &[CaseReport]) -> String {
    let mut s = String::from("[\n");
    for (i, r) in reports.iter().enumerate() {
        let _ = write!(
            s,
            "  {{\"name\": {}, \"citation\": {}, \"result\": {}, \"message\": {}, \"duration_ms\": {:.3}}}",
            json_str(&r.name),
            json_str(&r.citation),
            json_str(r.outcome.as_str()),
            json_str(&r.message),
            r.duration.as_secs_f64() * 1000.0
        );
        s.push_str(if i + 1 < reports.len() { ",\n" } else { "\n" });
    }
    s.push(']');
    s
}

fn xml(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\t' | '\r') => o.push(' '),
            c => o.push(c),
        }
    }
    o
}

/// JUnit XML: one `testsuite` named `suite`, a `testcase` per case (class
/// name = the case's group, e.g. `conformance.rc`), `failure`/`skipped`
/// elements with the message, the citation in `system-out`.
pub fn junit(suite: &str, reports: &[CaseReport]) -> String {
    let sum = summary(reports);
    let total: f64 = reports.iter().map(|r| r.duration.as_secs_f64()).sum();
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        s,
        "<testsuites name=\"{}\" tests=\"{}\" failures=\"{}\" skipped=\"{}\" errors=\"0\" time=\"{:.3}\">",
        xml(suite),
        reports.len(),
        sum.failed,
        sum.skipped,
        total
    );
    let _ = writeln!(
        s,
        "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" skipped=\"{}\" errors=\"0\" time=\"{:.3}\">",
        xml(suite),
        reports.len(),
        sum.failed,
        sum.skipped,
        total
    );
    for r in reports {
        let group = r.name.split('.').next().unwrap_or("case");
        let _ = write!(
            s,
            "    <testcase classname=\"conformance.{}\" name=\"{}\" time=\"{:.3}\">",
            xml(group),
            xml(&r.name),
            r.duration.as_secs_f64()
        );
        match r.outcome {
            Outcome::Pass => {}
            Outcome::Fail => {
                let _ = write!(s, "<failure message=\"{}\">{}</failure>", xml(&r.message), xml(&r.message));
            }
            Outcome::Skip => {
                let _ = write!(s, "<skipped message=\"{}\"/>", xml(&r.message));
            }
        }
        let _ = writeln!(s, "<system-out>{}</system-out></testcase>", xml(&r.citation));
    }
    s.push_str("  </testsuite>\n</testsuites>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(name: &str, o: Outcome, m: &str) -> CaseReport {
        CaseReport {
            name: name.into(),
            citation: "IBTA Vol 1 ch. 9".into(),
            outcome: o,
            message: m.into(),
            duration: Duration::from_millis(3),
        }
    }

    #[test]
    fn formats() {
        let rs = vec![r("a.b", Outcome::Pass, ""), r("c.d", Outcome::Fail, "x \"<y>\"\n"), r("e", Outcome::Skip, "z")];
        assert_eq!(rs[0].line(), "PASS a.b (IBTA Vol 1 ch. 9)");
        assert_eq!(rs[1].line(), "FAIL c.d (IBTA Vol 1 ch. 9) [x \"<y>\"\n]");
        assert_eq!(summary(&rs).to_string(), "1 passed, 1 failed, 1 skipped");
        let j = json(&rs);
        assert!(j.contains(r#""message": "x \"<y>\"\n""#), "{j}");
        assert!(j.contains(r#""result": "SKIP""#));
        let x = junit("s", &rs);
        assert!(x.contains("failures=\"1\" skipped=\"1\""));
        assert!(x.contains("<failure message=\"x &quot;&lt;y&gt;&quot;\n\">"));
        assert!(x.contains("classname=\"conformance.c\" name=\"c.d\""));
    }
}
