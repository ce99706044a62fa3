//! Human formatting shared by the commands.

use std::time::Duration;

/// A duration in the unit that reads best: `850ns`, `10.2µs`, `1.250ms`, `3.000s`.
pub(crate) fn duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns < 1_000 {
        format!("{ns}ns")
    } else if ns < 1_000_000 {
        format!("{:.1}µs", ns as f64 / 1e3)
    } else if ns < 1_000_000_000 {
        format!("{:.3}ms", ns as f64 / 1e6)
    } else {
        format!("{:.3}s", ns as f64 / 1e9)
    }
}

/// Bytes as text: UTF-8 as is, anything else with `\xNN` escapes.
pub(crate) fn bytes(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) => s.to_string(),
        Err(_) => b.escape_ascii().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_print_as_text_or_escaped() {
        assert_eq!(bytes(b"hello"), "hello");
        assert_eq!(bytes(&[0x66, 0xff, 0x00]), "f\\xff\\x00");
    }

    #[test]
    fn picks_a_readable_unit() {
        assert_eq!(duration(Duration::from_nanos(850)), "850ns");
        assert_eq!(duration(Duration::from_nanos(10_200)), "10.2µs");
        assert_eq!(duration(Duration::from_micros(1250)), "1.250ms");
        assert_eq!(duration(Duration::from_secs(3)), "3.000s");
    }
}
