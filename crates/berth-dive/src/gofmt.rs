//! The few Go formatting and parsing functions dive's output goes through:
//! go-humanize's `Bytes` and `ParseBytes`, `%v` of a float64,
//! `strconv.ParseFloat`'s error text, Go's `path.Clean`.

/// go-humanize `Bytes`: SI units, one decimal below 10.
pub fn human_bytes(s: u64) -> String {
    const SIZES: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    if s < 10 {
        return format!("{s} B");
    }
    let base = 1000f64;
    let e = ((s as f64).ln() / base.ln()).floor();
    let suffix = SIZES[e as usize];
    let val = ((s as f64) / base.powf(e) * 10.0 + 0.5).floor() / 10.0;
    if val < 10.0 {
        format!("{val:.1} {suffix}")
    } else {
        format!("{val:.0} {suffix}")
    }
}

/// go-humanize `ParseBytes` ("20MB", "1.5 GiB", "42"); the error text is
/// its message.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let mut last = 0;
    let mut has_comma = false;
    for c in s.chars() {
        if !(c.is_ascii_digit() || c == '.' || c == ',') {
            break;
        }
        if c == ',' {
            has_comma = true;
        }
        last += c.len_utf8();
    }
    let mut num = s[..last].to_string();
    if has_comma {
        num = num.replace(',', "");
    }
    let f = parse_float(&num)?;
    let extra = s[last..].trim().to_lowercase();
    let m: u64 = match extra.as_str() {
        "b" | "" => 1,
        "kib" | "ki" => 1 << 10,
        "kb" | "k" => 1000,
        "mib" | "mi" => 1 << 20,
        "mb" | "m" => 1000 * 1000,
        "gib" | "gi" => 1 << 30,
        "gb" | "g" => 1000 * 1000 * 1000,
        "tib" | "ti" => 1 << 40,
        "tb" | "t" => 1_000_000_000_000,
        "pib" | "pi" => 1 << 50,
        "pb" | "p" => 1_000_000_000_000_000,
        "eib" | "ei" => 1 << 60,
        "eb" | "e" => 1_000_000_000_000_000_000,
        _ => return Err(format!("unhandled size name: {extra}")),
    };
    let f = f * m as f64;
    if f >= u64::MAX as f64 {
        return Err(format!("too large: {s}"));
    }
    Ok(f as u64)
}

/// `strconv.ParseFloat(s, 64)`, with Go's error text.
pub fn parse_float(s: &str) -> Result<f64, String> {
    let ok = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '-'));
    match s.parse::<f64>() {
        Ok(f) if ok => Ok(f),
        _ => Err(format!("strconv.ParseFloat: parsing {s:?}: invalid syntax")),
    }
}

/// Go's `%v` of a float64 (`strconv.FormatFloat(f, 'g', -1, 64)`): the
/// shortest digits, exponent form below 1e-4 and from 1e6 on.
pub fn go_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    if f == 0.0 {
        return if f.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    let e = format!("{f:e}");
    let (mant, exp) = e.split_once('e').unwrap_or((&e, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..6).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mant}e{sign}{:02}", exp.abs())
    } else {
        format!("{f}")
    }
}

/// Go's `path.Clean`.
pub fn clean_path(p: &str) -> String {
    if p.is_empty() {
        return ".".into();
    }
    let rooted = p.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if out.last().is_some_and(|l| *l != "..") {
                    out.pop();
                } else if !rooted {
                    out.push("..");
                }
            }
            x => out.push(x),
        }
    }
    let joined = out.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn humanize() {
        assert_eq!(human_bytes(3500), "3.5 kB");
        assert_eq!(human_bytes(500), "500 B");
        assert_eq!(human_bytes(3000), "3.0 kB");
        assert_eq!(human_bytes(9), "9 B");
        assert_eq!(human_bytes(52_428_800), "52 MB");
        assert_eq!(parse_bytes("20MB"), Ok(20_000_000));
        assert_eq!(parse_bytes("3KB"), Ok(3000));
        assert_eq!(parse_bytes("1 MiB"), Ok(1 << 20));
        assert_eq!(parse_bytes("1,000"), Ok(1000));
        assert!(parse_bytes("disabledx").is_err());
    }

    #[test]
    fn floats() {
        assert_eq!(go_float(0.4045238095238095), "0.4045238095238095");
        assert_eq!(go_float(0.9), "0.9");
        assert_eq!(go_float(1.0), "1");
        assert_eq!(go_float(0.00001), "1e-05");
        assert_eq!(go_float(123456.0), "123456");
        assert_eq!(go_float(1e6), "1e+06");
    }

    #[test]
    fn clean() {
        assert_eq!(clean_path("./etc/a"), "etc/a");
        assert_eq!(clean_path("etc/"), "etc");
        assert_eq!(clean_path("/a/../b"), "/b");
        assert_eq!(clean_path("../x"), "../x");
        assert_eq!(clean_path("./"), ".");
    }
}
