//! Resource quantities in the form the apiserver stores them (`0.5` is kept
//! as `500m`, `1024Mi` as `1Gi`), so that a desired object compares equal
//! to the live one and an unchanged spec is never written again.

/// Decimal suffixes by power of ten, multiples of three.
const DECIMAL: [(i32, &str); 10] = [
    (-9, "n"),
    (-6, "u"),
    (-3, "m"),
    (0, ""),
    (3, "k"),
    (6, "M"),
    (9, "G"),
    (12, "T"),
    (15, "P"),
    (18, "E"),
];

/// Binary suffixes by power of 1024.
const BINARY: [(u32, &str); 6] = [
    (1, "Ki"),
    (2, "Mi"),
    (3, "Gi"),
    (4, "Ti"),
    (5, "Pi"),
    (6, "Ei"),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    DecimalSi,
    BinarySi,
    DecimalExponent,
}

/// The quantity as the apiserver writes it back, or `None` when it does
/// not parse (the apiserver refuses it; it is sent as it is).
pub fn canonical(quantity: &str) -> Option<String> {
    let (nanos, format) = parse(quantity)?;
    Some(format_nanos(nanos, format))
}

/// The value of a quantity in billionths (`1.5Ki` is 1536 * 10^9), rounded
/// up past nine decimals as the apiserver rounds.
pub fn billionths(quantity: &str) -> Option<i128> {
    parse(quantity).map(|(nanos, _)| nanos)
}

/// The value in billionths, rounded up as the apiserver rounds (it keeps
/// nine decimals), and how it was written.
fn parse(quantity: &str) -> Option<(i128, Format)> {
    let text = quantity.trim();
    let (negative, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let number_end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(number_end);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    // digits * 10^-scale
    let digits: String = format!("{whole}{fraction}");
    if digits.len() > 30 {
        return None;
    }
    let mantissa: i128 = if digits.is_empty() {
        0
    } else {
        digits.parse().ok()?
    };
    let scale = fraction.len() as i32;
    let (value_nanos, format) = if let Some(&(power, _)) = BINARY.iter().find(|(_, s)| *s == suffix)
    {
        let factor = 1024i128.checked_pow(power)?;
        (
            scaled_up(mantissa.checked_mul(factor)?, 9 - scale)?,
            Format::BinarySi,
        )
    } else if let Some(&(power, _)) = DECIMAL.iter().find(|(_, s)| *s == suffix) {
        (scaled_up(mantissa, 9 + power - scale)?, Format::DecimalSi)
    } else {
        let exponent: i32 = suffix
            .strip_prefix(['e', 'E'])?
            .parse()
            .ok()
            .filter(|e: &i32| e.abs() <= 18)?;
        (
            scaled_up(mantissa, 9 + exponent - scale)?,
            Format::DecimalExponent,
        )
    };
    Some((if negative { -value_nanos } else { value_nanos }, format))
}

/// `value * 10^power`, rounding a fraction up.
fn scaled_up(value: i128, power: i32) -> Option<i128> {
    if power >= 0 {
        value.checked_mul(10i128.checked_pow(power as u32)?)
    } else {
        let divisor = 10i128.checked_pow(power.unsigned_abs())?;
        Some(value / divisor + i128::from(value % divisor != 0))
    }
}

fn format_nanos(nanos: i128, format: Format) -> String {
    const NANO: i128 = 1_000_000_000;
    // A binary quantity below 1Ki, or with a fraction, is written in decimal.
    let binary = format == Format::BinarySi && nanos.abs() >= 1024 * NANO && nanos % NANO == 0;
    if binary {
        let mut units = nanos / NANO;
        let mut suffix = "";
        for (_, s) in BINARY {
            if units % 1024 != 0 {
                break;
            }
            units /= 1024;
            suffix = s;
        }
        return format!("{units}{suffix}");
    }
    if nanos == 0 {
        return "0".into();
    }
    // The largest power of ten, a multiple of three, leaving a whole number.
    let mut mantissa = nanos;
    let mut exponent = -9;
    while mantissa % 1000 == 0 && exponent < 18 {
        mantissa /= 1000;
        exponent += 3;
    }
    match format {
        Format::DecimalExponent if exponent == 0 => mantissa.to_string(),
        Format::DecimalExponent => format!("{mantissa}e{exponent}"),
        _ => {
            let suffix = DECIMAL
                .iter()
                .find(|(p, _)| *p == exponent)
                .map_or("", |(_, s)| *s);
            format!("{mantissa}{suffix}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_are_written_as_the_apiserver_keeps_them() {
        for (written, kept) in [
            ("0.5", "500m"),
            ("1000m", "1"),
            ("100m", "100m"),
            ("1", "1"),
            ("2000", "2k"),
            ("1500k", "1500k"),
            ("1.5M", "1500k"),
            ("1.5", "1500m"),
            ("0.1", "100m"),
            ("0.0001", "100u"),
            ("64", "64"),
            ("1024Mi", "1Gi"),
            ("1.5Gi", "1536Mi"),
            ("0.5Ki", "512"),
            ("256Mi", "256Mi"),
            ("1536Ki", "1536Ki"),
            ("1e3", "1e3"),
            ("1000e0", "1e3"),
            ("0", "0"),
            ("0Mi", "0"),
            ("-1.5", "-1500m"),
        ] {
            assert_eq!(canonical(written).as_deref(), Some(kept), "{written}");
        }
    }

    #[test]
    fn what_does_not_parse_is_left_to_the_apiserver() {
        for bad in ["", "m", "1.5x", "abc", "1e99", "1..5"] {
            assert_eq!(canonical(bad), None, "{bad}");
        }
    }
}
